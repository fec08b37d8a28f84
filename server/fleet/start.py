"""Opening fleet mode for a receiver, without importing nats-py before it is needed (the
``fleet`` extra; a receiver on its own SQLite queue never loads it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.errors import StartupError
from server.config import redact_uri
from server.fleet.config import FleetConfig
from server.queue.sqlite import Backlog, Queue

if TYPE_CHECKING:
    from server.fleet.gateway import FleetIngest
    from server.fleet.live import HubOf


class FleetUnreachable(StartupError):
    """Fleet mode cannot start: no NATS server answered, or nats-py is not installed."""


def open_fleet(
    config: FleetConfig,
    scratch: Queue,
    on_stored: Callable[[str, int], None],
    flush_soon: Callable[[], None],
    backlog: Backlog,
    *,
    name: str,
    hub_of: HubOf | None = None,
    mlflow_failing: Callable[[], bool] = lambda: False,
) -> FleetIngest:
    """Connects to the fleet's cluster (making its stream and buckets when missing) and
    returns the receiver's ingest with its flusher feed (started by ``start``); ``hub_of``
    gives the receiver's live hub, which then shows the whole fleet; ``mlflow_failing`` says
    whether the receiver's flusher cannot write to MLflow now (its batches go back to the
    fleet when that lasts).

    Raises:
        FleetUnreachable: No server of the cluster answered, or nats-py is missing.
    """
    try:
        from server.fleet.feeder import Feeder
        from server.fleet.gateway import FleetIngest
        from server.fleet.link import NatsLink
        from server.fleet.live import FleetLive
    except ImportError as exc:
        raise FleetUnreachable(
            f"--queue nats:// needs nats-py ({exc}): pip install 'trackbridge[fleet]'"
        ) from None
    link = NatsLink(config, name)
    live = FleetLive(hub_of)
    try:
        link.start()
        assert link.nc is not None
        link.run(live.attach(link.nc), 10.0)
    except Exception as exc:
        link.stop()
        servers = ", ".join(redact_uri(s) for s in config.servers)
        raise FleetUnreachable(
            f"cannot use the NATS cluster at {servers} ({type(exc).__name__}: {exc});"
            " start it, or fix --queue"
        ) from None
    feeder = (
        Feeder(
            link,
            scratch,
            on_stored=on_stored,
            flush_soon=flush_soon,
            backlog=backlog,
            live=live,
            mlflow_failing=mlflow_failing,
        )
        if config.flush
        else None
    )
    return FleetIngest(link, feeder, live)
