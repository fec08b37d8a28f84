"""A real NVFlare job (the simulator, 2 sites x 2 rounds) logging through trackbridge:
``python -m examples.nvflare``."""
