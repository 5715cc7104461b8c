"""Consensus core costs: simulated committee throughput and per-message signature costs.

The simulator runs real signing and verification (cached per distinct message, as a shell
would batch them), so blocks per wall-clock second here is an upper bound for the core's CPU
cost on this machine, not a network benchmark.
"""

from __future__ import annotations

import time
import tracemalloc

from coalitiond.consensus.messages import Proposal, decode_message, encode_message, verify_message
from coalitiond.consensus.types import Block, Certificate, Vote, VoteKind, genesis_block
from coalitiond.testing.simulator import SimConfig, make_committee, run


def _rate(fn: object, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        fn()  # type: ignore[operator]
    return count / (time.perf_counter() - started)


def bench_messages() -> None:
    committee, keys = make_committee(7)
    g = genesis_block(committee)
    block = Block(0, 1, 1, g.digest, 1, tuple(b"c" * 200 for _ in range(100)), 0, g.state_root)
    vote = Vote.sign(keys[0], committee, 0, VoteKind.NOTARIZE, 1, block.digest)
    cert = Certificate.from_votes([Vote.sign(keys[i], committee, i, VoteKind.FINALIZE, 1,
                                             block.digest) for i in range(committee.quorum)])
    wire = encode_message(committee, vote)
    prop = Proposal.sign(keys[1], committee, block)
    print(f"{'operation (n=7, q=6)':<42}{'per second':>14}")
    rows = [
        ("sign vote", lambda: Vote.sign(keys[0], committee, 0, VoteKind.NOTARIZE, 1,
                                        block.digest), 2000),
        ("verify vote", lambda: verify_message(committee, vote), 2000),
        ("decode vote", lambda: decode_message(committee, wire), 5000),
        ("verify certificate (6 signatures)", lambda: cert.verify(committee), 300),
        ("sign proposal (100 x 200 B commands)", lambda: Proposal.sign(keys[1], committee,
                                                                       block), 500),
        ("encode proposal (100 x 200 B commands)", lambda: encode_message(committee, prop), 500),
    ]
    for name, fn, count in rows:
        print(f"{name:<42}{_rate(fn, count):>14,.0f}")


def bench_simulation() -> None:
    print(f"\n{'simulated committee':<24}{'blocks':>8}{'wall s':>8}{'blocks/s':>10}"
          f"{'events/s':>10}{'peak MiB':>10}")
    for n in (4, 5, 7):
        tracemalloc.start()
        started = time.perf_counter()
        sim = run(SimConfig(seed=1, n=n, target_new_blocks=30, commands_until_ms=60_000,
                            command_interval_ms=5))
        wall = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        h = sim.stats.max_height
        print(f"{'n=' + str(n) + ', clean network':<24}{h:>8}{wall:>8.2f}{h / wall:>10.1f}"
              f"{sim.stats.events / wall:>10,.0f}{peak:>10.1f}")


def main(argv: list[str]) -> None:
    bench_messages()
    bench_simulation()
