"""Certificates formed from votes go to their non-signers and the next leaders only
(`Core._announce`, docs/protocol.md §3): a member that lost one vote must still be caught up
at once, not after a timeout, including when the next leader is down.

Deterministic simulator; each case compares the height reached in 3 simulated seconds with
and without one dropped notarise vote (the same seed, so the same schedule otherwise).
"""

from __future__ import annotations

import pytest

from coalitiond.consensus.messages import Message, Vote
from coalitiond.consensus.types import VoteKind
from coalitiond.testing.simulator import Crash, SimConfig, Simulation

DROP_VIEW = 10
RUN_MS = 3000


def _height(n: int, crashed: tuple[int, ...], drop: tuple[int, int] | None) -> int:
    dropped: list[int] = []

    def router(src: int, dst: int, msg: Message, now: int) -> bool:
        if drop is not None and not dropped and (src, dst) == drop and \
                isinstance(msg, Vote) and msg.kind is VoteKind.NOTARIZE and \
                msg.view == DROP_VIEW:
            dropped.append(now)
            return False
        return True

    sim = Simulation(SimConfig(
        seed=1, n=n, router=router, max_time_ms=RUN_MS, check_liveness=False,
        target_new_blocks=10**6, commands_until_ms=RUN_MS,
        crashes=tuple(Crash(i, 5, None, torn=False) for i in crashed)))
    sim.run()
    assert drop is None or dropped, "the scripted drop never happened"
    return sim.stats.max_height


@pytest.mark.parametrize(("n", "crashed", "drop"), [
    (3, (), (1, 2)),     # q = n: every member signs every certificate
    (4, (3,), (1, 2)),   # the next leader (view 11 -> member 3) is down
    (5, (4,), (1, 2)),
    (4, (3,), (1, 0)),   # the next leader is down and the vote is lost to the one after
    (5, (1,), (3, 2)),
])
def test_one_lost_vote_costs_no_timeout(n: int, crashed: tuple[int, ...],
                                        drop: tuple[int, int]) -> None:
    clean = _height(n, crashed, None)
    lossy = _height(n, crashed, drop)
    # A view timeout (300 ms in the simulator) would cost a tenth of the run's blocks.
    assert lossy >= clean - max(2, clean // 50), (clean, lossy)
