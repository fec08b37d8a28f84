"""Examples run with one command each from the repository root (``python -m examples.NAME``)."""
