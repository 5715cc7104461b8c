"""Crash safety: a real writer process is SIGKILLed at seeded points, again and again, on one
store. After every kill the store must open cleanly, hold every acknowledged write (blocks
and signer-guard records), and show nothing half-written (the full audit passes).

The kill point is chosen, not left to the scheduler: the writer counts the SQL statements
its store runs (SQLite's trace hook fires as each statement begins) and kills itself as the
K-th statement of a kind begins — BEGIN (just after the previous write committed), INSERT
(inside a transaction), COMMIT (all written, not committed) or any — kind and K from the
seed. Each kill prints the statement it interrupted.

Default: one kill per seed of the `sim_seeds` fixture (20). Longer campaigns:
`pytest tests/test_store_crash.py --sim-seeds 500`; replay one writer: `--sim-seed S`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coalitiond.consensus.types import VoteKind
from coalitiond.log import Store
from coalitiond.testing.chain import ChainBuilder

pytestmark = pytest.mark.live

# The writer: continues the chain from whatever the store holds, and acknowledges each
# durable write on stdout only after the call returned (i.e. after COMMIT and its fsync).
# It SIGKILLs itself as its `nth` SQL statement of `kind` begins (kind ANY: of any kind),
# first naming that statement.
WRITER = r"""
import os, random, signal, sys
from coalitiond.consensus.types import VoteKind
from coalitiond.log import Store
from coalitiond.testing.chain import ChainBuilder
path, seed, kind, nth = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
chain = ChainBuilder(4)
s = Store.open(path, chain.committee, signing_key=chain.keys[0])
statements = 0

def kill_at_statement(sql):
    global statements
    statements += kind in ("ANY", sql.split()[0].upper())
    if statements == nth:
        print("KILL", " ".join(sql.split())[:60], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

s._conn.set_trace_callback(kill_at_statement)
if s.height:
    chain.resume(s.block(s.height), s.frontier)
view = (s.highest_signed_view(0) or 0) + 1
while True:
    if rng.random() < 0.3:
        s.guard(0, view, VoteKind.NOTARIZE, bytes([view % 256]) * 32)
        print("ACK guard", view, flush=True)
        view += 1
        continue
    items = []
    for _ in range(rng.choice((1, 1, 2, 5))):
        n = rng.choice((0, 1, 8, 64))
        items.append(chain.next([rng.randbytes(rng.randrange(1, 600)) for _ in range(n)]))
    s.append_blocks(items, verify_signatures=False)
    print("ACK block", s.height, flush=True)
"""


KILL_KINDS = ("BEGIN", "INSERT", "COMMIT", "ANY")


def test_sigkill_at_chosen_statements_loses_no_acknowledged_write(
        tmp_path: Path, sim_seeds: list[int]) -> None:
    path = tmp_path / "log.sqlite3"
    chain = ChainBuilder(4)
    acked_height = 0
    acked_views: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    interrupted: list[str] = []
    for seed in sim_seeds:
        rng = random.Random(seed)
        kind, nth = rng.choice(KILL_KINDS), rng.randint(1, 12)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seed), kind,
                                 str(nth)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True)
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == -signal.SIGKILL, f"seed {seed}: writer failed: {err}"
        for line in out.splitlines():
            if line.startswith("ACK block "):
                acked_height = int(line.split()[2])
            elif line.startswith("ACK guard "):
                acked_views.append(int(line.split()[2]))
            elif line.startswith("KILL "):
                interrupted.append(line[5:].split()[0])
                print(f"seed {seed}: killed as {kind} #{nth} began: {line[5:]}")
        with Store.open(path, chain.committee, signing_key=chain.keys[0]) as s:
            # Acknowledged => present. The write in flight may or may not have committed,
            # but if it did it is whole (checked by the open-time tail check here and the
            # full audit below).
            assert s.height >= acked_height, f"seed {seed}: lost acknowledged blocks"
            for view in acked_views[-5:]:
                assert s.signed(0, view, VoteKind.NOTARIZE) == bytes([view % 256]) * 32, \
                    f"seed {seed}: lost guard record of view {view}"
            acked_height = s.height
    with Store.open(path, chain.committee, signing_key=chain.keys[0]) as s:
        summary = s.audit()
        assert summary.height == s.height >= 1
        for view in acked_views:
            assert s.signed(0, view, VoteKind.NOTARIZE) == bytes([view % 256]) * 32
    if len(sim_seeds) >= 20:
        # The default campaign does reach each kind of kill point (the seeds are fixed).
        assert {"BEGIN", "INSERT", "COMMIT"} <= set(interrupted), interrupted
    print(f"final: height {summary.height}, {summary.entries} entries, "
              f"{len(acked_views)} guard records")
