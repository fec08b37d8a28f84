"""The receiver daemon: the only process that talks to MLflow.

Along the data path: ``ingest`` (the gRPC service that accepts client batches) → ``queue``
(durable, SQLite WAL) → ``flush`` (the timed flusher and the MLflow sink); beside it
``artifacts`` (files on their own stream), ``security`` (TLS, tokens, limits) and ``live``
(the hub, web page, /metrics and Watch). ``receiver`` wires them into one daemon; ``cli`` is
the ``trackbridge`` command. Submodules import MLflow lazily where they can, so
``trackbridge --help`` works without it.
"""
