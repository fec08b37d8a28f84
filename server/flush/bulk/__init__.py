"""MLflow's database written straight, at the speed of the database: ``log_batch`` calls as
set-based SQL producing exactly the rows of MLflow's own SQL store (``writer.py``), used when
the tracking URI is a database whose schema it was verified against (``schema.py``)."""

from typing import TYPE_CHECKING, Any

from server.flush.bulk.schema import VERIFIED_REVISIONS
from server.flush.bulk.sink import BulkSink, open_sink

if TYPE_CHECKING:
    from server.flush.bulk.writer import BulkWriter

__all__ = ["VERIFIED_REVISIONS", "BulkSink", "BulkWriter", "open_sink"]


def __getattr__(name: str) -> Any:
    """``BulkWriter``, loaded when asked for: it loads SQLAlchemy (server/flush/bulk/sink.py)."""
    if name == "BulkWriter":
        from server.flush.bulk.writer import BulkWriter

        return BulkWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
