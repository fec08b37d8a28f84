"""From the queue to MLflow: the timed flusher, the MLflow sink (experiments, parent and client
runs, batched writes, error triage), run creation across receivers, retries, and the
receiver's MLflow credentials and error state; the sinks beside MLflow or instead of it
(JSON-lines files).
"""
