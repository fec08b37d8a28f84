"""What the MLflow-compatible layers share (the fluent module, the plugin, the integrations):
one session per process with a Writer and an artifact uploader, MLflow's call-site checks,
entities shaped like MLflow's, run names, and how ``trackbridge://`` URIs are read.
"""
