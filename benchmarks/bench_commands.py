"""Client envelope verification rate for 1, 16 and 256 commands per envelope.

DESIGN §2.5 says one signature per command caps a 5-member committee on 2 cores near 4,400
commands/s, because every member verifies every client signature. This measures, on this
machine:

* `check_envelope` alone (decode + committee + ACL + ed25519 verify), one thread;
* the member's full pre-vote check (`Executor.check_command`: plus the feed's per-command
  check);
* execution (`Executor.apply_block`: admission again, dedup, feed apply), one block per
  envelope batch;

and derives the committee-wide ceiling the design talks about: every member verifies every
envelope, so n members simulated on `cores` cores share `cores × rate`, i.e. `cores × rate / n`
commands/s. The ratio column is against one signature per command (1 command/envelope).

Usage: `python -m benchmarks commands` or `python -m benchmarks.bench_commands [--quick]`.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import Acl, check_envelope
from coalitiond.components.executor import Executor
from coalitiond.components.feed.component import Feed
from coalitiond.primitives.crypto import SigningKey

SIZES: Final = (1, 16, 256)
COMMITTEE_N: Final = 5
BODY: Final = {"pair": "eth-usd", "price": 3_141_592_653, "source": "bench"}
COMMITTEE_ID: Final = b"\x5a" * 32


def _envelopes(per_envelope: int, total_commands: int) -> list[bytes]:
    signer = EnvelopeSigner(SigningKey(b"\x07" * 32), COMMITTEE_ID)
    count = max(1, total_commands // per_envelope)
    return [signer.sign([publish("price", BODY) for _ in range(per_envelope)]).raw
            for _ in range(count)]


def _timed(fn: Callable[[bytes], object], items: list[bytes]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def _peak_kib(fn: Callable[[bytes], object], items: list[bytes]) -> float:
    tracemalloc.start()
    for item in items:
        fn(item)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    total = 1_024 if quick else 8_192
    cores = os.cpu_count() or 1
    key = SigningKey(b"\x07" * 32)
    acl = Acl.allow([key.public])

    print(f"{total} commands per row; committee ceiling = {cores} cores x rate / "
          f"{COMMITTEE_N} members (DESIGN §2.5 quotes ~4,400 commands/s at 1 per envelope)")
    header = (f"{'stage':<14}{'cmds/env':>9}{'envelopes/s':>13}{'commands/s':>12}"
              f"{'p50 ms':>9}{'p99 ms':>9}{'peak KiB':>10}{'committee/s':>13}{'ratio':>8}")
    print(header)
    print("-" * len(header))
    for stage in ("check_envelope", "pre-vote", "apply"):
        baseline = None
        for size in SIZES:
            envelopes = _envelopes(size, total)
            executor = Executor(COMMITTEE_ID, acl, Feed([key.public]))
            fn: Callable[[bytes], object]
            if stage == "check_envelope":
                def fn(raw: bytes) -> object:
                    return check_envelope(COMMITTEE_ID, acl, raw)
            elif stage == "pre-vote":
                fn = executor.check_command
            else:
                def fn(raw: bytes, ex: Executor = executor) -> object:
                    return ex.apply_block(ex.executed_height + 1, b"\x00" * 32, [raw])
            elapsed, latencies = _timed(fn, envelopes)
            commands = len(envelopes) * size
            rate = commands / elapsed
            if baseline is None:
                baseline = rate
            # Peak memory on a fresh executor (apply keeps state) over a short slice.
            if stage == "apply":
                fresh = Executor(COMMITTEE_ID, acl, Feed([key.public]))

                def fn(raw: bytes, ex: Executor = fresh) -> object:
                    return ex.apply_block(ex.executed_height + 1, b"\x00" * 32, [raw])
            peak = _peak_kib(fn, envelopes[: max(1, len(envelopes) // 8)])
            print(f"{stage:<14}{size:>9}{len(envelopes) / elapsed:>13,.0f}{rate:>12,.0f}"
                  f"{statistics.median(latencies) * 1e3:>9.3f}{_pct(latencies, 0.99) * 1e3:>9.3f}"
                  f"{peak:>10,.0f}{rate * cores / COMMITTEE_N:>13,.0f}{rate / baseline:>7.1f}x")

    # Off the event loop: PyNaCl releases the GIL during verify, our CBOR decoder does not.
    print(f"\ncheck_envelope in {cores} worker threads (as the shell would run it):")
    print(f"{'cmds/env':>9}{'commands/s':>12}{'vs 1 thread':>13}")
    for size in SIZES:
        envelopes = _envelopes(size, total)

        def check(raw: bytes) -> object:
            return check_envelope(COMMITTEE_ID, acl, raw)

        one, _ = _timed(check, envelopes)
        with ThreadPoolExecutor(max_workers=cores) as pool:
            start = time.perf_counter()
            list(pool.map(check, envelopes, chunksize=max(1, len(envelopes) // (4 * cores))))
            many = time.perf_counter() - start
        commands = len(envelopes) * size
        print(f"{size:>9}{commands / many:>12,.0f}{one / many:>12.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
