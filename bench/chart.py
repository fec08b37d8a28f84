"""A PNG chart of ``trackbridge bench`` results, drawn with matplotlib when it is installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

_GOAL_STYLE: dict[str, Any] = {"color": "tab:red", "linestyle": "--", "linewidth": 1}


def _ok(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    section = results.get(name)
    return section if isinstance(section, dict) and "error" not in section else None


def _latency(ax: Any, s: dict[str, Any]) -> None:
    labels = {
        "writer": "Writer",
        "mlflow_async_buffered": "mlflow async\n1 s buffer",
        "mlflow_async": "mlflow async",
        "mlflow_sync": "mlflow sync",
    }
    keys = [k for k in labels if k in s]
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [s[k]["p50_us"] for k in keys], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [s[k]["p99_us"] for k in keys], 0.4, label="p99")
    ax.set_xticks(list(xs), [labels[k] for k in keys], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("µs per log_metric call")
    ax.axhline(20, **_GOAL_STYLE, label="Writer p99 target")
    ax.legend(fontsize=8)
    ax.set_title("(a) cost in the loop")


def _bars(
    ax: Any,
    title: str,
    labels: list[str],
    values: list[float],
    ylabel: str,
    *,
    colors: tuple[str, ...] = ("tab:blue", "tab:gray"),
) -> None:
    ax.bar(labels, values, color=list(colors[: len(values)]))
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def _draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    (a, b, c), (d, e, notes) = axes
    if (s := _ok(results, "latency")) is not None:
        _latency(a, s)
    if (s := _ok(results, "ingest")) is not None:
        _bars(
            b,
            f"(b) ingest, {s['clients']} clients",
            ["receiver"],
            [s["events_per_s"]],
            "durably acked events/s",
        )
        b.axhline(300_000, **_GOAL_STYLE)
    if (s := _ok(results, "end_to_end")) is not None:
        _bars(
            c,
            f"(c) into MLflow: {s['ratio']:.0%} of its ceiling",
            ["bridge", "log_batch x1000"],
            [s["bridge_events_per_s"], s["mlflow_log_batch_events_per_s"]],
            "events/s",
        )
    if (s := _ok(results, "freshness")) is not None:
        _bars(
            d,
            f"(d) freshness, flush {s['flush_interval_s']:g} s",
            ["MLflow p50", "MLflow p99", "live p50", "live p99"],
            [s[k] / 1000 for k in ("p50_ms", "p99_ms", "live_p50_ms", "live_p99_ms")],
            "s from log call",
            colors=("tab:blue", "tab:orange", "tab:blue", "tab:orange"),
        )
        d.set_yscale("log")
        d.axhline(s["flush_interval_s"] + 1, **_GOAL_STYLE)
    if (s := _ok(results, "scale")) is not None:
        _bars(
            e,
            f"(e) {s['connected']} connections",
            ["idle", "all connected"],
            [s["receiver_rss_idle_mb"], s["receiver_rss_mb"]],
            "receiver RSS, MB",
        )
        e.axhline(300, **_GOAL_STYLE)
    notes.axis("off")
    m = results["machine"]
    notes.text(
        0,
        0.5,
        f"{m['cpus']} CPUs, Python {m['python']}\nmlflow {m['mlflow']}, "
        f"grpcio {m['grpcio']}\ndashed red: target",
        fontsize=10,
    )
    fig.suptitle("trackbridge bench")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_png(results: dict[str, Any], path: Path) -> bool:
    """Draws the chart; False (with a message) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed: no chart drawn at {path} (pip install matplotlib)")
        return False
    _draw(results, path)
    return True
