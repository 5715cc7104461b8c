"""The start-up recall over real links (issue #14 hole 5, docs/protocol.md §8): a member whose
data directory is wiped after it voted learns from its peers what it signed, keeps it in its
new guard, never signs anything else at or below it, and finalises again. In-process members on loopback; the shell only routes
the recall messages (the core decides)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
from node_harness import all_reach, in_process, write_committee

from coalitiond.log.sqlite import Store, store_path

pytestmark = pytest.mark.live


async def test_a_wiped_member_recalls_its_statements_from_its_peers(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    config = committee.member_config(0)
    with trio.fail_after(120):
        async with in_process(committee) as running:
            await all_reach(running.members(), 3)
            await running.stop(0)
            with Store.open(store_path(config.node.data_dir), read_only=True) as s:
                highest = s.highest_signed_view(0)
                before = set(s.guard_records(0))
            assert highest is not None and highest > 0
            shutil.rmtree(config.node.data_dir)  # amnesia: no guard, no log
            member = await running.start(0)
            others = [m for m in running.members() if m is not member]
            target = max(m.height for m in others) + 2
            await all_reach([member], target)
            core = member.core
            assert core is not None and not core._recall.open
            through = core._recall.through
            # Peers returned its own statements, with its signatures: nothing invented.
            assert 0 < through <= highest, (through, highest)
            assert member.store is not None
            signed = await member.store.run(lambda s: s.guard_records(0))
            # At or below it, the guard holds only what peers returned (signed before the
            # wipe, now durable again); every new signature is above it.
            recalled = [r for r in signed if r[1] <= through]
            assert recalled and set(recalled) <= before, "signed at or below the recalled view"
            assert any(r[1] > through for r in signed)
