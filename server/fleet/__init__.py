"""Fleet mode: receivers as stateless gateways over a NATS JetStream cluster (``--queue nats://``)."""
