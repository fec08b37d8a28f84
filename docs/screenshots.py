"""Makes the README's pictures of the live page and of MLflow's own UI on the same data.

    .venv/bin/python docs/screenshots.py [--out docs]

Runs ``trackbridge demo`` (5 clients) and photographs its live page in headless Chromium
while the clients train, then starts ``mlflow ui`` on the store the demo wrote and
photographs the experiment's charts there; writes ``live-page.png``, ``mlflow-ui.png`` and
both side by side, ``live-vs-mlflow.png``. Needs the dev extra (playwright) and Debian's
chromium; every process it starts is ended on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRACKBRIDGE = Path(sys.executable).with_name("trackbridge")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEW = {"width": 1400, "height": 1050}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"screenshots: timed out waiting for {what}")


def _live(page: Any, demo: subprocess.Popen[str], out: Path) -> None:
    assert demo.stdout is not None
    url = ""
    for line in demo.stdout:
        print(line, end="")
        found = re.search(r"watch the clients live: (\S+)", line)
        if found:
            url = found.group(1)
            break
    if not url:
        raise SystemExit("screenshots: the demo printed no live page")
    api = url.replace("/jobs/", "/api/jobs/")

    def all_clients() -> bool:
        with urllib.request.urlopen(api, timeout=5) as response:  # noqa: S310 - loopback
            return len(json.load(response)["clients"]) == 5

    _wait(all_clients, 120, "every client")  # so that colours go by name, site-1 first
    page.goto(f"{url}#metrics=eval/accuracy,train/loss&layout=overlay&smoothing=0.6")

    def enough() -> bool:
        return bool(
            page.evaluate(
                """() => { const c = window.trackbridgeLive && window.trackbridgeLive.charts();
                    return c && c.length === 2 && c[1].u.data[0].length > 150; }"""
            )
        )

    _wait(enough, 180, "the charts to fill")
    box = page.locator(".chart-panel").nth(1).locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.4)
    time.sleep(0.5)
    page.screenshot(path=str(out / "live-page.png"))


def _mlflow(page: Any, store: Path, out: Path) -> None:
    port = _free_port()
    ui = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{store}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):  # noqa: S310
                    return True
            except OSError:
                return False

        _wait(up, 120, "mlflow ui")
        import mlflow

        experiment = mlflow.MlflowClient(f"sqlite:///{store}").get_experiment_by_name("demo")
        assert experiment is not None
        runs = f"{base}/#/experiments/{experiment.experiment_id}/runs"
        page.goto(f"{runs}?workflowType=machine_learning&compareRunsMode=CHART")
        page.wait_for_load_state("load")
        time.sleep(10)  # the UI keeps polling (never network-idle)
        page.get_by_role("button", name="Close").first.click()  # its assistant panel
        # The clients' runs are nested under the job's parent run: unfold them, as a user would.
        parent = page.get_by_text("demo", exact=True).last.bounding_box()
        assert parent is not None
        page.mouse.click(parent["x"] - 32, parent["y"] + parent["height"] / 2)
        time.sleep(8)  # its charts load their histories one by one
        page.screenshot(path=str(out / "mlflow-ui.png"))
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def _side_by_side(out: Path) -> None:
    from PIL import Image

    left, right = Image.open(out / "live-page.png"), Image.open(out / "mlflow-ui.png")
    gap = 24
    both = Image.new(
        "RGB", (left.width + gap + right.width, max(left.height, right.height)), "white"
    )
    both.paste(left, (0, 0))
    both.paste(right, (left.width + gap, 0))
    both = both.resize((both.width // 2, both.height // 2), Image.Resampling.LANCZOS)
    both.save(out / "live-vs-mlflow.png", optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="trackbridge-shots-") as tmp:
        data = Path(tmp) / "data"
        demo = subprocess.Popen(
            [str(TRACKBRIDGE), "demo", "--exit", "--clients", "5", "--epochs", "8",
             "--steps", "40", "--step-delay", "0.05", "--data-dir", str(data)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp,
        )  # fmt: skip
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    _live(browser.new_page(viewport=VIEW), demo, args.out)
                    assert demo.stdout is not None
                    for line in demo.stdout:
                        print(line, end="")
                    if demo.wait(timeout=300) != 0:
                        raise SystemExit("screenshots: the demo failed")
                    _mlflow(browser.new_page(viewport=VIEW), data / "mlflow.db", args.out)
                finally:
                    browser.close()
        finally:
            if demo.poll() is None:
                demo.terminate()
                demo.wait(timeout=60)
    _side_by_side(args.out)
    print(f"wrote {args.out}/live-page.png, mlflow-ui.png, live-vs-mlflow.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
