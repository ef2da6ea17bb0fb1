"""Shared machinery for the benchmarks (not run by ``make bench`` itself)."""
