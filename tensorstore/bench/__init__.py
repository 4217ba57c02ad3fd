"""Benchmarks behind ``tensorstore bench``; figures go to ``docs/benchmarks.md``."""
