"""The receiver daemon: the only process that talks to MLflow.

Submodules import MLflow lazily where they can, so ``trackbridge --help`` works without it.
"""
