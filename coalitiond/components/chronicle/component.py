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
from typing import Any, Final

from ...commands.envelope import Command, Envelope, InvalidCommand
from ...primitives.errors import LocalError, OperatorError
from ...primitives.identity import ID_LEN, hash_structure
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
    is_id,
    is_uint,
    register,
    state_proof,
)
from ..paging import limit_arg, since_page, uint_arg
from ..snapshot import SnapshotFormat, is_list
from .config import ANCHOR_SINK_KINDS, EVM_ADDRESS_LEN, MAX_ANCHOR_EVERY, MAX_EVM_MEMBERS
from .records import (
    APPEND_OP,
    GENESIS_ANCHOR_DIGEST,
    AppendFields,
    ChronicleAnchor,
    ChronicleEntry,
    MalformedEntry,
    append_command,
    bad_args,
    check_append_fields,
    next_anchor_digest,
    parse_append_fields,
    recompute_anchors,
)

STATE_TYPE: Final = "chronicle-state"
SNAPSHOT_TYPE: Final = "chronicle-snapshot"
CONFIG_TYPE: Final = "chronicle-config"

#: Entries are kept in memory; past this bound appends are refused ("chronicle_full").
MAX_CHRONICLE_ENTRIES: Final = 1_000_000
#: Total bytes of entry encodings held (entries reach ~38 KB, so the count bound alone
#: would allow ~38 GB); an append that would pass it is refused ("chronicle_full").
MAX_CHRONICLE_BYTES: Final = 1 << 30
#: Upper bound of entries or anchors one `since` / `anchors` read returns.
MAX_QUERY_ENTRIES: Final = 256
MAX_QUERY_ANCHORS: Final = 256
MAX_SNAPSHOT_SIZE: Final = 1 << 31

_PARAM_KEYS: Final = frozenset({"anchor_every", "anchor_sink", "follow_almanac"})
_SINK_KEYS: Final = frozenset({"kind", "chain_id", "contract", "members"})
_APPEND_KEYS: Final = frozenset({"kind", "subject", "body", "evidence_pointers"})
_SNAPSHOT: Final = SnapshotFormat("chronicle", SNAPSHOT_TYPE, 1, (is_list, is_list),
                                  '["chronicle-snapshot", 1, [entry bytes], [anchor bytes]]',
                                  max_size=MAX_SNAPSHOT_SIZE)



# ---------------------------------------------------------------------------------------
# The component


@register
class Chronicle(Component):
    kind = "chronicle"
    signature = "chronicle/1"

    def __init__(self, anchor_every: int, sink_kind: str = "file", chain_id: int | None = None,
                 contract: bytes | None = None, follow_almanac: bytes | None = None,
                 evm_members: Sequence[bytes] | None = None) -> None:
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
            if not (isinstance(evm_members, Sequence) and not isinstance(evm_members, bytes)
                    and 1 <= len(evm_members) <= MAX_EVM_MEMBERS
                    and all(isinstance(a, bytes) and len(a) == EVM_ADDRESS_LEN
                            for a in evm_members)
                    and len(set(evm_members)) == len(evm_members)):
                raise OperatorError(f"component.anchor_sink.members: required for evm, "
                                    f"1..{MAX_EVM_MEMBERS} distinct {EVM_ADDRESS_LEN}-byte "
                                    "addresses")
        elif chain_id is not None or contract is not None or evm_members is not None:
            raise OperatorError(f"component.anchor_sink: chain_id, contract and members "
                                f"belong to the evm sink, not {sink_kind!r}")
        if follow_almanac is not None and not is_id(follow_almanac):
            raise OperatorError(f"component.follow_almanac: must be {ID_LEN} bytes or absent")
        self.anchor_every = anchor_every
        self.sink_kind = sink_kind
        self.chain_id = chain_id
        self.contract = contract
        #: evm: the members' accounts, in member order (consensus content).
        self.evm_members: tuple[bytes, ...] | None = (tuple(evm_members) if sink_kind == "evm"
                                                      and evm_members is not None else None)
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
                   sink.get("contract"), params.get("follow_almanac"), sink.get("members"))

    def params(self) -> dict[str, Any]:
        """The consensus parameters, in `from_params` shape."""
        sink: dict[str, Any] = {"kind": self.sink_kind, "chain_id": self.chain_id,
                                "contract": self.contract}
        if self.evm_members is not None:
            sink["members"] = list(self.evm_members)
        return {"anchor_every": self.anchor_every, "anchor_sink": sink,
                "follow_almanac": self.follow_almanac}

    def config_digest(self) -> bytes:
        sink: list[Any] = [self.sink_kind, self.chain_id, self.contract]
        if self.evm_members is not None:
            sink.append(list(self.evm_members))
        return hash_structure(CONFIG_TYPE, 1, self.signature, self.anchor_every, sink,
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
            raise bad_args("args must be exactly {kind, subject, body, evidence_pointers}")
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
