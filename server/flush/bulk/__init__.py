"""MLflow's database written straight, at the speed of the database: ``log_batch`` calls as
set-based SQL producing exactly the rows of MLflow's own SQL store (``writer.py``), used when
the tracking URI is a database whose schema it was verified against (``schema.py``)."""

from server.flush.bulk.schema import VERIFIED_REVISIONS
from server.flush.bulk.sink import BulkSink, open_sink
from server.flush.bulk.writer import BulkWriter

__all__ = ["VERIFIED_REVISIONS", "BulkSink", "BulkWriter", "open_sink"]
