"""Chronicle's records (docs/chronicle.md): entries, evidence pointers, anchors and the
anchor chain (`recompute_anchors` gives any archive's anchors from its entries), the
stateless validation of `append` arguments (evidence bodies included: equivocation proven by
signatures alone), and the command builders. Everything here is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ...commands.envelope import Command, InvalidCommand
from ...consensus.evidence import Evidence
from ...consensus.types import MAX_COMMAND_SIZE, MAX_EVIDENCE_SIZE
from ...primitives.committee import MAX_COMMITTEE_MEMBERS, CommitteeSpec
from ...primitives.crypto import PUBLIC_KEY_LEN
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, LocalError, RemoteError
from ...primitives.identity import ID_LEN, digest
from ..base import is_uint
from .config import MAX_ANCHOR_EVERY

ENTRY_TYPE: Final = "chronicle-entry"
ENTRY_SCHEMA: Final = 1
ANCHOR_TYPE: Final = "chronicle-anchor"
ANCHOR_SCHEMA: Final = 1
APPEND_OP: Final = "append"

KINDS: Final = ("publication", "rotation", "retirement", "advisory", "evidence", "note")
EVIDENCE_KIND: Final = "evidence"
#: The digest chained into the first anchor.
GENESIS_ANCHOR_DIGEST: Final = b"\x00" * 32

#: Encoded body bound: half a command, leaving room for the rest of the envelope.
MAX_BODY_BYTES: Final = MAX_COMMAND_SIZE // 2
MAX_EVIDENCE_POINTERS: Final = 64
#: Bounds on the committee description inside an evidence body.
MAX_NAME_LEN: Final = 512
#: Largest encoded entry: body, pointers and the fixed fields with room to spare.
MAX_ENTRY_SIZE: Final = MAX_BODY_BYTES + MAX_EVIDENCE_POINTERS * 100 + 1024
_EVIDENCE_BODY_KEYS: Final = frozenset({"committee", "evidence"})


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


def bad_args(detail: str) -> InvalidCommand:
    return InvalidCommand(f"append: {detail}", reason="bad_args")


def _bad_evidence(detail: str) -> InvalidCommand:
    return InvalidCommand(f"append: evidence body: {detail}", reason="bad_evidence")


def parse_append_fields(kind: Any, subject: Any, body: Any, pointers: Any) -> AppendFields:
    """Types and bounds of an append's fields (no evidence verification)."""
    if not (isinstance(kind, str) and kind in KINDS):
        raise bad_args(f"kind must be one of {', '.join(KINDS)}")
    if not _id(subject):
        raise bad_args("subject must be 32 bytes")
    if not isinstance(body, bytes):
        raise bad_args("body must be a byte string (deterministic CBOR)")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidCommand(f"append: body of {len(body)} bytes exceeds {MAX_BODY_BYTES}",
                             reason="too_large")
    try:
        decode(body, max_size=MAX_BODY_BYTES)
    except EncodingError as exc:
        raise bad_args(f"body is not one deterministic CBOR item: {exc}") from None
    if not isinstance(pointers, list):
        raise bad_args("evidence_pointers must be an array")
    if len(pointers) > MAX_EVIDENCE_POINTERS:
        raise InvalidCommand(f"append: {len(pointers)} evidence pointers exceed "
                             f"{MAX_EVIDENCE_POINTERS}", reason="too_large")
    parsed = []
    for i, p in enumerate(pointers):
        if not (isinstance(p, list) and len(p) == 3 and _id(p[0]) and is_uint(p[1])
                and p[1] >= 1 and _id(p[2])):
            raise bad_args(f"evidence_pointers[{i}] must be [32-byte component id, height "
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
