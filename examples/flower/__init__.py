"""A real Flower federation on loopback, logging through trackbridge:
``python -m examples.flower``."""
