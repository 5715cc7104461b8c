"""Benchmarks: `make bench` (= `python -m benchmarks`).

Each `benchmarks/bench_*.py` module exposes `main(argv) -> None` and prints its own table:
throughput, latency percentiles, peak memory, and a side-by-side ratio where a peer exists.
"""
