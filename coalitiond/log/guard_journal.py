"""The signer-guard journal: guard records made durable by one `O_DSYNC` write on the event
loop, before the signatures they guard leave (docs/formats.md, "Guard journal").

A member's guard records (docs/protocol.md §8) live in the store's `signer_guard` table. A
SQLite commit with its fsync, through the store's worker thread, costs several milliseconds
on a busy machine and sat on every view's path three times (the proposal, the notarise and
the finalise vote). The journal takes that place: the consensus loop writes a round's records
here, in one `pwrite` to a file opened with `O_DSYNC` (durable when the call returns), then
sends; the same records reach `signer_guard` with the store's next commit (usually the
round's own block append), and only then may their slots be written over.

File `guard.journal` next to the store: JOURNAL_SLOTS slots of RECORD_SIZE bytes, zero-filled
and fsynced when created, so a write changes no file metadata and costs one device flush. A
record: epoch u64, view u64, kind u8, digest 32 bytes, 7 zero bytes, check 8 bytes (BLAKE3
of RECORD_DOMAIN and the 56 bytes before it); little-endian. Slots are written in a ring;
a slot is free again once the store holds its record (`settled`).

At open, every slot whose check holds is a record this member wrote. They are all put into
the store's `signer_guard` table (one transaction; a record already there is a no-op; one that
contradicts it is a SignerConflict and the member does not start), then the file is zeroed
(one write, O_DSYNC) and the journal starts again from slot 0. A slot that is neither zero
nor a record whose check holds (`damaged_slots`) may be a torn write, never acknowledged —
or an acknowledged record damaged since (a bad sector, a power cut rewriting its neighbour):
the two cannot be told apart, so the member starts as one whose guard is lost (it signs
nothing until a certificate moves it past every view it may have signed, protocol §8).

Before writing, each record is checked against every record of the last GUARD_CHECK_VIEWS
views (the store's and the journal's, in memory): the same rule as the store's
(`Store._guard_one`), so a conflicting signature is refused before it could leave, not after.
The store checks every record again when it takes it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ..consensus.limits import MAX_VIEWS_BEHIND
from ..primitives.identity import digest as blake3_digest
from .errors import SignerConflict, StoreOpenError, StoreUsageError
from .sqlite import MAX_EVENT_ITEMS, GuardRecord, Store

JOURNAL_FILENAME: Final = "guard.journal"
#: Bytes of one record.
RECORD_SIZE: Final = 64
#: Records the journal holds: the store must take them faster than this (it takes them at
#: every commit; the voter commits when MAX_UNSETTLED_GUARD are waiting).
JOURNAL_SLOTS: Final = 4096
#: Records written and not yet in the store at most; a write beyond it is refused (a bug:
#: the voter commits before this many wait).
MAX_UNSETTLED: Final = JOURNAL_SLOTS // 2
#: The domain of a record's check.
RECORD_DOMAIN: Final = b"coalitiond guard journal v1"
#: Views below the highest recorded one whose records the in-memory conflict check keeps
#: (the core signs in no view further behind, consensus.rules.guard_allows).
GUARD_CHECK_VIEWS: Final = MAX_VIEWS_BEHIND + 1

_BODY = struct.Struct("<QQB32s7x")


def journal_path(store_path: Path) -> Path:
    return Path(store_path).parent / JOURNAL_FILENAME


def encode_record(g: GuardRecord) -> bytes:
    body = _BODY.pack(g.epoch, g.view, int(g.kind), g.digest)
    return body + blake3_digest(RECORD_DOMAIN + body)[:8]


def decode_record(raw: bytes) -> GuardRecord | None:
    """The record in a slot, or None for an empty, torn or foreign slot."""
    if len(raw) != RECORD_SIZE:
        return None
    body, check = raw[:_BODY.size], raw[_BODY.size:]
    if blake3_digest(RECORD_DOMAIN + body)[:8] != check:
        return None
    epoch, view, kind, digest = _BODY.unpack(body)
    return GuardRecord(epoch, view, kind, digest)


def _conflicting_kind(kind: int) -> int | None:
    # As the store's rule: nullify and finalize exclude each other within one view.
    return {2: 1, 1: 2}.get(kind)


class GuardJournal:
    """One member's guard journal. Used from the event loop only (`write`, `settled`)."""

    def __init__(self, path: Path, fd: int, known: Sequence[GuardRecord],
                 damaged_slots: int = 0) -> None:
        self.path = path
        #: Slots found at open that were neither empty nor a checked record: the member's
        #: guard may have lost a record (see the module docstring).
        self.damaged_slots = damaged_slots
        self._fd = fd
        self._next = 0  # slot of the next record
        self._written = 0  # records written since open
        self._settled = 0  # of those, how many the store holds
        #: (epoch, view, kind) → digest, the last GUARD_CHECK_VIEWS views.
        self._recent: dict[tuple[int, int, int], bytes] = {}
        self._top = 0
        for g in known:
            self._remember(g)

    @classmethod
    def open(cls, path: Path, store: Store, epoch: int) -> GuardJournal:
        """Open (creating it if missing) the journal at `path`; put every record it holds
        into `store` (store thread, before the member starts)."""
        path = Path(path)
        try:
            if not path.exists():
                _create(path)
            fd = os.open(path, os.O_RDWR | os.O_DSYNC | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise StoreOpenError(f"{path}: cannot open the guard journal: "
                                 f"{e.strerror or e}") from None
        try:
            size = os.fstat(fd).st_size
            if size != JOURNAL_SLOTS * RECORD_SIZE:
                raise StoreOpenError(f"{path}: guard journal of {size} bytes, expected "
                                     f"{JOURNAL_SLOTS * RECORD_SIZE}; the store is intact: "
                                     f"move the file aside and start with --guard-lost")
            data = os.pread(fd, size, 0)
            slots = [data[i:i + RECORD_SIZE] for i in range(0, size, RECORD_SIZE)]
            decoded = [decode_record(slot) for slot in slots]
            records = [r for r in decoded if r is not None]
            damaged = sum(1 for slot, r in zip(slots, decoded, strict=True)
                          if r is None and any(slot))
            for i in range(0, len(records), MAX_EVENT_ITEMS):
                store.record_event(guard=records[i:i + MAX_EVENT_ITEMS])
            if records or damaged:
                # All of it is in the store now: a clean ring, so a damaged slot is
                # reported once, not at every start until it is written over.
                _write_all(fd, bytes(size), 0)
            top = store.highest_signed_view(epoch) or 0
            known = [GuardRecord(e, v, k, d) for e, v, k, d in store.guard_records(
                epoch, since_view=max(0, top - GUARD_CHECK_VIEWS))]
        except OSError as e:
            os.close(fd)
            raise StoreOpenError(f"{path}: cannot read or reset the guard journal: "
                                 f"{e.strerror or e}") from None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, known, damaged)

    def write(self, records: Sequence[GuardRecord]) -> None:
        """Make `records` durable (one write, O_DSYNC) after checking them against every
        recent record; all or nothing: a SignerConflict writes none of them."""
        if not records:
            return
        if self._written - self._settled + len(records) > MAX_UNSETTLED:
            raise StoreUsageError(f"guard journal: {self._written - self._settled} records "
                                  f"not yet in the store, {len(records)} more would exceed "
                                  f"{MAX_UNSETTLED}")
        fresh: dict[tuple[int, int, int], bytes] = {}
        for g in records:
            kind = int(g.kind)
            if not 0 <= kind <= 3 or len(g.digest) != 32:
                raise StoreUsageError(f"signer guard: kind {kind} / digest of "
                                      f"{len(g.digest)} bytes is not a guard record")
            key = (g.epoch, g.view, kind)
            recorded = self._recent.get(key, fresh.get(key))
            if recorded is not None and recorded != g.digest:
                raise SignerConflict(g.epoch, g.view, kind, g.digest, kind, recorded)
            other = _conflicting_kind(kind)
            if other is not None:
                okey = (g.epoch, g.view, other)
                recorded = self._recent.get(okey, fresh.get(okey))
                if recorded is not None:
                    raise SignerConflict(g.epoch, g.view, kind, g.digest, other, recorded)
            fresh[key] = g.digest
        data = b"".join(encode_record(g) for g in records)
        first = min(len(records), JOURNAL_SLOTS - self._next)
        try:
            _write_all(self._fd, data[:first * RECORD_SIZE], self._next * RECORD_SIZE)
            if first < len(records):
                _write_all(self._fd, data[first * RECORD_SIZE:], 0)
        except OSError as e:
            # Nothing guarded by these records has been sent: the member stops here.
            raise StoreOpenError(f"{self.path}: cannot write the guard journal: "
                                 f"{e.strerror or e}") from None
        self._next = (self._next + len(records)) % JOURNAL_SLOTS
        self._written += len(records)
        for g in records:
            self._remember(g)

    @property
    def written(self) -> int:
        """Records written since open (the voter's sequence for `settled`)."""
        return self._written

    def settled(self, through: int) -> None:
        """The store now holds the first `through` records written since open."""
        self._settled = max(self._settled, min(through, self._written))

    def remember(self, records: Sequence[GuardRecord]) -> None:
        """Records the store took directly (a round that finalises commits its guard records
        with its block, not through the journal): later writes are checked against them."""
        for g in records:
            self._remember(g)

    def close(self) -> None:
        os.close(self._fd)

    def _remember(self, g: GuardRecord) -> None:
        self._recent[(g.epoch, g.view, int(g.kind))] = g.digest
        if g.view > self._top:
            self._top = g.view
            floor = self._top - GUARD_CHECK_VIEWS
            if len(self._recent) > 8 * GUARD_CHECK_VIEWS:
                self._recent = {k: d for k, d in self._recent.items() if k[1] >= floor}


def _write_all(fd: int, data: bytes, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _create(path: Path) -> None:
    """A zero-filled journal, durable with its directory entry before first use."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, bytes(JOURNAL_SLOTS * RECORD_SIZE), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
