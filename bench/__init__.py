"""Shoal benchmarks: `python -m bench.<name>`, results in bench/results/ (docs/benchmarks.md).

These are measurements, not tests: nothing here is collected by pytest.
"""
