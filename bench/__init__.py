"""Benchmarks: figures go to docs/BENCHMARKS.md with the command that produced them."""
