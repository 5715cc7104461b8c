"""The `almanac` component (SPEC §3.2): shared ticks, each with the members' signed clocks.

A tick is a *member* command (`coalitiond.commands.member`) the leader proposes once at least
`q` members have signed an observation for the next `seq`:

    observation (signed)   ["almanac-observation", 1, committee_id, seq, unix_ms]
    signature              ed25519(member, OBSERVATION_TAG ‖ 0x00 ‖ encode(observation))
    tick member command    op "tick", args {seq, observed_at: [[member, unix_ms, signature]…]}

`observed_at` has one item per observing member, strictly ascending member index, at least
`q` (the committee's quorum) and every signature valid for that member over that `seq`: that is
the stateless check (`check_member`). Applying needs `seq == latest + 1` (the first tick is
seq 1); anything else is refused (`stale_tick` at or below the latest, `seq_gap` above it).

Tick encoding (the log entry, and a leaf of the tick tree):

    ["almanac-tick", 1, seq, height, block_digest, [[member, unix_ms, signature]…]]

State root: `blake3(cbor(["almanac-state", 1, latest_seq, tree_root]))`, `tree_root` the RFC
6962 root over every tick encoding ever applied (tick `seq` is leaf `seq − 1`). Memory is
bounded: the component holds the last `TICK_WINDOW` ticks in full and only the tree nodes that
proofs for those ticks need; older ticks are read from the committee's log archive.

`observed_at` is advisory (SPEC §3.2): nothing here compares it with anything. The helpers
`median_ms`, `skews` and `outliers` are for reads and for the ticker's metrics.

Reads: `head`, `latest`, `tick {seq}` (with a state proof), `since {seq, limit?}`.
Snapshot: `["almanac-snapshot", 1, base, [frontier hashes], [tick bytes…]]` (docs/almanac.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from ...commands.envelope import Command, Envelope, InvalidCommand
from ...commands.member import MemberCommand
from ...primitives.committee import CommitteeSpec
from ...primitives.crypto import SIGNATURE_LEN, SigningKey, is_valid
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, LocalError, OperatorError
from ...primitives.identity import ID_LEN, hash_structure
from ...primitives.merkle import inclusion_path, leaf_hash
from ..base import (
    Applied,
    BlockContext,
    CommandResult,
    Component,
    MalformedSnapshot,
    QueryError,
    QueryNotFound,
    Refused,
    expect_args,
    is_uint,
    register,
)
from ..paging import limit_arg, uint_arg
from ..snapshot import SnapshotFormat, any_value, is_list
from .config import MAX_TICK_INTERVAL_MS, MIN_TICK_INTERVAL_MS
from .tree import WindowTree

OBSERVATION_TAG: Final = b"coalitiond/almanac-observation/v1"
OBSERVATION_TYPE: Final = "almanac-observation"
TICK_TYPE: Final = "almanac-tick"
STATE_TYPE: Final = "almanac-state"
SNAPSHOT_TYPE: Final = "almanac-snapshot"
SCHEMA: Final = 1
TICK_OP: Final = "tick"

#: Ticks held in full for reads (and proofs); older ones live in the log archive only.
#: At the default 1 s interval that is about 18 hours of ticks, a few tens of MiB.
TICK_WINDOW: Final = 65_536
#: Ticks one `since` read returns at most (readers page with `next`).
MAX_QUERY_TICKS: Final = 256
#: Clock readings are milliseconds since 1970 up to 2^53 − 1 (exact in every JSON reader).
MAX_UNIX_MS: Final = (1 << 53) - 1
#: `seq` grows by one per tick; 2^63 − 1 ticks is never reached but keeps every value int64.
MAX_SEQ: Final = (1 << 63) - 1
#: An encoded observation (gossip payload) is about 150 bytes; anything larger is junk.
MAX_OBSERVATION_SIZE: Final = 512
#: Largest committee whose ticks this component accepts (bounds one tick's size).
MAX_MEMBERS: Final = 256
MAX_SNAPSHOT_SIZE: Final = 1 << 31
#: One encoded tick: header plus MAX_MEMBERS items of [index, ms, 64-byte signature].
MAX_TICK_SIZE: Final = 128 + MAX_MEMBERS * 96

_PARAM_KEYS: Final = frozenset({"tick_interval_ms"})
_TICK_ARGS: Final = frozenset({"seq", "observed_at"})
_SNAPSHOT: Final = SnapshotFormat(
    "almanac", SNAPSHOT_TYPE, SCHEMA, (any_value, is_list, is_list),
    '["almanac-snapshot", 1, base, [frontier hashes], [tick bytes]]', max_size=MAX_SNAPSHOT_SIZE)


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Observation:
    """Member `member` saw tick `seq` of committee `committee_id` at wall-clock `unix_ms`.

    Wire (gossip payload between members): the signed array followed by member and signature,
    `["almanac-observation", 1, committee_id, seq, unix_ms, member, signature]`.
    """

    committee_id: bytes
    seq: int
    unix_ms: int
    member: int
    signature: bytes

    @staticmethod
    def signed_bytes(committee_id: bytes, seq: int, unix_ms: int) -> bytes:
        return encode([OBSERVATION_TYPE, SCHEMA, committee_id, seq, unix_ms])

    @classmethod
    def sign(cls, key: SigningKey, committee_id: bytes, member: int, seq: int,
             unix_ms: int) -> Observation:
        if not (is_uint(seq) and 1 <= seq <= MAX_SEQ and is_uint(unix_ms)
                and unix_ms <= MAX_UNIX_MS):
            raise LocalError(f"observation: seq {seq} or unix_ms {unix_ms} out of range")
        signature = key.sign(OBSERVATION_TAG, cls.signed_bytes(committee_id, seq, unix_ms))
        return cls(committee_id, seq, unix_ms, member, signature)

    def is_signed_by(self, public_key: bytes) -> bool:
        return is_valid(public_key, OBSERVATION_TAG,
                        self.signed_bytes(self.committee_id, self.seq, self.unix_ms),
                        self.signature)

    def to_wire(self) -> list[Any]:
        return [OBSERVATION_TYPE, SCHEMA, self.committee_id, self.seq, self.unix_ms,
                self.member, self.signature]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> Observation:
        """Strict: EncodingError (a RemoteError) unless `data` is exactly an observation.
        Checks shape and ranges only; the signature is the caller's (it knows the keys)."""
        if len(data) > MAX_OBSERVATION_SIZE:
            raise EncodingError(f"observation of {len(data)} bytes exceeds "
                                f"{MAX_OBSERVATION_SIZE}")
        obj = decode(data, max_size=MAX_OBSERVATION_SIZE)
        if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == OBSERVATION_TYPE
                and obj[1] == SCHEMA and not isinstance(obj[1], bool)):
            raise EncodingError("observation: expected [\"almanac-observation\", 1, committee, "
                                "seq, unix_ms, member, signature]")
        _, _, committee_id, seq, unix_ms, member, signature = obj
        if not (isinstance(committee_id, bytes) and len(committee_id) == ID_LEN):
            raise EncodingError(f"observation: committee id must be {ID_LEN} bytes")
        if not (is_uint(seq) and 1 <= seq <= MAX_SEQ):
            raise EncodingError(f"observation: seq must be 1..{MAX_SEQ}")
        if not (is_uint(unix_ms) and unix_ms <= MAX_UNIX_MS):
            raise EncodingError(f"observation: unix_ms must be 0..{MAX_UNIX_MS}")
        if not (is_uint(member) and member < MAX_MEMBERS):
            raise EncodingError(f"observation: member must be an index 0..{MAX_MEMBERS - 1}")
        if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_LEN):
            raise EncodingError(f"observation: signature must be {SIGNATURE_LEN} bytes")
        return cls(committee_id, seq, unix_ms, member, signature)


@dataclass(frozen=True, slots=True)
class ObservedAt:
    """One item of a tick's `observed_at` vector."""

    member: int
    unix_ms: int
    signature: bytes

    def to_wire(self) -> list[Any]:
        return [self.member, self.unix_ms, self.signature]


@dataclass(frozen=True, slots=True)
class AlmanacTick:
    """A tick as committed: `seq`, where it was committed, and the signed clock vector."""

    seq: int
    height: int
    block: bytes
    observed_at: tuple[ObservedAt, ...]

    def to_wire(self) -> list[Any]:
        return [TICK_TYPE, SCHEMA, self.seq, self.height, self.block,
                [o.to_wire() for o in self.observed_at]]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> AlmanacTick:
        """Strict; EncodingError names the problem. Shapes only (no signatures)."""
        obj = decode(data, max_size=MAX_TICK_SIZE)
        if not (isinstance(obj, list) and len(obj) == 6 and obj[0] == TICK_TYPE
                and obj[1] == SCHEMA and not isinstance(obj[1], bool)):
            raise EncodingError("tick: expected [\"almanac-tick\", 1, seq, height, block, "
                                "observed_at]")
        _, _, seq, height, block, vector = obj
        if not (is_uint(seq) and 1 <= seq <= MAX_SEQ):
            raise EncodingError(f"tick: seq must be 1..{MAX_SEQ}")
        if not (is_uint(height) and height >= 1):
            raise EncodingError("tick: height must be >= 1")
        if not (isinstance(block, bytes) and len(block) == ID_LEN):
            raise EncodingError(f"tick: block digest must be {ID_LEN} bytes")
        try:
            observed = parse_observed_at(vector, MAX_MEMBERS)
        except InvalidCommand as exc:
            raise EncodingError(f"tick: {exc}") from None
        return cls(seq, height, block, observed)

    def as_read(self) -> dict[str, Any]:
        """The read shape: each observation with its skew against the median."""
        median = median_ms(self)
        return {"seq": self.seq, "height": self.height, "block": self.block,
                "median_ms": median,
                "observed_at": [{"member": o.member, "unix_ms": o.unix_ms,
                                 "skew_ms": o.unix_ms - median, "signature": o.signature}
                                for o in self.observed_at]}


# ---------------------------------------------------------------------------------------
# Pure helpers over a tick's clock vector


def median_ms(tick: AlmanacTick) -> int:
    """The median of the observed times; for an even count the floor of the mean of the two
    middle values (an integer: the state holds no floats)."""
    values = sorted(o.unix_ms for o in tick.observed_at)
    if not values:
        raise LocalError("median of an empty observation vector")
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) // 2


def skews(tick: AlmanacTick) -> dict[int, int]:
    """Member index → its observed time minus the median (positive: ahead)."""
    median = median_ms(tick)
    return {o.member: o.unix_ms - median for o in tick.observed_at}


def outliers(tick: AlmanacTick, threshold_ms: int) -> tuple[int, ...]:
    """Members (ascending index) whose |skew| exceeds `threshold_ms`."""
    return tuple(m for m, s in sorted(skews(tick).items()) if abs(s) > threshold_ms)


# ---------------------------------------------------------------------------------------
# Validation of a clock vector


def _bad(detail: str, reason: str = "bad_args") -> InvalidCommand:
    return InvalidCommand(f"tick: {detail}", reason=reason)


def parse_observed_at(vector: Any, n: int) -> tuple[ObservedAt, ...]:
    """Shape check of `observed_at` for a committee of `n`: items `[member, unix_ms,
    signature]`, members strictly ascending in 0..n−1. No quorum, no signatures."""
    if not isinstance(vector, list):
        raise _bad("observed_at must be a list of [member, unix_ms, signature]")
    if len(vector) > n:
        raise _bad(f"observed_at has {len(vector)} items, the committee has {n} members")
    out: list[ObservedAt] = []
    for position, item in enumerate(vector):
        if not (isinstance(item, list) and len(item) == 3):
            raise _bad(f"observed_at[{position}] must be [member, unix_ms, signature]")
        member, unix_ms, signature = item
        if not is_uint(member):
            raise _bad(f"observed_at[{position}]: member must be an unsigned integer")
        if member >= n:
            raise _bad(f"observed_at[{position}]: member {member} is not in a committee of {n}",
                       "unknown_member")
        if not (is_uint(unix_ms) and unix_ms <= MAX_UNIX_MS):
            raise _bad(f"observed_at[{position}]: unix_ms must be 0..{MAX_UNIX_MS}")
        if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_LEN):
            raise _bad(f"observed_at[{position}]: signature must be {SIGNATURE_LEN} bytes")
        if out and member == out[-1].member:
            raise _bad(f"observed_at[{position}]: member {member} appears twice",
                       "duplicate_observation")
        if out and member < out[-1].member:
            raise _bad(f"observed_at[{position}]: member {member} after {out[-1].member}; "
                       "members must be strictly ascending", "unsorted_observations")
        out.append(ObservedAt(member, unix_ms, signature))
    return tuple(out)


def check_observed_at(committee: CommitteeSpec, seq: int,
                      observed: Sequence[ObservedAt]) -> None:
    """The quorum and every signature (the expensive part of the stateless check)."""
    if len(observed) < committee.quorum:
        raise _bad(f"{len(observed)} observations, the quorum is {committee.quorum}",
                   "too_few_observations")
    for o in observed:
        obs = Observation(committee.committee_id, seq, o.unix_ms, o.member, o.signature)
        if not obs.is_signed_by(committee.members[o.member]):
            raise _bad(f"observation of member {o.member} is not its signature over seq {seq}",
                       "bad_signature")


# ---------------------------------------------------------------------------------------
# The component


@register
class Almanac(Component):
    kind = "almanac"
    signature = "almanac/1"

    def __init__(self, tick_interval_ms: int) -> None:
        if not (is_uint(tick_interval_ms)
                and MIN_TICK_INTERVAL_MS <= tick_interval_ms <= MAX_TICK_INTERVAL_MS):
            raise OperatorError(f"component.tick_interval_ms: must be "
                                f"{MIN_TICK_INTERVAL_MS}..{MAX_TICK_INTERVAL_MS}")
        self.tick_interval_ms = tick_interval_ms
        self.committee: CommitteeSpec | None = None
        #: Encodings of the last min(latest_seq, TICK_WINDOW) ticks, oldest first; reads
        #: decode them afresh, so no reader can alias (and mutate) the state.
        self._ticks: deque[bytes] = deque()
        self._latest = 0
        self._tree = WindowTree()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Almanac:
        """From `config.AlmanacConfig.to_cbor()`: `{"tick_interval_ms": int}`."""
        unknown = sorted(set(params) - _PARAM_KEYS)
        if unknown:
            raise OperatorError(f"component.{unknown[0]}: unknown key for an almanac")
        if "tick_interval_ms" not in params:
            raise OperatorError("component.tick_interval_ms: required")
        return cls(params["tick_interval_ms"])

    def config_digest(self) -> bytes:
        return hash_structure("almanac-config", SCHEMA, self.signature, self.tick_interval_ms)

    def bind(self, committee: CommitteeSpec) -> None:
        if committee.n > MAX_MEMBERS:
            raise OperatorError(f"almanac: committee of {committee.n} members exceeds "
                                f"{MAX_MEMBERS}")
        self.committee = committee

    def _bound(self) -> CommitteeSpec:
        if self.committee is None:
            raise LocalError("almanac: bind(committee) must be called before use")
        return self.committee

    # -- client commands: none ----------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        raise InvalidCommand(f"unknown op {command.op!r} (an almanac takes no client command; "
                             "ticks are proposed by its members)", reason="unknown_op")

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for envelope in envelopes:
            for command in envelope.commands:
                try:
                    self.check(envelope.client, command)
                except InvalidCommand as exc:
                    results.append(Refused(exc.reason, str(exc)))
        return results

    # -- member commands: ticks ----------------------------------------------------------

    def _parse_tick(self, command: MemberCommand) -> tuple[int, tuple[ObservedAt, ...]]:
        if command.op != TICK_OP:
            raise InvalidCommand(f"{self.signature} takes no member command {command.op!r} "
                                 "(known: tick)", reason="unknown_op")
        args = command.args
        if set(args) != _TICK_ARGS:
            raise _bad("args must be exactly {seq, observed_at}")
        seq = args["seq"]
        if not (is_uint(seq) and 1 <= seq <= MAX_SEQ):
            raise _bad(f"seq must be 1..{MAX_SEQ}")
        return seq, parse_observed_at(args["observed_at"], self._bound().n)

    def check_member(self, command: MemberCommand) -> None:
        seq, observed = self._parse_tick(command)
        check_observed_at(self._bound(), seq, observed)

    def apply_member(self, ctx: BlockContext, command: MemberCommand) -> CommandResult:
        # The executor applies only commands that passed `check_member` (signatures
        # included); the shape is parsed again because it is cheap and yields the values.
        try:
            seq, observed = self._parse_tick(command)
        except InvalidCommand as exc:
            return Refused(exc.reason, str(exc))
        if seq <= self._latest:
            return Refused("stale_tick", f"tick: seq {seq} is not after the latest tick "
                           f"{self._latest}")
        if seq != self._latest + 1:
            return Refused("seq_gap", f"tick: seq {seq} skips ahead; the next tick is "
                           f"{self._latest + 1}")
        encoded = AlmanacTick(seq, ctx.height, ctx.digest, observed).encode()
        self._append(encoded)
        return Applied(seq - 1, (encoded,))

    def _append(self, encoded: bytes) -> None:
        self._latest += 1
        self._ticks.append(encoded)
        self._tree.append_hash(leaf_hash(encoded))
        if len(self._ticks) > TICK_WINDOW:
            self._ticks.popleft()
        # Forget tree nodes in chunks of a window: amortised O(1) per tick.
        if self._tree.offsets[0] + 2 * TICK_WINDOW <= self.oldest_seq - 1:
            self._tree.forget(self.oldest_seq - 1)

    # -- state access for the ticker (no copies of mutable state leak) ------------------

    @property
    def latest_seq(self) -> int:
        """The latest tick's seq; 0 before the first tick."""
        return self._latest

    @property
    def oldest_seq(self) -> int:
        """The oldest tick held in full (latest_seq + 1 when none is held)."""
        return self._latest - len(self._ticks) + 1

    def tick(self, seq: int) -> AlmanacTick | None:
        """Tick `seq` if it is held, else None."""
        if not self.oldest_seq <= seq <= self._latest:
            return None
        return AlmanacTick.decode(self._ticks[seq - self.oldest_seq])

    # -- commitment -----------------------------------------------------------------------

    def tree_root(self) -> bytes:
        return self._tree.root()

    def _root_preimage(self) -> list[Any]:
        return [STATE_TYPE, SCHEMA, self._latest, self._tree.root()]

    def state_root(self) -> bytes:
        return hash_structure(*self._root_preimage())

    # -- reads ----------------------------------------------------------------------------

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            return {"seq": self._latest, "oldest": self.oldest_seq if self._ticks else None,
                    "window": TICK_WINDOW, "tree_root": self._tree.root(),
                    "state_root": self.state_root()}
        if name == "latest":
            expect_args(name, args, set())
            return self._read(self._latest) if self._latest else None
        if name == "tick":
            expect_args(name, args, {"seq"})
            seq = self._held_seq(args["seq"])
            encoded = self._ticks[seq - self.oldest_seq]
            return {"tick": self._read(seq), "encoded": encoded,
                    "state_proof": self._state_proof(encoded, seq - 1)}
        if name == "since":
            expect_args(name, args, {"seq"}, {"limit"})
            after = uint_arg(name, args, "seq")
            limit = limit_arg(name, args, MAX_QUERY_TICKS)
            first = max(after + 1, self.oldest_seq)
            start = first - self.oldest_seq
            rows = list(islice(self._ticks, start, start + limit)) if first <= self._latest \
                else []
            ticks = [AlmanacTick.decode(r).as_read() for r in rows]
            return {"ticks": ticks, "next": ticks[-1]["seq"] if ticks else max(after, first - 1),
                    "latest": self._latest,
                    "missed": max(0, min(self.oldest_seq, self._latest + 1) - after - 1)}
        raise QueryError(f"unknown almanac query {name!r} (known: head, latest, since, tick)")

    def _held_seq(self, seq: Any) -> int:
        if not (is_uint(seq) and seq >= 1):
            raise QueryError("tick: seq must be an integer >= 1")
        if seq > self._latest:
            raise QueryNotFound(f"tick: no tick {seq} yet (the latest is {self._latest})")
        if seq < self.oldest_seq:
            raise QueryNotFound(f"tick: tick {seq} is older than the {TICK_WINDOW} ticks this "
                             f"member holds (oldest {self.oldest_seq}); read it from the log "
                             "archive")
        return int(seq)

    def _read(self, seq: int) -> dict[str, Any]:
        return AlmanacTick.decode(self._ticks[seq - self.oldest_seq]).as_read()

    def _state_proof(self, leaf: bytes, index: int) -> dict[str, Any]:
        # The uniform shape of `base.state_proof` (which takes a MemoryTree; ours forgets).
        size = self._tree.size
        return {"leaf": leaf, "index": index, "size": size,
                "path": inclusion_path(self._tree, index, size), "tree_root": self._tree.root(),
                "root_preimage": self._root_preimage()}

    # -- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        base = self.oldest_seq - 1
        return _SNAPSHOT.encode(base, self._tree.frontier(base), list(self._ticks))

    def restore(self, data: bytes) -> None:
        committee = self._bound()
        _SNAPSHOT.restore(self, data, lambda fields: _state_from_snapshot(committee, fields))


def _state_from_snapshot(committee: CommitteeSpec, fields: list[Any]) -> dict[str, Any]:
    base, frontier, rows = fields
    if not (is_uint(base) and base <= MAX_SEQ):
        raise _SNAPSHOT.error("base must be an unsigned integer")
    if len(rows) > TICK_WINDOW or (base > 0 and len(rows) != TICK_WINDOW):
        raise _SNAPSHOT.error(f"holds {len(rows)} ticks after {base}; expected the last "
                              f"min(latest, {TICK_WINDOW})")
    if not (len(frontier) == base.bit_count()
            and all(isinstance(h, bytes) and len(h) == 32 for h in frontier)):
        raise _SNAPSHOT.error(f"the frontier of {base} is {base.bit_count()} hashes of 32 "
                              "bytes")
    tree = WindowTree.from_frontier(base, frontier)
    ticks: deque[bytes] = deque()
    previous_height = 0
    for k, row in enumerate(rows):
        tick = _tick_from_snapshot(committee, base + 1 + k, row)
        if tick.height < previous_height:
            raise _SNAPSHOT.error(f"tick {tick.seq}: height goes backwards")
        previous_height = tick.height
        ticks.append(row)
        tree.append_hash(leaf_hash(row))
    return {"_ticks": ticks, "_tree": tree, "_latest": base + len(rows)}


def _tick_from_snapshot(committee: CommitteeSpec, seq: int, row: Any) -> AlmanacTick:
    def bad(what: str) -> MalformedSnapshot:
        return _SNAPSHOT.error(f"tick {seq}: {what}")

    if not isinstance(row, bytes):
        raise bad("expected a byte string")
    try:
        tick = AlmanacTick.decode(row)
    except EncodingError as exc:
        raise bad(str(exc)) from None
    if tick.seq != seq:
        raise bad(f"has seq {tick.seq}")
    try:
        parse_observed_at([o.to_wire() for o in tick.observed_at], committee.n)
        check_observed_at(committee, seq, tick.observed_at)
    except InvalidCommand as exc:
        raise bad(str(exc)) from None
    return tick
