"""Benchmarks: `python -m bench` measures side by side and prints Markdown rows for BENCHMARKS.md."""
