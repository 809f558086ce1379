"""Benchmarks: ``python -m bench`` (``make bench``) prints one table of ratios from one run."""
