"""Zero-code mode: MLflow's tracking-store and artifact-repository plugins for
``trackbridge://host:port`` tracking URIs (registered as entry points in pyproject.toml).
"""
