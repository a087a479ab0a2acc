"""Benchmarks (not tests): throughput measured against a baseline in the same run."""
