"""Accepting client batches: the Ingest gRPC service, dedupe by (run, sequence), the durable
store and the ack. Batches go from here to :mod:`server.queue`.
"""
