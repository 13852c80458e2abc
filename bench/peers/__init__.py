"""The alternatives `rtd bench` measures ours against, in the same run (docs/BENCHMARKS.md)."""
