"""trackbridge's shared core: event model, wire conversion, MLflow's rules, batching limits.

Imports neither ``client_sdk``, ``server`` nor ``mlflow``.
"""
