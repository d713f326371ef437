"""For development only: the demo, the benchmarks, server launching, development keys."""
