"""Crash safety: a real writer process is SIGKILLed at seeded random points, again and again,
on one store. After every kill the store must open cleanly, hold every acknowledged write
(blocks and signer-guard records), and show nothing half-written (the full audit passes).

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
WRITER = r"""
import random, sys
from coalitiond.consensus.types import VoteKind
from coalitiond.log import Store
from coalitiond.testing.chain import ChainBuilder
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
chain = ChainBuilder(4)
s = Store.open(path, chain.committee, signing_key=chain.keys[0])
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


def test_sigkill_at_random_points_loses_no_acknowledged_write(
        tmp_path: Path, sim_seeds: list[int]) -> None:
    path = tmp_path / "log.sqlite3"
    chain = ChainBuilder(4)
    acked_height = 0
    acked_views: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for seed in sim_seeds:
        rng = random.Random(seed)
        wanted = rng.randint(1, 12)
        print(f"seed {seed}: kill after {wanted} acknowledgements")
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seed)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True)
        assert proc.stdout is not None
        got = 0
        try:
            while got < wanted:
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"seed {seed}: writer died: {proc.stderr.read()}")
                if line.startswith("ACK block "):
                    acked_height = int(line.split()[2])
                    got += 1
                elif line.startswith("ACK guard "):
                    acked_views.append(int(line.split()[2]))
                    got += 1
            # The writer is inside its next write (building, inserting, committing or
            # fsyncing): kill it there.
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()
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
        print(f"final: height {summary.height}, {summary.entries} entries, "
              f"{len(acked_views)} guard records")
