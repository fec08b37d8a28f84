"""Benchmarks that reuse the test suite's process helpers (``tests/support``): run them from a
repository checkout as ``python -m bench.dev.NAME``; they are not part of the installed package."""
