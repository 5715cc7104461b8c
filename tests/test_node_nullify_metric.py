"""`coalitiond_consensus_nullify_votes_total`: what the "view timeouts climbing" alert reads
(deploy/prometheus/alerts.yaml). With one member of four down, every view it leads is
nullified, so the live members' counter rises while the committee keeps finalising."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from node_harness import all_reach, in_process, write_committee

from coalitiond.primitives.metrics import sample_value

pytestmark = pytest.mark.live

METRIC = "coalitiond_consensus_nullify_votes_total"


async def test_views_a_dead_leader_owns_are_counted_as_nullify_votes(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    before = sample_value(METRIC) or 0.0
    with trio.fail_after(120):
        async with in_process(committee, start=[0, 1, 2]) as running:
            # Round-robin leaders: reaching height 6 takes views past at least one that
            # member 3 leads; the three live members (a quorum) must each nullify it.
            await all_reach(running.members(), 6)
            views = [m.core.view for m in running.members() if m.core]
    after = sample_value(METRIC) or 0.0
    assert after - before >= 3, f"nullify votes {before} -> {after}, views {views}"
