"""The per-member signed log: durable appends and Merkle proofs.

* Durable appends: one transaction per finalised block carrying 1, 64 or 1024 entries (each
  block with its finalize certificate, 5 notarize + 5 finalize votes, entries, Merkle nodes
  and a signed checkpoint), WAL + synchronous=FULL, so every transaction pays an fsync.
  Peer: the same entry bytes inserted with raw `sqlite3` in the same mode, one transaction
  per batch — the floor any SQLite log pays; the ratio column is ours / raw.
* Proofs: inclusion and consistency proof generation from the store (perfect subtrees read
  from SQLite) and verification with the pure `coalitiond.verify` functions.

Usage: `python -m benchmarks store` or `python -m benchmarks.bench_store [--quick]`.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Final

from coalitiond.log import BlockToAppend, Store
from coalitiond.primitives.logs import configure
from coalitiond.testing.chain import ChainBuilder
from coalitiond.verify import verify_consistency, verify_inclusion

BATCHES: Final = (1, 64, 1024)
COMMAND_SIZE: Final = 100
#: Transactions per batch size (full run, quick run): enough for stable percentiles.
TRANSACTIONS: Final = {1: (400, 60), 64: (150, 25), 1024: (20, 5)}
PROOFS: Final = (3000, 400)


def _blocks(chain: ChainBuilder, per_block: int, count: int) -> list[BlockToAppend]:
    rng = random.Random(per_block)
    return [chain.next([rng.randbytes(COMMAND_SIZE) for _ in range(per_block)])
            for _ in range(count)]


def _pct(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _ours(d: Path, chain: ChainBuilder, items: list[BlockToAppend]) -> list[float]:
    latencies = []
    with Store.open(d / "log.sqlite3", chain.committee, signing_key=chain.keys[0]) as s:
        for it in items:
            t0 = time.perf_counter()
            s.append_blocks([it], verify_signatures=False)
            latencies.append(time.perf_counter() - t0)
    return latencies


def _raw(d: Path, items: list[BlockToAppend]) -> list[float]:
    conn = sqlite3.connect(d / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    latencies, idx = [], 0
    for it in items:
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO entries VALUES (?, ?)",
                         [(idx + i, c) for i, c in enumerate(it.block.commands)])
        conn.execute("COMMIT")
        idx += len(it.block.commands)
        latencies.append(time.perf_counter() - t0)
    conn.close()
    return latencies


def _peak_kib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024


def _measured(chain: ChainBuilder, items: list[BlockToAppend]) -> Callable[[], object]:
    def run() -> object:
        with tempfile.TemporaryDirectory() as tmp:
            return _ours(Path(tmp), chain, items)
    return run


def appends(quick: bool) -> None:
    print(f"durable appends (WAL, synchronous=FULL; {COMMAND_SIZE}-byte commands, n=5 with all "
          f"10 votes per block)")
    print(f"{'entries/txn':>11} {'txns':>5} {'txn/s':>8} {'entries/s':>10} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'peak KiB':>9} {'raw sqlite entries/s':>21} {'ratio':>6}")
    for per in BATCHES:
        count = TRANSACTIONS[per][1 if quick else 0]
        chain = ChainBuilder(5)
        items = _blocks(chain, per, count)
        with tempfile.TemporaryDirectory() as tmp:
            ours = _ours(Path(tmp), chain, items)
            raw = _raw(Path(tmp), items)
        few = items[: max(2, count // 10)]
        peak = _peak_kib(_measured(chain, few))
        ours_rate = per * count / sum(ours)
        raw_rate = per * count / sum(raw)
        print(f"{per:>11} {count:>5} {count / sum(ours):>8.0f} {ours_rate:>10.0f} "
              f"{_pct(ours, 0.5):>7.2f} {_pct(ours, 0.99):>7.2f} {peak:>9.0f} "
              f"{raw_rate:>21.0f} {ours_rate / raw_rate:>6.2f}")


def proofs(quick: bool) -> None:
    n = PROOFS[1 if quick else 0]
    chain = ChainBuilder(5)
    items = _blocks(chain, 64, 20 if quick else 160)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp, \
            Store.open(Path(tmp) / "log.sqlite3", chain.committee,
                       signing_key=chain.keys[0]) as s:
        for i in range(0, len(items), 32):
            s.append_blocks(items[i:i + 32], verify_signatures=False)
        size, root = s.size, s.root()
        idx = [rng.randrange(size) for _ in range(n)]
        olds = [rng.randrange(1, size) for _ in range(n)]
        t0 = time.perf_counter()
        inc = [s.inclusion_proof(i) for i in idx]
        t_inc = time.perf_counter() - t0
        leaves = [s.entry(i) for i in idx]
        t0 = time.perf_counter()
        con = [s.consistency_proof(m) for m in olds]
        t_con = time.perf_counter() - t0
        old_roots = [s.root(m) for m in olds]
    t0 = time.perf_counter()
    assert all(verify_inclusion(leaf, i, size, p, root)
               for leaf, i, p in zip(leaves, idx, inc, strict=True))
    v_inc = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert all(verify_consistency(m, size, r, root, p)
               for m, r, p in zip(olds, old_roots, con, strict=True))
    v_con = time.perf_counter() - t0
    print(f"\nMerkle proofs over a log of {size} entries ({n} proofs each; generation reads "
          f"perfect subtrees from SQLite)")
    print(f"{'proof':>12} {'generate/s':>11} {'verify/s':>9} {'hashes (median)':>16}")
    for name, gen, ver, ps in (("inclusion", t_inc, v_inc, inc),
                               ("consistency", t_con, v_con, con)):
        print(f"{name:>12} {n / gen:>11.0f} {n / ver:>9.0f} "
              f"{statistics.median(len(p) for p in ps):>16.0f}")


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    # Keep the store's log lines (e.g. "store.created") out of the tables on stdout.
    configure("console", "warning", stream=sys.stderr)
    appends(quick)
    proofs(quick)


if __name__ == "__main__":
    main(sys.argv[1:])
