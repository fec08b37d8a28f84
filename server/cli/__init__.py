"""The ``trackbridge`` command line: one module per subcommand."""

from server.cli.main import main

__all__ = ["main"]
