"""Benchmark scripts (not tests): tables and ratios against a peer measured in the same run."""
