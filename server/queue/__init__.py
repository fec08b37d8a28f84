"""The receiver's durable queue: accepted batches, per-run sequence marks and dead letters, and
the backlog count shared by ingest and the flusher.
"""
