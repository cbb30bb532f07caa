"""Benchmarks: each module prints the workload it ran and, as its last line, one JSON object."""
