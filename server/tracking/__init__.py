"""MLflow's tracking API served to clients: reads and the writes the event stream cannot carry.

Clients send MLflow's own request messages over the ``Tracking`` gRPC service
(``proto/bridge/pb/v1/tracking.proto``); the receiver answers them from its MLflow store with
its own credentials, limited to what the caller may read (``scope.py``), after the caller's
pending events reached MLflow (``fresh.py``), with artifact locations replaced by trackbridge
addresses so that files always travel through the receiver. ``journal.py`` applies the writes
that do travel in a run's event stream (``MlflowCall`` events) for the flusher.
"""
