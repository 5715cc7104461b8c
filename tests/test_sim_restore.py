"""A member restored from an old backup stays honest (issue #14 hole 5, docs/protocol.md §8).

The simulator restarts member 2 from the guard and log it had at `backup_ms` (behind, not
lost: what the `--guard-lost` flag never covered) and keeps counting it as honest, so the
per-step invariant "no honest member signs conflicting statements, across restarts" applies
to it: its start-up recall must keep it from signing over what it signed after the backup.

Scenario (n = 5, q = 4): member 4 is down from 300 ms to 3 s, so every certificate needs
member 2. Member 2 takes a backup at 300 ms, keeps voting (and nullifying the views member 4
leads), proposes in view 12, and crashes 1 ms later; its notarise vote for view 12 is lost,
so the committee waits in view 12. It restarts 50 ms later from the backup: without the
recall it would re-propose view 12 with another block, or finalise-vote a view it had
nullified after the backup. A dry run of the same seed finds when it proposes.
On a network that delivers every message: under loss the recall is a heuristic (§8).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_sim_campaigns import DEFAULT_SEEDS, campaign, pick

from coalitiond.consensus.events import Action, Broadcast
from coalitiond.consensus.messages import Message, Proposal, Vote
from coalitiond.consensus.types import VoteKind
from coalitiond.testing.simulator import Crash, SimConfig, SimNode, Simulation

RESTORED, DOWN, VIEW = 2, 4, 12


def _route(src: int, dst: int, msg: Message | None, now: int) -> bool:
    return not (src == RESTORED and isinstance(msg, Vote) and msg.kind is VoteKind.NOTARIZE
                and msg.view == VIEW)


class _Watch(Simulation):
    """Notes when member 2 first broadcasts its proposal for VIEW."""

    proposed_at: int | None = None

    def _execute(self, node: SimNode, action: Action | object) -> None:  # type: ignore[override]
        if self.proposed_at is None and node.node == RESTORED and \
                isinstance(action, Broadcast) and isinstance(action.message, Proposal) and \
                action.message.block.view == VIEW:
            self.proposed_at = self.now
        super()._execute(node, action)  # type: ignore[arg-type]


def restored(seed: int) -> SimConfig:
    base = SimConfig(seed=seed, n=5, target_new_blocks=4, router=_route,
                     crashes=(Crash(DOWN, 300, 3000, torn=False),))
    dry = _Watch(replace(base, check_liveness=False, max_time_ms=2000))
    dry.run()
    assert dry.proposed_at is not None, f"seed={seed}: member 2 never proposed view {VIEW}"
    t = dry.proposed_at + 1
    return replace(base, crashes=(*base.crashes,
                                  Crash(RESTORED, t, t + 50, torn=False, backup_ms=300)))


def test_a_member_restored_from_an_old_backup_never_signs_conflicting_statements(
        sim_seeds: list[int], request: pytest.FixtureRequest) -> None:
    sims = campaign(pick(request, sim_seeds, DEFAULT_SEEDS), restored)
    for sim in sims:
        node = sim.nodes[RESTORED]
        assert not node.faulty and node.backup is not None, "member 2 must count as honest"
        assert node.finals_since_stable > 0  # and it is live again after the restart
