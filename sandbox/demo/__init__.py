"""Synthetic tax data for the demo, the tests and the benchmarks, with its catalog."""
