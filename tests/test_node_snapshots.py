"""A live member writes executor snapshots every `node.snapshot_interval` blocks and, stopped
and started again, starts from the newest one and rejoins with the committee's state."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from node_harness import all_reach, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.node.snapshots import SNAPSHOT_DIR, SnapshotStore

pytestmark = pytest.mark.live

INTERVAL = 3


async def test_a_restarted_member_starts_from_its_newest_snapshot(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 3)
    for path in committee.configs:
        text = path.read_text()
        path.write_text(text.replace("[node]\n", f"[node]\nsnapshot_interval = {INTERVAL}\n",
                                     1))
    spec = committee.member_config(0).committee_spec()
    signer = EnvelopeSigner(committee.operator, spec.committee_id)
    snapshots = SnapshotStore(committee.member_config(0).node.data_dir / SNAPSHOT_DIR)
    with trio.fail_after(180):
        async with in_process(committee) as running, client_for(committee) as client:
            for k in range(4):
                _, outcome = await client.submit(signer.sign([publish("k", k)]).raw)
                assert outcome is not None
            await all_reach(running.members(), 3 * INTERVAL + 1)
            await running.stop(0)  # waits for a snapshot being written (not cancellable)
            written = snapshots.heights()
            assert written and all(h % INTERVAL == 0 for h in written)
            assert len(written) <= snapshots.keep
            member0 = await running.start(0)
            assert member0.voter_status.restored_from == written[0]
            others = [m for m in running.members() if m is not member0]
            _, outcome = await client.submit(signer.sign([publish("k", 99)]).raw)
            assert outcome is not None
            await all_reach(running.members(), outcome.height)
            assert member0.state_root == others[0].state_root
