"""What a syncing member checks before it writes a byte (`verify_synced`), on a chain whose
blocks carry true roots; and that the synced log then restarts from its own snapshot, or
refuses to start with one line when it has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalitiond.log.records import FinalizedBlock
from coalitiond.log.sqlite import Store
from coalitiond.node.snapshots import SnapshotFile, SnapshotStore, restore_and_replay
from coalitiond.node.state_sync import Synced, SyncRefused, verify_synced
from coalitiond.primitives.errors import OperatorError
from coalitiond.testing.rooted_chain import RootedChain

WHO = "state sync: member 1 (abcd0123)"
H = 10


class Full:
    """A genesis log of 14 blocks (each claims its parent's roots, lag one) and the
    executor snapshot after every height."""

    def __init__(self, tmp_path: Path, *, lag_from: int | None = None) -> None:
        self.rc = RootedChain(seed=3)
        self.store = Store.open(tmp_path / "full.sqlite3", self.rc.committee,
                                signing_key=self.rc.chain.keys[0])
        self.snaps: dict[int, SnapshotFile] = {}
        for height in range(1, 15):
            # From `lag_from` on, blocks claim no newer roots than those of lag_from - 2.
            claim = self.rc.history.get(lag_from - 2) \
                if lag_from is not None and height >= lag_from else None
            item = self.rc.next((self.rc.envelope(b"%d" % height),), claim=claim)
            self.store.append_blocks([item], verify_signatures=False)
            self.snaps[height] = SnapshotFile(self.rc.committee.committee_id, item.block,
                                              self.rc.roots, self.rc.executor.snapshot())

    def after(self, height: int, upto: int) -> list[FinalizedBlock]:
        return list(self.store.iter_finalized(height + 1, upto))

    def frontier(self, height: int) -> tuple[int, list[bytes]]:
        size = self.store.log_at(height)[0]
        return size, self.store.frontier_hashes(size)

    def verify(self, snap: SnapshotFile, fetched: list[FinalizedBlock],
               frontier: tuple[int, list[bytes]] | None = None):  # type: ignore[no-untyped-def]
        size, hashes = self.frontier(snap.height) if frontier is None else frontier
        executor = self.rc.make_executor()
        before = executor.snapshot()
        try:
            return verify_synced(self.rc.committee, executor, snap, size, hashes, fetched, WHO)
        finally:
            assert executor.snapshot() == before  # the executor is left as it was


def test_a_true_snapshot_verifies_against_the_block_that_certifies_it(tmp_path: Path) -> None:
    full = Full(tmp_path)
    items = full.verify(full.snaps[H], full.after(H, H + 1))
    assert [it.block.height for it in items] == [H + 1]


@pytest.mark.parametrize(("case", "message"), [
    ("state", r"finalised block 11 certifies state root [0-9a-f]{16}, log size 10, log root "
              r"[0-9a-f]{16} at height 10; the snapshot at height 10 gives"),
    ("frontier", r"the frontier \(size 10, root [0-9a-f]{16}\) is not the snapshot's log"),
    ("frontier-shape", r"frontier: a tree of size 10 has 2 frontier hashes, got 1"),
    ("unlinked", r"block 12 does not link to the snapshot's block at height 10"),
    ("not-final", r"the blocks after height 10 are not all finalised"),
    ("committee", r"a snapshot of committee"),
    ("executor", r"the snapshot's state is not of its block 10"),
])
def test_a_snapshot_that_does_not_verify_is_refused_naming_the_peer(
        tmp_path: Path, case: str, message: str) -> None:
    full = Full(tmp_path)
    snap, fetched, frontier = full.snaps[H], full.after(H, H + 1), None
    if case == "state":  # the state after height 9 claimed to be the state after 10
        older = full.snaps[H - 1]
        # The executor's own height check would catch a relabelled state: fake it too.
        ex = full.rc.make_executor()
        ex.restore(older.executor)
        ex.apply_block(H, snap.block.digest, ())
        snap = SnapshotFile(snap.committee_id, snap.block, snap.roots, ex.snapshot())
    elif case == "frontier":
        size, hashes = full.frontier(H)
        frontier = (size, [b"\x01" * 32, *hashes[1:]])
    elif case == "frontier-shape":
        size, hashes = full.frontier(H)
        frontier = (size, hashes[:1])
    elif case == "unlinked":
        fetched = full.after(H + 1, H + 2)
    elif case == "not-final":
        fetched = [FinalizedBlock(fb.block, None, None, (), "") for fb in fetched]
    elif case == "committee":
        snap = SnapshotFile(b"\x02" * 32, snap.block, snap.roots, snap.executor)
    elif case == "executor":
        snap = SnapshotFile(snap.committee_id, snap.block, snap.roots,
                            full.snaps[H - 1].executor)
    with pytest.raises(SyncRefused, match=rf"^{WHO.replace('(', '[(]').replace(')', '[)]')}: "
                       rf"{message}"):
        full.verify(snap, fetched, frontier)


def test_a_snapshot_no_fetched_block_certifies_is_refused(tmp_path: Path) -> None:
    full = Full(tmp_path, lag_from=H + 1)  # blocks 11.. claim height 9 at most
    with pytest.raises(SyncRefused, match=r"no finalised block up to 12 certifies the roots of "
                       r"height 10 or later"):
        full.verify(full.snaps[H], full.after(H, H + 2))


def test_a_synced_log_restarts_from_its_snapshot_or_refuses_without_one(tmp_path: Path
                                                                         ) -> None:
    full = Full(tmp_path)
    snap = full.snaps[H]
    blocks = full.verify(snap, full.after(H, H + 1))
    size, hashes = full.frontier(H)
    synced = Synced(b"\x01" * 32, snap, size, tuple(hashes), blocks)
    s = Store.open(tmp_path / "synced.sqlite3", full.rc.committee,
                   signing_key=full.rc.chain.keys[1])
    s.install_base(snap.block, synced.log_size, synced.frontier, synced.blocks)
    for fb in full.after(H + 1, 14):
        s.append_block(fb.block, fb.finalization)
    assert (s.height, s.root()) == (14, full.store.root())
    snapshots = SnapshotStore(tmp_path / "snapshots")
    snapshots.write(snap)
    executor = full.rc.make_executor()

    def apply(block):  # type: ignore[no-untyped-def]
        return executor.apply_block(block.height, block.digest, block.commands).state_root

    restored = restore_and_replay(s, executor, snapshots, apply)
    assert (restored.snapshot_height, restored.replayed) == (H, 14 - H)
    assert executor.state_root() == full.rc.roots.state_root
    snapshots.clear()
    with pytest.raises(OperatorError, match=rf"this member state-synced \(its log starts at "
                       rf"height {H + 1}\) and no snapshot at or above height {H} in .* is "
                       rf"usable; move the data directory away and start with "
                       rf"node.state_sync = true to sync again"):
        restore_and_replay(s, full.rc.make_executor(), snapshots, apply)
