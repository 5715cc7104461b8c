"""Executor snapshots: a restart starts from the newest good one and replays only the blocks
after it; a damaged snapshot, or one whose state is not what the finalised blocks certify, is
refused with one line and an older one (at last: genesis) is used; nothing committed is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest

from coalitiond.commands.envelope import Envelope
from coalitiond.components.executor import Executor
from coalitiond.consensus.limits import MAX_VIEWS_BEHIND
from coalitiond.consensus.types import Block, VoteKind
from coalitiond.log.sqlite import GuardRecord, Store
from coalitiond.node.journal import BlockJournal
from coalitiond.node.snapshots import (
    MAX_SNAPSHOT_CANDIDATES,
    Restored,
    SnapshotFile,
    SnapshotRefused,
    SnapshotStore,
    restore_and_replay,
)
from coalitiond.node.voter import VoterStatus, recover
from coalitiond.primitives.errors import LocalError
from coalitiond.testing.rooted_chain import RootedChain


def _apply(executor: Executor):  # type: ignore[no-untyped-def]
    def apply(block: Block) -> bytes:
        return executor.apply_block(block.height, block.digest, block.commands,
                                    checked=[Envelope.decode(c) for c in block.commands]
                                    ).state_root
    return apply


class Fixture:
    def __init__(self, tmp_path: Path) -> None:
        self.rc = RootedChain(seed=7)
        self.store = Store.open(tmp_path / "log.sqlite3", self.rc.committee,
                                signing_key=self.rc.chain.keys[0])
        self.snaps = SnapshotStore(tmp_path / "snapshots", keep=3)
        self.snapshot_of: dict[int, SnapshotFile] = {}

    def grow(self, blocks: int, *, snapshot_every: int = 10, lag: int = 1) -> None:
        for _ in range(blocks):
            height = self.rc.chain.head.height + 1
            claim = self.rc.history.get(height - lag) if lag > 1 else None
            item = self.rc.next((self.rc.envelope(b"%d" % height),), claim=claim)
            self.store.append_blocks([item], verify_signatures=False)
            snap = SnapshotFile(self.rc.committee.committee_id, item.block, self.rc.roots,
                                self.rc.executor.snapshot())
            self.snapshot_of[height] = snap
            if height % snapshot_every == 0:
                self.snaps.write(snap)

    def restart(self) -> tuple[Executor, Restored]:
        executor = self.rc.make_executor()
        return executor, restore_and_replay(self.store, executor, self.snaps, _apply(executor))

    def assert_caught_up(self, executor: Executor) -> None:
        # Nothing committed is lost: the state is exactly the one of replaying every block.
        assert executor.executed_height == self.store.height
        assert executor.state_root() == self.rc.roots.state_root
        assert executor.snapshot() == self.rc.executor.snapshot()


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def test_restart_starts_from_the_newest_snapshot_and_replays_only_after_it(fx: Fixture
                                                                          ) -> None:
    fx.grow(35)
    executor, restored = fx.restart()
    # Block 31 claims the roots after 30: the snapshot's state is certified.
    assert restored == Restored(30, 5, 30)
    fx.assert_caught_up(executor)


def test_only_the_newest_snapshots_are_kept(fx: Fixture) -> None:
    fx.grow(45)
    (fx.snaps.directory / f"{33:020d}.tmp").write_bytes(b"half a snapshot: a crash")
    fx.grow(5)
    assert fx.snaps.heights() == [50, 40, 30]
    assert sorted(p.name for p in fx.snaps.directory.iterdir()) == [
        f"{h:020d}.snapshot" for h in (30, 40, 50)]


def test_a_flipped_byte_is_refused_and_the_older_snapshot_used(fx: Fixture) -> None:
    fx.grow(35)
    path = fx.snaps.path(30)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    executor, restored = fx.restart()
    assert (restored.snapshot_height, restored.replayed) == (20, 15)
    assert len(restored.refused) == 1
    assert str(path) in restored.refused[0] and "damaged" in restored.refused[0]
    fx.assert_caught_up(executor)


def test_every_snapshot_damaged_falls_back_to_a_replay_from_genesis(fx: Fixture) -> None:
    fx.grow(35)
    for height in fx.snaps.heights():
        path = fx.snaps.path(height)
        path.write_bytes(path.read_bytes()[:-1])  # truncated: the trailer check fails
    executor, restored = fx.restart()
    assert (restored.snapshot_height, restored.replayed, len(restored.refused)) == (0, 35, 3)
    fx.assert_caught_up(executor)


def _forged(fx: Fixture, height: int, skip: int) -> SnapshotFile:
    """A snapshot at `height` that is intact and consistent in itself (its file names the
    root its state has) but built by a replay that left out block `skip`'s command."""
    executor = fx.rc.make_executor()
    for h in range(1, height + 1):
        b = fx.store.block(h)
        executor.apply_block(h, b.digest, () if h == skip else b.commands)
    honest = fx.snapshot_of[height]
    assert executor.state_root() != honest.roots.state_root
    roots = honest.roots.__class__(height, executor.state_root(), honest.roots.log_size,
                                   honest.roots.log_root)
    return SnapshotFile(honest.committee_id, honest.block, roots, executor.snapshot())


def test_a_snapshot_whose_root_no_finalised_block_certifies_is_refused(fx: Fixture) -> None:
    fx.grow(35)
    fx.snaps.write(_forged(fx, 30, skip=17))
    executor, restored = fx.restart()
    assert restored.snapshot_height == 20
    assert len(restored.refused) == 1
    assert "block 31 certifies state root" in restored.refused[0]
    fx.assert_caught_up(executor)


def test_a_height_no_block_certifies_is_checked_at_the_next_certified_height(fx: Fixture
                                                                            ) -> None:
    fx.grow(30)
    # Block 31 claims 29 again (its parent's claim), block 32 claims 31: no block claims 30.
    for height in range(31, 36):
        claim = fx.rc.history[29 if height == 31 else height - 1]
        item = fx.rc.next((fx.rc.envelope(b"%d" % height),), claim=claim)
        fx.store.append_blocks([item], verify_signatures=False)
    assert 30 not in [fx.store.block(h).executed_height for h in range(31, 36)]
    executor, restored = fx.restart()
    assert restored == Restored(30, 5, 31)
    fx.assert_caught_up(executor)
    # A forged snapshot at 30 gives other roots at 31, which block 32 certifies.
    fx.snaps.write(_forged(fx, 30, skip=5))
    executor, restored = fx.restart()
    assert restored.snapshot_height == 20
    assert "block 32 certifies state root" in restored.refused[0]
    assert "at height 31" in restored.refused[0]
    fx.assert_caught_up(executor)


def test_a_snapshot_at_the_head_is_the_members_own_until_a_block_certifies_it(fx: Fixture
                                                                              ) -> None:
    fx.grow(40)
    executor, restored = fx.restart()
    assert restored == Restored(40, 0, None)
    fx.assert_caught_up(executor)


def test_a_snapshot_of_another_chain_is_refused(fx: Fixture) -> None:
    fx.grow(25)
    other = RootedChain(seed=7)  # the same committee, other blocks
    for height in range(1, 21):
        other.next((other.envelope(b"other %d" % height),))
    fx.snaps.write(SnapshotFile(fx.rc.committee.committee_id, other.chain.head, other.roots,
                                other.executor.snapshot()))
    executor, restored = fx.restart()
    assert restored.snapshot_height == 10
    assert "is not the one the log holds" in restored.refused[0]
    fx.assert_caught_up(executor)


def test_recover_reports_the_snapshot_and_the_roots(fx: Fixture) -> None:
    fx.grow(23)
    executor = fx.rc.make_executor()
    status = VoterStatus()
    durable = recover(fx.store, fx.rc.committee, executor,
                      BlockJournal(fx.rc.committee.quorum, 0), status, False, fx.snaps)
    assert status.restored_from == 20
    assert (status.height, status.state_root) == (23, fx.rc.roots.state_root)
    assert durable.executed == fx.rc.roots
    assert durable.tip == fx.store.block(23)


def test_snapshot_store_bounds(tmp_path: Path) -> None:
    with pytest.raises(LocalError):
        SnapshotStore(tmp_path, keep=0)
    with pytest.raises(LocalError):
        SnapshotStore(tmp_path, keep=MAX_SNAPSHOT_CANDIDATES + 1)
    with pytest.raises(SnapshotRefused, match="not a snapshot file"):
        SnapshotFile.decode(b"short", "x")


def test_recover_loads_only_the_guard_window_the_core_can_still_sign_in(fx: Fixture) -> None:
    # A long-running member holds guard rows for every view it ever signed in; the core
    # never signs below `start view − MAX_VIEWS_BEHIND`, so a restart reads only those.
    fx.grow(3)
    epoch = fx.rc.committee.epoch
    fx.store.record_event(guard=[GuardRecord(epoch, v, int(VoteKind.NOTARIZE),
                                             bytes([v % 256]) * 32) for v in range(1, 301)])
    durable = recover(fx.store, fx.rc.committee, fx.rc.make_executor(),
                      BlockJournal(fx.rc.committee.quorum, 0), VoterStatus(), False, fx.snaps)
    views = sorted(r.view for r in durable.guard)
    assert views == list(range(300 - MAX_VIEWS_BEHIND - 1, 301))


def test_a_snapshot_whose_state_is_not_the_root_it_names_is_refused(fx: Fixture) -> None:
    # The component restores a member's own snapshot without checking each row again
    # (Feed.restore_own); the restored state's root must then be the one the file names.
    fx.grow(35)
    honest = fx.snapshot_of[30]
    replica = fx.rc.make_executor()
    replica.restore(honest.executor)
    feed: Any = replica.component
    feed._entries[5] = feed._entries[5][:-1] + b"\x00"  # one entry's last byte changed
    fx.snaps.write(SnapshotFile(honest.committee_id, honest.block, honest.roots,
                                replica.snapshot()))
    executor, restored = fx.restart()
    assert restored.snapshot_height == 20
    assert "the restored state has root" in restored.refused[0]
    fx.assert_caught_up(executor)


class RecordingConnection(sqlite3.Connection):
    """Records every statement the store runs."""

    statements: ClassVar[list[str]] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        RecordingConnection.statements.append(sql)
        return super().execute(sql, *args)


def test_opening_and_reading_blocks_never_scans_the_entries_table(fx: Fixture,
                                                                  tmp_path: Path) -> None:
    # Restart time must not grow with the log: the open-time tail check and the block
    # reader find a block's entries by their key range, not by scanning every entry.
    fx.grow(20)
    fx.store.close()
    RecordingConnection.statements = []
    s = Store.open(tmp_path / "log.sqlite3", fx.rc.committee, signing_key=fx.rc.chain.keys[0],
                   connection_factory=RecordingConnection)
    list(s.iter_finalized(15))
    reads = {q for q in RecordingConnection.statements if "FROM entries" in q}
    assert reads
    for q in reads:
        plan = " ".join(str(row[-1]) for row in s._conn.execute(
            "EXPLAIN QUERY PLAN " + q, [1] * q.count("?")))
        assert "SCAN entries" not in plan, (q, plan)
    s.close()
