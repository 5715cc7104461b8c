"""Harnesses for tests and benchmarks, never imported by the daemon (an import-linter
contract in `make lint` says so): the deterministic consensus `simulator`, the `byzantine`
behaviour catalogue, and `chain` (finalised chains of blocks for store tests)."""
