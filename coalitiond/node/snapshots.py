"""Executor snapshots on disk, and the restart that starts from one (docs/formats.md §8).

A member writes its executor's snapshot every `node.snapshot_interval` blocks into
`<data_dir>/snapshots/` (one file per height, written to a temporary name, fsynced, renamed,
directory fsynced; the newest `node.snapshots_kept` are kept). At start `restore_and_replay`
takes the newest snapshot that passes every check and replays only the blocks stored after
it; a snapshot that fails a check is refused with one log line naming the file and why, and
the next older one (at last: a replay from genesis) is tried. The signed log is never
touched: a snapshot is a cache of what replaying the log gives, so losing or refusing one
costs time, never data.

Checks, in order: the file's BLAKE3 trailer (a flipped byte anywhere), its frame, the
committee, that the store holds the very block it names at its height, that its log size and
root are the store's checkpoint at that height, that the restored executor's own state root is
the one the file names — and then the root a *finalised block certifies* (docs/protocol.md
§7): while replaying the blocks after the snapshot, every block whose `executed_height` is the
snapshot's height or a replayed one must carry exactly the roots this restart computed for that
height. A mismatch refuses the snapshot (and everything replayed on top of it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from ..components.base import MalformedSnapshot
from ..components.executor import Executor
from ..config.node import DEFAULT_SNAPSHOTS_KEPT, MAX_SNAPSHOTS_KEPT
from ..consensus.types import Block, CertifiedRoots, MalformedMessage
from ..log.checkpoint import CheckpointError, verify_checkpoint
from ..log.sqlite import Store
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError, OperatorError
from ..primitives.identity import ID_LEN
from ..primitives.identity import digest as blake3_digest
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge

log = get_logger(__name__)

SNAPSHOT_DIR: Final = "snapshots"
#: Followers' positions: `<data_dir>/follow/<followed committee id, hex>/`, same files.
FOLLOW_DIR: Final = "follow"
SNAPSHOT_TAG: Final = "coalitiond-snapshot"
SNAPSHOT_SCHEMA: Final = 1
#: One snapshot file at most (the executor's own bound plus the frame).
MAX_SNAPSHOT_FILE: Final = (1 << 31) + (1 << 20)
#: Snapshot files looked at when restarting (newest first); more are ignored, not read.
MAX_SNAPSHOT_CANDIDATES: Final = MAX_SNAPSHOTS_KEPT
#: Heights whose roots a restart remembers while waiting for the block that certifies them
#: (a block certifies a height a few below its own; older ones are dropped).
MAX_PENDING_ROOTS: Final = 4096
_CHECK_LEN: Final = 32
_SUFFIX: Final = ".snapshot"

SNAPSHOTS_WRITTEN = counter("snapshots_written_total", "Executor snapshots written to disk")
SNAPSHOTS_SKIPPED = counter("snapshots_skipped_total",
                            "Snapshots not written because the previous one was still being "
                            "written")
SNAPSHOTS_REFUSED = counter("snapshots_refused_total",
                            "Snapshot files refused at restart (damaged, or not certified)")
RESTORED_HEIGHT = gauge("snapshot_restored_height",
                        "Height of the snapshot the last restart began from (0: genesis)")


class SnapshotRefused(LocalError):
    """A snapshot file this member will not start from (damaged, foreign, or not what the
    certified chain says); the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """One snapshot: the executor's state after `block` (and every block below it), with the
    roots it had there (`roots.height == block.height`)."""

    committee_id: bytes
    block: Block
    roots: CertifiedRoots
    executor: bytes

    @property
    def height(self) -> int:
        return self.block.height

    def encode(self) -> bytes:
        payload = encode([SNAPSHOT_TAG, SNAPSHOT_SCHEMA, self.committee_id, self.block.encode(),
                          self.roots.state_root, self.roots.log_size, self.roots.log_root,
                          self.executor])
        return payload + blake3_digest(payload)

    @classmethod
    def decode(cls, data: bytes, where: str) -> SnapshotFile:
        """SnapshotRefused unless `data` is an intact snapshot file."""
        if len(data) < _CHECK_LEN or len(data) > MAX_SNAPSHOT_FILE:
            raise SnapshotRefused(f"{where}: {len(data)} bytes is not a snapshot file")
        payload, check = data[:-_CHECK_LEN], data[-_CHECK_LEN:]
        if blake3_digest(payload) != check:
            raise SnapshotRefused(f"{where}: damaged (its BLAKE3 check does not match the "
                                  f"contents)")
        try:
            obj = decode(payload, max_size=MAX_SNAPSHOT_FILE)
            ok = (isinstance(obj, list) and len(obj) == 8 and obj[0] == SNAPSHOT_TAG
                  and obj[1] == SNAPSHOT_SCHEMA and not isinstance(obj[1], bool))
            if not ok:
                raise SnapshotRefused(f"{where}: not a [\"{SNAPSHOT_TAG}\", "
                                      f"{SNAPSHOT_SCHEMA}, ...] 8-item array")
            _, _, committee_id, block_bytes, state_root, log_size, log_root, body = obj
            if not (isinstance(committee_id, bytes) and len(committee_id) == ID_LEN
                    and isinstance(block_bytes, bytes) and isinstance(body, bytes)
                    and isinstance(state_root, bytes) and len(state_root) == ID_LEN
                    and isinstance(log_root, bytes) and len(log_root) == ID_LEN
                    and isinstance(log_size, int) and not isinstance(log_size, bool)
                    and log_size >= 0):
                raise SnapshotRefused(f"{where}: fields of the wrong type")
            block = Block.decode(block_bytes)
        except (EncodingError, MalformedMessage) as exc:
            raise SnapshotRefused(f"{where}: does not decode: {exc}") from None
        return cls(committee_id, block,
                   CertifiedRoots(block.height, state_root, log_size, log_root), body)


class SnapshotStore:
    """The snapshot files of one replica (`<dir>/<height, 20 digits>.snapshot`)."""

    def __init__(self, directory: Path, keep: int = DEFAULT_SNAPSHOTS_KEPT) -> None:
        if not 1 <= keep <= MAX_SNAPSHOTS_KEPT:
            raise LocalError(f"snapshots kept must be 1..{MAX_SNAPSHOTS_KEPT}, got {keep}")
        self.directory = Path(directory)
        self.keep = keep

    def path(self, height: int) -> Path:
        return self.directory / f"{height:020d}{_SUFFIX}"

    def heights(self) -> list[int]:
        """Heights of the snapshot files present, newest first (temporary files ignored)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            stem = name.removesuffix(_SUFFIX)
            if name.endswith(_SUFFIX) and len(stem) == 20 and stem.isdigit():
                out.append(int(stem))
        return sorted(out, reverse=True)

    def read(self, height: int) -> SnapshotFile:
        path = self.path(height)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SNAPSHOT_FILE + 1)
        except OSError as exc:
            raise SnapshotRefused(f"{path}: cannot read: {exc.strerror or exc}") from None
        snap = SnapshotFile.decode(data, str(path))
        if snap.height != height:
            raise SnapshotRefused(f"{path}: holds the state at height {snap.height}")
        return snap

    def write(self, snap: SnapshotFile) -> Path:
        """Atomically: a temporary file, fsync, rename, fsync of the directory; then delete
        all but the newest `keep`. A crash leaves the old set, or the new one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(snap.height)
        tmp = path.with_suffix(".tmp")
        data = snap.encode()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._sync_directory()
        for height in self.heights()[self.keep:]:
            with contextlib.suppress(FileNotFoundError):
                self.path(height).unlink()
        for stale in self.directory.glob("*.tmp"):  # left by a crash mid-write
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        return path

    def clear(self) -> None:
        """Delete every snapshot file (they are a cache: a follower that found one wrong)."""
        for height in self.heights():
            with contextlib.suppress(FileNotFoundError):
                self.path(height).unlink()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------
# restart


@dataclass(frozen=True, slots=True)
class Restored:
    """How a restart rebuilt the executor."""

    #: Height of the snapshot it started from (0: replayed from genesis).
    snapshot_height: int
    #: Blocks replayed after it.
    replayed: int
    #: A height (≥ the snapshot's) whose certified roots this restart's roots matched; None
    #: when no stored block certifies one yet (the member's own snapshot is trusted, see
    #: docs/decisions.md) or when replaying from genesis.
    certified_at: int | None
    #: One line per snapshot refused on the way.
    refused: tuple[str, ...] = ()


#: Apply one finalised block to the executor; returns its state root.
ApplyBlock = Callable[[Block], bytes]


class CertifiedReplay:
    """Replays stored blocks after `start` and checks the roots blocks certify against the
    roots the replay computes (the snapshot's, then every replayed height's)."""

    def __init__(self, start: CertifiedRoots, check: bool) -> None:
        self.check = check
        self.start = start.height
        self.mine: dict[int, tuple[bytes, int]] = {start.height: (start.state_root,
                                                                   start.log_size)}
        self.log_size = start.log_size
        self.certified_at: int | None = None

    def block(self, block: Block, apply: ApplyBlock, where: str) -> None:
        claimed = block.roots
        if self.check and claimed.height > 0 and claimed.height in self.mine:
            mine = self.mine[claimed.height]
            if mine != (claimed.state_root, claimed.log_size):
                raise SnapshotRefused(
                    f"{where}: block {block.height} certifies state root "
                    f"{claimed.state_root.hex()[:16]} and log size {claimed.log_size} at "
                    f"height {claimed.height}; starting from this snapshot gives "
                    f"{mine[0].hex()[:16]} and {mine[1]}")
            if self.certified_at is None:
                self.certified_at = claimed.height
            # Certified heights never go down along the chain: older roots are not needed.
            for h in [h for h in self.mine if h < claimed.height]:
                del self.mine[h]
        root = apply(block)
        self.log_size += len(block.commands)
        self.mine[block.height] = (root, self.log_size)
        while len(self.mine) > MAX_PENDING_ROOTS:
            del self.mine[min(self.mine)]


def _check_against_store(s: Store, snap: SnapshotFile, where: str) -> None:
    if snap.height > s.height:
        raise SnapshotRefused(f"{where}: height {snap.height} is above the log's head "
                              f"{s.height}")
    if s.block(snap.height).digest != snap.block.digest:
        raise SnapshotRefused(f"{where}: block {snap.height} is not the one the log holds")
    try:
        cp = verify_checkpoint(s.checkpoint(snap.height), s.member)
    except CheckpointError as exc:
        raise SnapshotRefused(f"{where}: the log's checkpoint at {snap.height}: {exc}") from None
    if (cp.size, cp.root) != (snap.roots.log_size, snap.roots.log_root):
        raise SnapshotRefused(f"{where}: log size/root differ from the log's checkpoint at "
                              f"height {snap.height}")


def _restore(s: Store, executor: Executor, snapshots: SnapshotStore, height: int
             ) -> SnapshotFile:
    where = str(snapshots.path(height))
    snap = snapshots.read(height)
    _check_against_store(s, snap, where)
    restore_replica(executor, snap, s.committee.committee_id, where)
    return snap


def restore_replica(executor: Executor, snap: SnapshotFile, committee_id: bytes, where: str
                    ) -> None:
    """Replace `executor`'s state by the snapshot's (a replica of `committee_id`), checking
    that it is the state of the snapshot's block with the root the snapshot names."""
    if snap.committee_id != committee_id:
        raise SnapshotRefused(f"{where}: a snapshot of committee {snap.committee_id.hex()[:16]}")
    try:
        # Our own file (its checksum held): the component may skip per-row checks; the root
        # comparison below covers every row.
        executor.restore(snap.executor, own=True)
    except MalformedSnapshot as exc:
        raise SnapshotRefused(f"{where}: {exc}") from None
    if (executor.executed_height, executor.last_digest) != (snap.height, snap.block.digest):
        raise SnapshotRefused(f"{where}: the executor state is of another block")
    root = executor.state_root()
    if root != snap.roots.state_root:
        raise SnapshotRefused(f"{where}: the restored state has root {root.hex()[:16]}, the "
                              f"file says {snap.roots.state_root.hex()[:16]}")


def restore_and_replay(s: Store, executor: Executor, snapshots: SnapshotStore | None,
                       apply: ApplyBlock) -> Restored:
    """Rebuild `executor` (fresh, as built) from the newest acceptable snapshot plus the
    blocks after it, or from genesis. Store thread, before the member starts."""
    fresh = executor.snapshot()
    refused: list[str] = []
    # A state-synced log holds nothing below its base: only snapshots from there on fit it.
    lowest = 0 if s.base is None else s.base.height
    candidates = [] if snapshots is None else [
        h for h in snapshots.heights() if lowest <= h <= s.height][:MAX_SNAPSHOT_CANDIDATES]
    for height in candidates:
        assert snapshots is not None
        where = str(snapshots.path(height))
        try:
            snap = _restore(s, executor, snapshots, height)
            replay = CertifiedReplay(snap.roots, check=True)
            for h in range(height + 1, s.height + 1):
                replay.block(s.block(h), apply, where)
        except SnapshotRefused as exc:
            SNAPSHOTS_REFUSED.inc()
            log.error("snapshot.refused", reason=str(exc))
            refused.append(str(exc))
            executor.restore(fresh)
            continue
        RESTORED_HEIGHT.set(height)
        return Restored(height, s.height - height, replay.certified_at, tuple(refused))
    if s.base is not None:
        raise OperatorError(
            f"{s.path}: this member state-synced (its log starts at height "
            f"{s.base.height + 1}) and no snapshot at or above height {s.base.height} in "
            f"{'(none)' if snapshots is None else snapshots.directory} is usable"
            f"{': ' + refused[-1] if refused else ''}; move the data directory away and "
            f"start with node.state_sync = true to sync again")
    # From genesis: what the certified chain holds, as before snapshots existed (the roots
    # blocks certify are checked by the consensus core from here on, not on replay).
    replay = CertifiedReplay(CertifiedRoots(0, b"", 0, b""), check=False)
    for h in range(1, s.height + 1):
        replay.block(s.block(h), apply, "genesis")
    RESTORED_HEIGHT.set(0)
    return Restored(0, s.height, None, tuple(refused))


# ---------------------------------------------------------------------------------------
# writing, off the consensus loop


class SnapshotWriter:
    """Takes snapshots the voter offers every `interval` blocks and writes them in a worker
    thread, one at a time: while one is being written, the next offered is skipped (so at
    most one snapshot's bytes wait in memory and the consensus loop never waits on a disk)."""

    def __init__(self, snapshots: SnapshotStore, committee_id: bytes, interval: int) -> None:
        self.snapshots = snapshots
        self.committee_id = committee_id
        self.interval = interval
        self._send, self._receive = trio.open_memory_channel[SnapshotFile](0)
        self._busy = False

    def due(self, height: int) -> bool:
        return self.interval > 0 and height % self.interval == 0 and not self._busy

    def offer(self, block: Block, roots: CertifiedRoots, executor: Executor) -> None:
        """The consensus loop, right after executing `block`: snapshot now if due."""
        if not self.due(block.height):
            if self.interval > 0 and block.height % self.interval == 0:
                SNAPSHOTS_SKIPPED.inc()
            return
        snap = SnapshotFile(self.committee_id, block, roots, executor.snapshot())
        try:
            self._send.send_nowait(snap)
        except trio.WouldBlock:
            SNAPSHOTS_SKIPPED.inc()
            return
        self._busy = True

    async def run(self) -> None:
        async for snap in self._receive:
            try:
                path = await trio.to_thread.run_sync(self.snapshots.write, snap)
            except OSError as exc:
                # A cache: the log is intact, the next restart replays a little more.
                log.error("snapshot.write_failed", height=snap.height,
                          error=exc.strerror or str(exc))
            else:
                SNAPSHOTS_WRITTEN.inc()
                log.info("snapshot.written", height=snap.height, path=str(path))
            finally:
                self._busy = False
