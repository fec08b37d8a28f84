"""The client's durable spool: what a writer keeps on disk until the receiver has it.

``file.py`` is one spool (batches, destination, ledger); ``finding.py`` finds the spools dead
writers left; ``delivery.py`` delivers one of them (the next writer of the same destination
does, and ``trackbridge sync``).
"""

from client_sdk.spool.file import Spool
from client_sdk.spool.names import Destination, SpoolBusy, SpooledBatch, SpoolError

__all__ = ["Destination", "Spool", "SpoolBusy", "SpoolError", "SpooledBatch"]
