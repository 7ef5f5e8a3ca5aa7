"""Benchmarks of the search: ``python -m benchmarks`` (see ``benchmarks/__main__.py``) and ``benchmarks/gpu.py``."""
