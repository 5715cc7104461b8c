"""The `chronicle` component (SPEC §3.3): the coalition's tamper-evident audit log.

Command: `append {kind, subject, body, evidence_pointers}` from an ACL-admitted client (the
executor applies the ACL). Each accepted append becomes one `ChronicleEntry` with the next
sequence number (0, 1, 2, …), which is the entry index the submitter is told. `kind =
"evidence"` is accepted only when its body proves an equivocation in some committee
(`EvidenceBody`); the check is stateless (signatures only), so members run it before voting.

Entry encoding (the log entry bytes, the leaves of the entry tree, the anchor input):

    ["chronicle-entry", 1, seq, kind, subject, body, [[component, height, block], …], tick,
     height, envelope_id, command_index, client]

Anchors: whenever `anchor_every` entries have accumulated since the last anchor, `end_block`
commits `ChronicleAnchor {upto_seq, digest}` with `upto_seq` the last entry it covers and
`digest = blake3(previous digest ‖ entry encoding ‖ … )` over the entries since the previous
anchor (32 zero bytes before the first). Anchors depend on the entries and `anchor_every`
only, never on block boundaries, so `recompute_anchors` over an archive's entries gives them.
Anchor encoding: `["chronicle-anchor", 1, upto_seq, digest]`.

State root: `blake3(cbor(["chronicle-state", 1, entry_count, entry_tree_root, anchor_count,
anchor_tree_root]))`, both trees RFC 6962 over the encodings in order.

Reads: `head`, `entry {seq}`, `since {seq, limit?}`, `anchor {upto_seq}`, `anchors {since,
limit?}`; `entry` and `anchor` carry a uniform state proof (`base.state_proof`).
Snapshot: `["chronicle-snapshot", 1, [entry bytes…], [anchor bytes…]]`, every entry
re-validated (evidence signatures included) and the anchors recomputed on restore.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ...commands.envelope import Command, Envelope, InvalidCommand
from ...consensus.evidence import Evidence
from ...consensus.types import MAX_COMMAND_SIZE, MAX_EVIDENCE_SIZE
from ...primitives.committee import MAX_COMMITTEE_MEMBERS, CommitteeSpec
from ...primitives.crypto import PUBLIC_KEY_LEN
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, LocalError, OperatorError, RemoteError
from ...primitives.identity import ID_LEN, digest, hash_structure
from ...primitives.merkle import MemoryTree, leaf_hash
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
    state_proof,
)
from ..paging import limit_arg, since_page, uint_arg
from ..snapshot import SnapshotFormat, is_list
from .config import ANCHOR_SINK_KINDS, EVM_ADDRESS_LEN, MAX_ANCHOR_EVERY

ENTRY_TYPE: Final = "chronicle-entry"
ENTRY_SCHEMA: Final = 1
ANCHOR_TYPE: Final = "chronicle-anchor"
ANCHOR_SCHEMA: Final = 1
STATE_TYPE: Final = "chronicle-state"
SNAPSHOT_TYPE: Final = "chronicle-snapshot"
CONFIG_TYPE: Final = "chronicle-config"
APPEND_OP: Final = "append"

KINDS: Final = ("publication", "rotation", "retirement", "advisory", "evidence", "note")
EVIDENCE_KIND: Final = "evidence"
#: The digest chained into the first anchor.
GENESIS_ANCHOR_DIGEST: Final = b"\x00" * 32

#: Encoded body bound: half a command, leaving room for the rest of the envelope.
MAX_BODY_BYTES: Final = MAX_COMMAND_SIZE // 2
MAX_EVIDENCE_POINTERS: Final = 64
#: Entries are kept in memory; past this bound appends are refused ("chronicle_full").
MAX_CHRONICLE_ENTRIES: Final = 1_000_000
#: Total bytes of entry encodings held (entries reach ~38 KB, so the count bound alone
#: would allow ~38 GB); an append that would pass it is refused ("chronicle_full").
MAX_CHRONICLE_BYTES: Final = 1 << 30
#: Upper bound of entries or anchors one `since` / `anchors` read returns.
MAX_QUERY_ENTRIES: Final = 256
MAX_QUERY_ANCHORS: Final = 256
MAX_SNAPSHOT_SIZE: Final = 1 << 31
#: Bounds on the committee description inside an evidence body.
MAX_NAME_LEN: Final = 512
#: Largest encoded entry: body, pointers and the fixed fields with room to spare.
MAX_ENTRY_SIZE: Final = MAX_BODY_BYTES + MAX_EVIDENCE_POINTERS * 100 + 1024

_PARAM_KEYS: Final = frozenset({"anchor_every", "anchor_sink", "follow_almanac"})
_SINK_KEYS: Final = frozenset({"kind", "chain_id", "contract"})
_APPEND_KEYS: Final = frozenset({"kind", "subject", "body", "evidence_pointers"})
_EVIDENCE_BODY_KEYS: Final = frozenset({"committee", "evidence"})
_SNAPSHOT: Final = SnapshotFormat("chronicle", SNAPSHOT_TYPE, 1, (is_list, is_list),
                                  '["chronicle-snapshot", 1, [entry bytes], [anchor bytes]]',
                                  max_size=MAX_SNAPSHOT_SIZE)


def _id(x: Any) -> bool:
    return isinstance(x, bytes) and len(x) == ID_LEN


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class EvidencePointer:
    """Where an entry's grounds are: a block of some component's certified log."""

    component: bytes
    height: int
    block: bytes

    def to_wire(self) -> list[Any]:
        return [self.component, self.height, self.block]


@dataclass(frozen=True, slots=True)
class ChronicleEntry:
    seq: int
    kind: str
    subject: bytes
    #: Deterministic CBOR bytes (one item).
    body: bytes
    evidence_pointers: tuple[EvidencePointer, ...]
    #: The followed Almanac's tick stamped into this committee's state, or None.
    tick: int | None
    height: int
    envelope_id: bytes
    command_index: int
    #: The client key that appended it.
    client: bytes

    def to_wire(self) -> list[Any]:
        return [ENTRY_TYPE, ENTRY_SCHEMA, self.seq, self.kind, self.subject, self.body,
                [p.to_wire() for p in self.evidence_pointers], self.tick, self.height,
                self.envelope_id, self.command_index, self.client]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> ChronicleEntry:
        """Strict: MalformedEntry unless `data` is a well-formed entry encoding. Does not
        verify evidence signatures (`check_append_fields` does)."""
        try:
            obj = decode(data, max_size=MAX_ENTRY_SIZE)
        except EncodingError as exc:
            raise MalformedEntry(f"chronicle entry: {exc}") from None
        if not (isinstance(obj, list) and len(obj) == 12):
            raise MalformedEntry("chronicle entry: expected a 12-item array")
        (tag, schema, seq, kind, subject, body, pointers, tick, height, envelope_id,
         command_index, client) = obj
        if tag != ENTRY_TYPE or schema != ENTRY_SCHEMA or isinstance(schema, bool):
            raise MalformedEntry("chronicle entry: wrong type tag or schema")
        if not (is_uint(seq) and is_uint(height) and height >= 1 and is_uint(command_index)):
            raise MalformedEntry("chronicle entry: seq, height (>= 1) and command index must "
                                 "be unsigned integers")
        if not (tick is None or is_uint(tick)):
            raise MalformedEntry("chronicle entry: tick must be an unsigned integer or null")
        if not _id(envelope_id):
            raise MalformedEntry("chronicle entry: envelope id must be 32 bytes")
        if not (isinstance(client, bytes) and len(client) == PUBLIC_KEY_LEN):
            raise MalformedEntry("chronicle entry: client must be a 32-byte key")
        try:
            fields = parse_append_fields(kind, subject, body, pointers)
        except InvalidCommand as exc:
            raise MalformedEntry(f"chronicle entry: {exc}") from None
        return cls(seq, fields.kind, fields.subject, fields.body, fields.evidence_pointers,
                   tick, height, envelope_id, command_index, client)

    def as_read(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "subject": self.subject, "body": self.body,
                "evidence_pointers": [p.to_wire() for p in self.evidence_pointers],
                "tick": self.tick, "height": self.height, "envelope_id": self.envelope_id,
                "command_index": self.command_index, "client": self.client}


class MalformedEntry(RemoteError):
    """Bytes that are not a valid Chronicle entry (from an archive or a peer)."""


class MalformedAnchor(RemoteError):
    """Bytes or a JSON line that are not a valid Chronicle anchor."""


@dataclass(frozen=True, slots=True)
class ChronicleAnchor:
    """`digest` chains every entry up to and including `upto_seq`."""

    upto_seq: int
    digest: bytes

    def to_wire(self) -> list[Any]:
        return [ANCHOR_TYPE, ANCHOR_SCHEMA, self.upto_seq, self.digest]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> ChronicleAnchor:
        try:
            obj = decode(data, max_size=256)
        except EncodingError as exc:
            raise MalformedAnchor(f"chronicle anchor: {exc}") from None
        if not (isinstance(obj, list) and len(obj) == 4 and obj[0] == ANCHOR_TYPE
                and obj[1] == ANCHOR_SCHEMA and not isinstance(obj[1], bool)
                and is_uint(obj[2]) and _id(obj[3])):
            raise MalformedAnchor("chronicle anchor: expected [\"chronicle-anchor\", 1, "
                                  "upto_seq, 32-byte digest]")
        return cls(obj[2], obj[3])

    def as_read(self) -> dict[str, Any]:
        return {"upto_seq": self.upto_seq, "digest": self.digest}


def next_anchor_digest(previous: bytes, entry_encodings: Sequence[bytes]) -> bytes:
    """`blake3(previous ‖ e_1 ‖ … ‖ e_k)`: each encoding is one self-delimiting CBOR item,
    so the concatenation is unambiguous."""
    return digest(previous + b"".join(entry_encodings))


def recompute_anchors(entries_encodings: Sequence[bytes], anchor_every: int
                      ) -> list[ChronicleAnchor]:
    """Every anchor a Chronicle with `anchor_every` commits over these entries (in seq order,
    starting at seq 0). Pure: anyone can run it over an archive's entries."""
    if not (is_uint(anchor_every) and 0 < anchor_every <= MAX_ANCHOR_EVERY):
        raise LocalError(f"anchor_every must be 1..{MAX_ANCHOR_EVERY}")
    anchors: list[ChronicleAnchor] = []
    previous = GENESIS_ANCHOR_DIGEST
    for end in range(anchor_every, len(entries_encodings) + 1, anchor_every):
        previous = next_anchor_digest(previous, entries_encodings[end - anchor_every:end])
        anchors.append(ChronicleAnchor(end - 1, previous))
    return anchors


# ---------------------------------------------------------------------------------------
# Validation of append arguments (stateless)


@dataclass(frozen=True, slots=True)
class AppendFields:
    kind: str
    subject: bytes
    body: bytes
    evidence_pointers: tuple[EvidencePointer, ...]


def _bad_args(detail: str) -> InvalidCommand:
    return InvalidCommand(f"append: {detail}", reason="bad_args")


def _bad_evidence(detail: str) -> InvalidCommand:
    return InvalidCommand(f"append: evidence body: {detail}", reason="bad_evidence")


def parse_append_fields(kind: Any, subject: Any, body: Any, pointers: Any) -> AppendFields:
    """Types and bounds of an append's fields (no evidence verification)."""
    if not (isinstance(kind, str) and kind in KINDS):
        raise _bad_args(f"kind must be one of {', '.join(KINDS)}")
    if not _id(subject):
        raise _bad_args("subject must be 32 bytes")
    if not isinstance(body, bytes):
        raise _bad_args("body must be a byte string (deterministic CBOR)")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidCommand(f"append: body of {len(body)} bytes exceeds {MAX_BODY_BYTES}",
                             reason="too_large")
    try:
        decode(body, max_size=MAX_BODY_BYTES)
    except EncodingError as exc:
        raise _bad_args(f"body is not one deterministic CBOR item: {exc}") from None
    if not isinstance(pointers, list):
        raise _bad_args("evidence_pointers must be an array")
    if len(pointers) > MAX_EVIDENCE_POINTERS:
        raise InvalidCommand(f"append: {len(pointers)} evidence pointers exceed "
                             f"{MAX_EVIDENCE_POINTERS}", reason="too_large")
    parsed = []
    for i, p in enumerate(pointers):
        if not (isinstance(p, list) and len(p) == 3 and _id(p[0]) and is_uint(p[1])
                and p[1] >= 1 and _id(p[2])):
            raise _bad_args(f"evidence_pointers[{i}] must be [32-byte component id, height "
                            ">= 1, 32-byte block digest]")
        parsed.append(EvidencePointer(p[0], p[1], p[2]))
    return AppendFields(kind, subject, body, tuple(parsed))


@dataclass(frozen=True, slots=True)
class EvidenceBody:
    """The body of an `evidence` entry: the accused committee, described in full so anyone
    can rebuild it, and the evidence bytes (`coalitiond.consensus.evidence` encoding).

        {"committee": [network_name, component_kind, component_name, [member keys],
                       fault_bound, epoch, component_config_digest],
         "evidence": bytes}
    """

    committee: CommitteeSpec
    evidence: Evidence

    @staticmethod
    def committee_wire(c: CommitteeSpec) -> list[Any]:
        return [c.network_name, c.component_kind, c.component_name, list(c.members),
                c.fault_bound, c.epoch, c.component_config_digest]

    def encode(self) -> bytes:
        return encode({"committee": self.committee_wire(self.committee),
                       "evidence": self.evidence.encode()})

    @classmethod
    def parse(cls, body: bytes) -> EvidenceBody:
        """InvalidCommand (reason bad_evidence) unless `body` describes a committee and
        evidence that verifies against it."""
        obj = decode(body, max_size=MAX_BODY_BYTES)  # callers checked it decodes
        if not (isinstance(obj, dict) and set(obj) == _EVIDENCE_BODY_KEYS):
            raise _bad_evidence("must be a map {committee, evidence}")
        c, ev = obj["committee"], obj["evidence"]
        if not (isinstance(c, list) and len(c) == 7):
            raise _bad_evidence("committee must be [network_name, component_kind, "
                                "component_name, [member keys], fault_bound, epoch, "
                                "component_config_digest]")
        network, ckind, name, members, fault_bound, epoch, config_digest = c
        if not all(isinstance(s, str) and 0 < len(s) <= MAX_NAME_LEN
                   for s in (network, ckind, name)):
            raise _bad_evidence(f"committee names must be text of 1..{MAX_NAME_LEN} chars")
        if not (isinstance(members, list) and 0 < len(members) <= MAX_COMMITTEE_MEMBERS
                and all(isinstance(m, bytes) and len(m) == PUBLIC_KEY_LEN for m in members)):
            raise _bad_evidence(f"committee members must be 1..{MAX_COMMITTEE_MEMBERS} "
                                "32-byte keys")
        if not (is_uint(fault_bound) and is_uint(epoch) and _id(config_digest)):
            raise _bad_evidence("committee fault_bound and epoch must be unsigned, the config "
                                "digest 32 bytes")
        try:
            committee = CommitteeSpec(network, ckind, name, tuple(members), fault_bound, epoch,
                                      config_digest)
        except LocalError as exc:
            raise _bad_evidence(f"committee: {exc}") from None
        if not (isinstance(ev, bytes) and len(ev) <= MAX_EVIDENCE_SIZE):
            raise _bad_evidence(f"evidence must be at most {MAX_EVIDENCE_SIZE} bytes")
        try:
            evidence = Evidence.decode(ev)
            evidence.verify(committee)
        except RemoteError as exc:
            raise _bad_evidence(str(exc)) from None
        return cls(committee, evidence)


def check_append_fields(fields: AppendFields) -> None:
    """The checks beyond types: an evidence entry's body must verify and its subject must
    be the accused committee's id."""
    if fields.kind != EVIDENCE_KIND:
        return
    body = EvidenceBody.parse(fields.body)
    if fields.subject != body.committee.committee_id:
        raise InvalidCommand(
            f"append: evidence subject {fields.subject.hex()} is not the committee id "
            f"{body.committee.committee_id.hex()}", reason="wrong_subject")


# ---------------------------------------------------------------------------------------
# The component


@register
class Chronicle(Component):
    kind = "chronicle"
    signature = "chronicle/1"

    def __init__(self, anchor_every: int, sink_kind: str = "file", chain_id: int | None = None,
                 contract: bytes | None = None, follow_almanac: bytes | None = None) -> None:
        if not (is_uint(anchor_every) and 0 < anchor_every <= MAX_ANCHOR_EVERY):
            raise OperatorError(f"component.anchor_every: must be 1..{MAX_ANCHOR_EVERY}")
        if sink_kind not in ANCHOR_SINK_KINDS:
            raise OperatorError(f"component.anchor_sink.kind: must be one of "
                                f"{', '.join(ANCHOR_SINK_KINDS)}")
        if sink_kind == "evm":
            if not (is_uint(chain_id) and chain_id is not None and chain_id >= 1):
                raise OperatorError("component.anchor_sink.chain_id: required for evm, >= 1")
            if not (isinstance(contract, bytes) and len(contract) == EVM_ADDRESS_LEN):
                raise OperatorError(f"component.anchor_sink.contract: required for evm, "
                                    f"{EVM_ADDRESS_LEN} bytes")
        elif chain_id is not None or contract is not None:
            raise OperatorError(f"component.anchor_sink: chain_id and contract belong to the "
                                f"evm sink, not {sink_kind!r}")
        if follow_almanac is not None and not _id(follow_almanac):
            raise OperatorError(f"component.follow_almanac: must be {ID_LEN} bytes or absent")
        self.anchor_every = anchor_every
        self.sink_kind = sink_kind
        self.chain_id = chain_id
        self.contract = contract
        #: The Almanac committee whose stamps date entries; the daemon passes it to the
        #: Executor (`Executor(..., follow_almanac=component.follow_almanac)`).
        self.follow_almanac = follow_almanac
        #: Encodings in seq order: Merkle leaves, log entries, snapshot rows, anchor input.
        self._entries: list[bytes] = []
        #: Sum of len(e) over `_entries` (the MAX_CHRONICLE_BYTES bound).
        self._entry_bytes = 0
        self._tree = MemoryTree()
        self._anchors: list[bytes] = []
        self._anchor_tree = MemoryTree()
        self._last_anchor_digest = GENESIS_ANCHOR_DIGEST

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Chronicle:
        """From `config.ChronicleConfig.to_cbor()`: `{anchor_every, anchor_sink: {kind,
        chain_id, contract}, follow_almanac}`."""
        unknown = sorted(set(params) - _PARAM_KEYS)
        if unknown:
            raise OperatorError(f"component.{unknown[0]}: unknown key for a chronicle")
        if "anchor_every" not in params:
            raise OperatorError("component.anchor_every: required")
        sink = params.get("anchor_sink")
        if not isinstance(sink, Mapping):
            raise OperatorError("component.anchor_sink: required, a table {kind, ...}")
        unknown = sorted(set(sink) - _SINK_KEYS)
        if unknown:
            raise OperatorError(f"component.anchor_sink.{unknown[0]}: unknown key")
        return cls(params["anchor_every"], sink.get("kind", ""), sink.get("chain_id"),
                   sink.get("contract"), params.get("follow_almanac"))

    def params(self) -> dict[str, Any]:
        """The consensus parameters, in `from_params` shape."""
        return {"anchor_every": self.anchor_every,
                "anchor_sink": {"kind": self.sink_kind, "chain_id": self.chain_id,
                                "contract": self.contract},
                "follow_almanac": self.follow_almanac}

    def config_digest(self) -> bytes:
        return hash_structure(CONFIG_TYPE, 1, self.signature, self.anchor_every,
                              [self.sink_kind, self.chain_id, self.contract],
                              self.follow_almanac)

    # -- commands ---------------------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        self._check(command)

    def _check(self, command: Command) -> AppendFields:
        if command.op != APPEND_OP:
            raise InvalidCommand(f"unknown op {command.op!r} (a chronicle accepts: append)",
                                 reason="unknown_op")
        args = command.args
        if set(args) != _APPEND_KEYS:
            raise _bad_args("args must be exactly {kind, subject, body, evidence_pointers}")
        fields = parse_append_fields(args["kind"], args["subject"], args["body"],
                                     args["evidence_pointers"])
        check_append_fields(fields)
        return fields

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for envelope in envelopes:
            for index, command in enumerate(envelope.commands):
                results.append(self._apply_one(ctx, envelope, index, command))
        return results

    def _apply_one(self, ctx: BlockContext, envelope: Envelope, index: int,
                   command: Command) -> CommandResult:
        # Again, not trusting that a quorum checked: replay and catch-up apply this too.
        try:
            fields = self._check(command)
        except InvalidCommand as exc:
            return Refused(exc.reason, str(exc))
        if len(self._entries) >= MAX_CHRONICLE_ENTRIES:
            return Refused("chronicle_full", f"the chronicle holds its maximum of "
                           f"{MAX_CHRONICLE_ENTRIES} entries")
        entry = ChronicleEntry(len(self._entries), fields.kind, fields.subject, fields.body,
                               fields.evidence_pointers, ctx.tick, ctx.height,
                               envelope.envelope_id, index, envelope.client)
        encoded = entry.encode()
        if self._entry_bytes + len(encoded) > MAX_CHRONICLE_BYTES:
            return Refused("chronicle_full", f"the chronicle holds {self._entry_bytes} bytes of "
                           f"entries; this {len(encoded)}-byte entry would pass its maximum of "
                           f"{MAX_CHRONICLE_BYTES}")
        self._entries.append(encoded)
        self._entry_bytes += len(encoded)
        self._tree.append_hash(leaf_hash(encoded))
        return Applied(entry.seq, (encoded,))

    def end_block(self, ctx: BlockContext) -> Applied | None:
        """Commit every anchor now due; they are the block's own entries (anchor index)."""
        first = len(self._anchors)
        produced: list[bytes] = []
        while (len(self._anchors) + 1) * self.anchor_every <= len(self._entries):
            end = (len(self._anchors) + 1) * self.anchor_every
            self._last_anchor_digest = next_anchor_digest(
                self._last_anchor_digest, self._entries[end - self.anchor_every:end])
            encoded = ChronicleAnchor(end - 1, self._last_anchor_digest).encode()
            self._anchors.append(encoded)
            self._anchor_tree.append_hash(leaf_hash(encoded))
            produced.append(encoded)
        return Applied(first, tuple(produced)) if produced else None

    # -- commitment -------------------------------------------------------------------

    def _root_preimage(self) -> list[Any]:
        return [STATE_TYPE, 1, len(self._entries), self._tree.root(), len(self._anchors),
                self._anchor_tree.root()]

    def state_root(self) -> bytes:
        return hash_structure(*self._root_preimage())

    # -- reads ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def entry_encodings(self) -> list[bytes]:
        """A copy of every entry encoding, in seq order (auditors, comparison)."""
        return list(self._entries)

    def anchors(self) -> list[ChronicleAnchor]:
        return [ChronicleAnchor.decode(a) for a in self._anchors]

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            last = ChronicleAnchor.decode(self._anchors[-1]) if self._anchors else None
            return {"count": len(self._entries), "tree_root": self._tree.root(),
                    "anchors": len(self._anchors), "anchor_root": self._anchor_tree.root(),
                    "latest_anchor_seq": None if last is None else last.upto_seq,
                    "latest_anchor": None if last is None else last.as_read(),
                    "anchor_every": self.anchor_every, "state_root": self.state_root()}
        if name == "entry":
            expect_args(name, args, {"seq"})
            seq = args["seq"]
            if not is_uint(seq):
                raise QueryError("entry: seq must be an unsigned integer")
            if seq >= len(self._entries):
                raise QueryNotFound(f"entry: no entry {seq} (the chronicle has "
                                 f"{len(self._entries)})")
            encoded = self._entries[seq]
            return {"entry": ChronicleEntry.decode(encoded).as_read(), "encoded": encoded,
                    "state_proof": state_proof(encoded, seq, self._tree,
                                               self._root_preimage())}
        if name == "since":
            return since_page(name, args, "seq", self._entries, MAX_QUERY_ENTRIES,
                              lambda row: ChronicleEntry.decode(row).as_read())
        if name == "anchor":
            expect_args(name, args, {"upto_seq"})
            upto = args["upto_seq"]
            if not is_uint(upto):
                raise QueryError("anchor: upto_seq must be an unsigned integer")
            index, rest = divmod(upto + 1, self.anchor_every)
            if rest or index == 0 or index > len(self._anchors):
                raise QueryNotFound(f"anchor: no anchor ends at seq {upto} (anchors end every "
                                 f"{self.anchor_every} entries; {len(self._anchors)} so far)")
            encoded = self._anchors[index - 1]
            return {"anchor": ChronicleAnchor.decode(encoded).as_read(), "encoded": encoded,
                    "state_proof": state_proof(encoded, index - 1, self._anchor_tree,
                                               self._root_preimage())}
        if name == "anchors":
            expect_args(name, args, {"since"}, {"limit"})
            since = uint_arg(name, args, "since", what="an unsigned integer (an entry seq)")
            limit = limit_arg(name, args, MAX_QUERY_ANCHORS)
            # The first anchor whose upto_seq >= since.
            first = min(since // self.anchor_every, len(self._anchors))
            chosen = [ChronicleAnchor.decode(a)
                      for a in self._anchors[first:first + limit]]
            return {"anchors": [a.as_read() for a in chosen],
                    "next": chosen[-1].upto_seq + 1 if chosen else since,
                    "count": len(self._anchors)}
        raise QueryError(f"unknown chronicle query {name!r} (known: anchor, anchors, entry, "
                         "head, since)")

    # -- snapshot ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _SNAPSHOT.encode(self._entries, self._anchors)

    def restore(self, data: bytes) -> None:
        _SNAPSHOT.restore(self, data, self._state_from_snapshot)

    def _state_from_snapshot(self, fields: list[Any]) -> dict[str, Any]:
        rows, anchor_rows = fields
        if len(rows) > MAX_CHRONICLE_ENTRIES:
            raise _SNAPSHOT.error(f"more than {MAX_CHRONICLE_ENTRIES} entries")
        total = sum(len(row) for row in rows if isinstance(row, bytes))
        if total > MAX_CHRONICLE_BYTES:
            raise _SNAPSHOT.error(f"{total} bytes of entries exceed {MAX_CHRONICLE_BYTES}")
        tree = MemoryTree()
        previous: ChronicleEntry | None = None
        for seq, row in enumerate(rows):
            entry = _entry_from_snapshot(seq, row, previous)
            tree.append_hash(leaf_hash(row))
            previous = entry
        expected = [a.encode() for a in recompute_anchors(rows, self.anchor_every)]
        if anchor_rows != expected:
            raise _SNAPSHOT.error("the anchors are not those the entries give with "
                                  f"anchor_every={self.anchor_every}")
        anchor_tree = MemoryTree()
        for row in expected:
            anchor_tree.append_hash(leaf_hash(row))
        return {"_entries": list(rows), "_tree": tree, "_entry_bytes": total,
                "_anchors": expected, "_anchor_tree": anchor_tree,
                "_last_anchor_digest": (ChronicleAnchor.decode(expected[-1]).digest
                                        if expected else GENESIS_ANCHOR_DIGEST)}


def _entry_from_snapshot(seq: int, row: Any, previous: ChronicleEntry | None
                         ) -> ChronicleEntry:
    def bad(what: str) -> MalformedSnapshot:
        return _SNAPSHOT.error(f"entry {seq}: {what}")

    if not isinstance(row, bytes):
        raise bad("expected a byte string")
    try:
        entry = ChronicleEntry.decode(row)
    except MalformedEntry as exc:
        raise bad(str(exc)) from None
    if entry.seq != seq:
        raise bad(f"sequence number {entry.seq}, expected {seq}")
    if previous is not None:
        if entry.height < previous.height:
            raise bad("height goes backwards")
        # Stamps only move forward (the executor refuses stale ones) and never go away.
        if previous.tick is not None and (entry.tick is None or entry.tick < previous.tick):
            raise bad("tick goes backwards")
    try:
        check_append_fields(AppendFields(entry.kind, entry.subject, entry.body,
                                         entry.evidence_pointers))
    except InvalidCommand as exc:
        raise bad(str(exc)) from None
    return entry


# ---------------------------------------------------------------------------------------
# Client side


def append_command(kind: str, subject: bytes, body: Any, *,
                   evidence_pointers: Sequence[EvidencePointer] = ()) -> Command:
    """An `append` command; `body` is any CBOR value (encoded here)."""
    return Command(APPEND_OP, {"kind": kind, "subject": subject, "body": encode(body),
                               "evidence_pointers": [p.to_wire() for p in evidence_pointers]})


def evidence_command(committee: CommitteeSpec, evidence: Evidence) -> Command:
    """An `append` of kind `evidence` for equivocation evidence from `committee`."""
    return Command(APPEND_OP, {"kind": EVIDENCE_KIND, "subject": committee.committee_id,
                               "body": EvidenceBody(committee, evidence).encode(),
                               "evidence_pointers": []})


_DEMO_KINDS: Final = ("note", "advisory", "publication")


def demo_commands(round: int) -> list[Command]:
    """Valid appends for `coalitiond devnet --component chronicle`: one of each of note,
    advisory and publication, about a subject derived from the round number."""
    if not is_uint(round):
        raise LocalError("demo round must be an unsigned integer")
    subject = hash_structure("chronicle-demo-subject", 1, round)
    return [append_command(kind, subject, {"round": round, "kind": kind,
                                           "text": f"devnet {kind} {round}"})
            for kind in _DEMO_KINDS]
