"""The state machine both confluences share (docs/confluences.md §3): per-citizen read
positions, slot watermarks, the slot finality rule, sealed records waiting for their commit.

A confluence block can carry three kinds of member command (no client command):

* `ingest` — citizen entries `from … to−1` and the items among them; applied only if `from`
  is exactly where this citizen's position stands and the position does not go back;
* `route` (intents) / `attest` (ledger) — the commit of one sealed record, applied only if it
  is byte for byte the record the state sealed (one commit per key).

Records are sealed in `end_block`, deterministically, when their slot is final (§4 of the
doc): every spanned citizen has passed the slot (a `slot` entry ≥ it), or — failure mode
`partial` — the followed Almanac's tick is more than `partial_deadline_ticks` past the tick at
which the key was opened. Items arriving for a slot their citizen has already passed, or for
a key already sealed, are *late*: counted, never folded in, so a sealed record never changes.

The subclasses (`Intents`, `Ledger`) own what items do and what a sealed record holds.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from ...commands.envelope import Command, Envelope, InvalidCommand
from ...commands.member import MemberCommand
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, OperatorError
from ...primitives.identity import ID_LEN, digest, hash_structure
from ..base import (
    Applied,
    BlockContext,
    CommandResult,
    Component,
    MalformedSnapshot,
    QueryError,
    Refused,
    expect_args,
    is_uint,
)
from .records import INGEST_OP, Ingest, parse_ingest

FAILURE_MODES: Final = ("stall", "partial")
#: Sealed records waiting for their commit; while full, nothing more is sealed.
MAX_PENDING: Final = 4096
#: Committed keys remembered (reads, refusing a repeated commit with a clear reason).
COMMITTED_WINDOW: Final = 4096
#: Keys sealed in `partial` mode that some citizen has not passed yet (so its late items
#: are recognised); the oldest is forgotten beyond this.
MAX_CLOSED_KEYS: Final = 65_536
MAX_CITIZENS: Final = 256
MAX_DEADLINE_TICKS: Final = 1 << 32
MAX_QUERY_RECORDS: Final = 256
MAX_SNAPSHOT_SIZE: Final = 1 << 31
ZERO: Final = b"\x00" * ID_LEN

Key = tuple[Any, ...]


class Confluence(Component):
    """Shared part of `intents` and `ledger`."""

    #: Feed entry kinds this confluence reads.
    KINDS: ClassVar[frozenset[str]]
    #: The member op that commits one sealed record.
    OUTPUT_OP: ClassVar[str]

    def __init__(self, citizens: Sequence[bytes], failure_mode: str = "stall",
                 partial_deadline_ticks: int = 0, follow_almanac: bytes | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        self.citizens = tuple(citizens)
        self.failure_mode = failure_mode
        self.deadline = partial_deadline_ticks
        self.follow_almanac = follow_almanac
        self._params = dict(params or {})
        n = len(self.citizens)
        #: Per citizen: [height, block digest, next feed entry to read].
        self.positions: list[list[Any]] = [[0, ZERO, 0] for _ in range(n)]
        #: Per citizen: the highest slot it has passed (None: none yet).
        self.watermarks: list[int | None] = [None] * n
        #: Sealed, not yet committed: key -> record args, in seal order.
        self.pending: dict[Key, dict[str, Any]] = {}
        #: The last COMMITTED_WINDOW committed keys -> blake3 of their record.
        self.committed: dict[Key, bytes] = {}
        self.committed_count = 0
        #: Keys sealed while some citizen had not passed their slot (partial mode).
        self.closed: dict[Key, None] = {}
        self.late = 0
        self.duplicates = 0
        self.overflow = 0
        self._root: bytes | None = None

    # -- parameters -----------------------------------------------------------------------

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Confluence:
        known = {"citizens", "failure_mode", "follow_almanac", "partial_deadline_ticks"}
        if not set(params) <= known or "citizens" not in params:
            raise OperatorError(f"{cls.kind}: parameters must be {sorted(known)}, got "
                                f"{sorted(params)}")
        ids: list[bytes] = []
        for ref in params["citizens"]:
            stable = ref[0] if isinstance(ref, list) and ref else ref
            if not (isinstance(stable, bytes) and len(stable) == ID_LEN):
                raise OperatorError(f"{cls.kind}: citizens: each is a 32-byte stable id or "
                                    "[stable id, content hash]")
            ids.append(stable)
        if not 1 <= len(ids) <= MAX_CITIZENS or len(set(ids)) != len(ids):
            raise OperatorError(f"{cls.kind}: citizens: 1 to {MAX_CITIZENS} distinct citizens")
        mode = params.get("failure_mode", "stall")
        if mode not in FAILURE_MODES:
            raise OperatorError(f"{cls.kind}: failure_mode must be one of {FAILURE_MODES}")
        deadline = params.get("partial_deadline_ticks", 0)
        follow = params.get("follow_almanac")
        if not (is_uint(deadline) and deadline <= MAX_DEADLINE_TICKS):
            raise OperatorError(f"{cls.kind}: partial_deadline_ticks must be 0 .. "
                                f"{MAX_DEADLINE_TICKS}")
        if mode == "partial" and (follow is None or deadline < 1):
            raise OperatorError(f"{cls.kind}: failure_mode = \"partial\" needs follow_almanac "
                                "and partial_deadline_ticks >= 1 (the deadline is in ticks)")
        return cls(ids, mode, deadline, follow, params)

    def config_digest(self) -> bytes:
        return hash_structure(f"{self.kind}-config", 1, self._params)

    # -- client commands: none ----------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        raise InvalidCommand(f"{self.signature} takes no client command; it reads its "
                             "citizens' feeds", reason="unknown_op")

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        return [Refused("unknown_op", f"{self.signature} takes no client command")
                for e in envelopes for _ in e.commands]

    # -- member commands ----------------------------------------------------------------

    def check_member(self, command: MemberCommand) -> None:
        if command.op == INGEST_OP:
            parse_ingest(command.args, len(self.citizens), self.KINDS)
        elif command.op == self.OUTPUT_OP:
            self.check_output(command.args)
        else:
            super().check_member(command)

    def apply_member(self, ctx: BlockContext, command: MemberCommand) -> CommandResult:
        try:
            self.check_member(command)
        except InvalidCommand as exc:
            return Refused(exc.reason, str(exc))
        if command.op == INGEST_OP:
            return self._apply_ingest(ctx, parse_ingest(command.args, len(self.citizens),
                                                        self.KINDS))
        return self._apply_output(command.args)

    def _apply_ingest(self, ctx: BlockContext, ingest: Ingest) -> CommandResult:
        c = ingest.citizen
        height, block, nxt = self.positions[c]
        if ingest.start != nxt:
            return Refused("stale_ingest", f"ingest: citizen {c} is read up to entry {nxt}, "
                           f"the ingest starts at {ingest.start}")
        if ingest.height < height or (ingest.height == height and ingest.block != block):
            return Refused("position_back", f"ingest: citizen {c} is at block {height} "
                           f"{bytes(block).hex()[:16]}; {ingest.height} "
                           f"{ingest.block.hex()[:16]} does not follow it")
        for item in ingest.items:
            kind, seq, item_height = item[0], item[1], item[2]
            ptr = [c, seq, item_height, ingest.digest_of(item_height)]
            if kind == "slot":
                w = self.watermarks[c]
                if w is None or item[3] > w:
                    self.watermarks[c] = item[3]
            else:
                self.fold(ctx, c, item, ptr)
        self.positions[c] = [ingest.height, ingest.block, ingest.end]
        self._root = None
        return Applied(None)

    def _apply_output(self, args: Mapping[str, Any]) -> CommandResult:
        key = self.key_of(args)
        record = self.pending.get(key)
        if record is None:
            if key in self.committed:
                return Refused("already_committed", f"{self.OUTPUT_OP}: {self.show_key(key)} "
                               "is committed already")
            return Refused("not_sealed", f"{self.OUTPUT_OP}: {self.show_key(key)} is not "
                           "sealed (its slot is not final here)")
        if encode(dict(args)) != encode(record):
            return Refused("record_mismatch", f"{self.OUTPUT_OP}: {self.show_key(key)} "
                           "differs from the record this state sealed")
        del self.pending[key]
        self.committed[key] = digest(encode(record))
        while len(self.committed) > COMMITTED_WINDOW:
            del self.committed[next(iter(self.committed))]
        self.committed_count += 1
        self._root = None
        return Applied(self.committed_count - 1, (encode([self.OUTPUT_OP, record]),))

    # -- slots ----------------------------------------------------------------------------

    def passed(self, citizen: int, slot: int) -> bool:
        w = self.watermarks[citizen]
        return w is not None and w >= slot

    def is_late(self, citizen: int, key: Key, slot: int) -> bool:
        """An item for `slot` from a citizen that has passed it, or for a sealed key."""
        return self.passed(citizen, slot) or key in self.closed or key in self.pending \
            or key in self.committed

    def is_final(self, slot: int, opened_tick: int | None, tick: int | None) -> bool:
        if all(self.passed(c, slot) for c in range(len(self.citizens))):
            return True
        return (self.failure_mode == "partial" and tick is not None
                and opened_tick is not None and tick > opened_tick + self.deadline)

    def missing(self, slot: int) -> list[int]:
        return [c for c in range(len(self.citizens)) if not self.passed(c, slot)]

    def seal(self, key: Key, record: dict[str, Any], slot: int) -> None:
        self.pending[key] = record
        if record["partial"]:
            self.closed[key] = None
            while len(self.closed) > MAX_CLOSED_KEYS:
                del self.closed[next(iter(self.closed))]
        self._root = None

    def end_block(self, ctx: BlockContext) -> Applied | None:
        low = min((w for w in self.watermarks if w is not None), default=None)
        if low is not None and len(self.watermarks) and None not in self.watermarks:
            for key in [k for k in self.closed if self.slot_of(k) <= low]:
                del self.closed[key]  # every citizen passed it: the watermark rule covers it
        if len(self.pending) < MAX_PENDING:
            self.seal_final(ctx)
        return None

    def upto(self) -> list[list[Any]]:
        return [list(p) for p in self.positions]

    # -- what the kinds define --------------------------------------------------------------

    @abc.abstractmethod
    def fold(self, ctx: BlockContext, citizen: int, item: tuple[Any, ...],
             ptr: list[Any]) -> None:
        """Take one intent/refund item into the open state."""

    @abc.abstractmethod
    def seal_final(self, ctx: BlockContext) -> None:
        """Seal every open key that is final now (call `seal`), while pending has room."""

    @abc.abstractmethod
    def check_output(self, args: Mapping[str, Any]) -> None:
        """Stateless shape check of a record commit (InvalidCommand)."""

    @abc.abstractmethod
    def key_of(self, args: Mapping[str, Any]) -> Key: ...

    @abc.abstractmethod
    def slot_of(self, key: Key) -> int: ...

    def show_key(self, key: Key) -> str:
        return repr(key)

    @abc.abstractmethod
    def open_state(self) -> list[Any]:
        """The kind's own state, as CBOR-ready lists (snapshot)."""

    @abc.abstractmethod
    def load_open_state(self, fields: Any) -> None:
        """Inverse of `open_state`; raise ValueError/TypeError/KeyError on bad data."""

    # -- state, reads, snapshots ----------------------------------------------------------

    def snapshot(self) -> bytes:
        return encode([f"{self.kind}-snapshot", 1, self.positions,
                       [-1 if w is None else w for w in self.watermarks],
                       [[list(k), r] for k, r in self.pending.items()],
                       [[list(k), d] for k, d in self.committed.items()],
                       self.committed_count, [list(k) for k in self.closed],
                       [self.late, self.duplicates, self.overflow], self.open_state()])

    def state_root(self) -> bytes:
        # The whole state is bounded; its snapshot is the commitment (records themselves are
        # proven by the certified blocks that commit them, docs/confluences.md §5).
        if self._root is None:
            self._root = hash_structure(f"{self.kind}-state", 1, digest(self.snapshot()))
        return self._root

    def restore(self, data: bytes) -> None:
        saved = self.snapshot()
        try:
            obj = decode(data, max_size=MAX_SNAPSHOT_SIZE)
            if not (isinstance(obj, list) and len(obj) == 10
                    and obj[:2] == [f"{self.kind}-snapshot", 1]):
                raise ValueError("not a snapshot of this kind")
            (_, _, positions, marks, pending, committed, count, closed, counters,
             open_state) = obj
            n = len(self.citizens)
            if not (len(positions) == n and len(marks) == n and all(
                    len(p) == 3 and is_uint(p[0]) and isinstance(p[1], bytes)
                    and len(p[1]) == ID_LEN and is_uint(p[2]) for p in positions)):
                raise ValueError("positions do not match the citizens")
            self.positions = [list(p) for p in positions]
            self.watermarks = [None if w == -1 else int(w) for w in marks]
            self.pending = {tuple(k): r for k, r in pending}
            self.committed = {tuple(k): d for k, d in committed}
            self.committed_count = int(count)
            self.closed = {tuple(k): None for k in closed}
            self.late, self.duplicates, self.overflow = (int(x) for x in counters)
            self.load_open_state(open_state)
            for record in self.pending.values():
                self.check_output(record)
            if len(self.pending) > MAX_PENDING or len(self.committed) > COMMITTED_WINDOW:
                raise ValueError("more records than the bounds allow")
        except (EncodingError, ValueError, TypeError, KeyError, InvalidCommand) as exc:
            self.restore_raw(saved)
            raise MalformedSnapshot(f"{self.kind} snapshot: {exc}") from None
        self._root = None

    def restore_raw(self, data: bytes) -> None:
        """Put back a snapshot this component wrote itself (after a failed restore)."""
        obj = decode(data, max_size=MAX_SNAPSHOT_SIZE)
        (_, _, positions, marks, pending, committed, count, closed, counters, open_state) = obj
        self.positions = [list(p) for p in positions]
        self.watermarks = [None if w == -1 else int(w) for w in marks]
        self.pending = {tuple(k): r for k, r in pending}
        self.committed = {tuple(k): d for k, d in committed}
        self.committed_count = count
        self.closed = {tuple(k): None for k in closed}
        self.late, self.duplicates, self.overflow = counters
        self.load_open_state(open_state)
        self._root = None

    def head(self) -> dict[str, Any]:
        return {"citizens": list(self.citizens), "positions": self.upto(),
                "watermarks": list(self.watermarks), "pending": len(self.pending),
                "committed": self.committed_count, "late": self.late,
                "duplicates": self.duplicates, "overflow": self.overflow,
                "failure_mode": self.failure_mode, "state_root": self.state_root()}

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            return self.head()
        if name == "pending":
            expect_args(name, args, set())
            return [[self.OUTPUT_OP, r] for r in list(self.pending.values())[:MAX_QUERY_RECORDS]]
        raise QueryError(f"unknown read {name!r} (known: head, pending)")

    def pending_outputs(self, limit: int) -> list[dict[str, Any]]:
        return list(self.pending.values())[:limit]

    def output_known(self, args: Mapping[str, Any]) -> str | None:
        """For a voter: None if `args` is exactly a record this state sealed (pending or
        committed), else why not."""
        try:
            self.check_output(args)
            key = self.key_of(args)
        except InvalidCommand as exc:
            return str(exc)
        record = self.pending.get(key)
        if record is not None:
            return None if encode(dict(args)) == encode(record) else (
                f"{self.OUTPUT_OP}: {self.show_key(key)} differs from the record sealed here")
        committed = self.committed.get(key)
        if committed is not None:
            return None if digest(encode(dict(args))) == committed else (
                f"{self.OUTPUT_OP}: {self.show_key(key)} differs from the record committed")
        return f"{self.OUTPUT_OP}: {self.show_key(key)} is not sealed here (yet)"


def check_pointer_list(name: str, rows: Any, citizens: int, limit: int, *,
                       amounts: bool = False) -> None:
    """`rows` = [[id(32), citizen, seq, height, block(, amount)], …] sorted by id, distinct."""
    if not (isinstance(rows, list) and len(rows) <= limit):
        raise InvalidCommand(f"{name}: at most {limit} rows", reason="bad_record")
    last = b""
    width = 6 if amounts else 5
    for r in rows:
        if not (isinstance(r, list) and len(r) == width and isinstance(r[0], bytes)
                and len(r[0]) == ID_LEN and is_uint(r[1]) and r[1] < citizens
                and is_uint(r[2]) and is_uint(r[3]) and isinstance(r[4], bytes)
                and len(r[4]) == ID_LEN and (not amounts or is_uint(r[5]))):
            raise InvalidCommand(f"{name}: each row is [32-byte id, citizen, seq, height, "
                                 f"block{', amount' if amounts else ''}]", reason="bad_record")
        if r[0] <= last:
            raise InvalidCommand(f"{name}: ids must be sorted and distinct", reason="bad_record")
        last = r[0]


def check_common(name: str, args: Mapping[str, Any], citizens: int) -> None:
    partial, missing, upto = args.get("partial"), args.get("missing"), args.get("upto")
    if not (isinstance(partial, bool) and isinstance(missing, list)
            and all(is_uint(m) and m < citizens for m in missing)
            and missing == sorted(set(missing)) and bool(missing) == partial):
        raise InvalidCommand(f"{name}: partial must be true exactly when missing lists the "
                             "citizens (ascending) that had not passed the slot",
                             reason="bad_record")
    if not (isinstance(upto, list) and len(upto) == citizens and all(
            isinstance(p, list) and len(p) == 3 and is_uint(p[0]) and isinstance(p[1], bytes)
            and len(p[1]) == ID_LEN and is_uint(p[2]) for p in upto)):
        raise InvalidCommand(f"{name}: upto must hold one [height, block, next entry] per "
                             "citizen", reason="bad_record")
