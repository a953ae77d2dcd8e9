"""Benchmarks whose results are shipped with the package (`results/`): see `speed_table`."""
