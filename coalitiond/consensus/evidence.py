"""Equivocation evidence: two conflicting signed statements by one member (DESIGN §2.5).

An `Evidence` is self-contained: anyone holding the committee configuration can check it
offline with `verify(committee)`; nothing else (no block, no log) is needed, because proposals
and votes sign only `(committee id, epoch, view, digest)` (docs/protocol.md §5).

The two statements are stored sorted by their encoding, so two members that observed the same
pair in different orders produce the same bytes and the same evidence id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SIGNATURE_LEN
from ..primitives.encoding import decode, encode
from ..primitives.errors import LocalError, RemoteError
from ..primitives.identity import digest as blake3_digest
from .statements import SignedKind, conflicts, statement_is_valid
from .types import MAX_EVIDENCE_SIZE, SCHEMA, MalformedMessage


class InvalidEvidence(RemoteError):
    """Evidence that does not prove what it claims (a peer sent it, or it is corrupted)."""


class EvidenceKind(enum.Enum):
    CONFLICTING_PROPOSAL = "conflicting-proposal"
    CONFLICTING_NOTARIZE = "conflicting-notarize"
    CONFLICTING_FINALIZE = "conflicting-finalize"
    NULLIFY_FINALIZE = "nullify-finalize"


_SAME_KIND: Final = {
    SignedKind.PROPOSE: EvidenceKind.CONFLICTING_PROPOSAL,
    SignedKind.NOTARIZE: EvidenceKind.CONFLICTING_NOTARIZE,
    SignedKind.FINALIZE: EvidenceKind.CONFLICTING_FINALIZE,
}


def evidence_kind(kind_a: SignedKind, kind_b: SignedKind) -> EvidenceKind | None:
    """Which evidence a pair of statement kinds can make (given conflicting digests)."""
    if kind_a is kind_b:
        return _SAME_KIND.get(kind_a)
    if {kind_a, kind_b} == {SignedKind.NULLIFY, SignedKind.FINALIZE}:
        return EvidenceKind.NULLIFY_FINALIZE
    return None


@dataclass(frozen=True, slots=True)
class Statement:
    """One signed statement of the accused member, verbatim."""

    kind: SignedKind
    digest: bytes
    signature: bytes

    def to_wire(self) -> list[Any]:
        return [int(self.kind), self.digest, self.signature]


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: EvidenceKind
    committee_id: bytes
    epoch: int
    view: int
    member: int
    a: Statement
    b: Statement
    id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", blake3_digest(self.encode()))

    @classmethod
    def build(cls, committee: CommitteeSpec, view: int, member: int, first: Statement,
              second: Statement) -> Evidence:
        """Evidence from two conflicting statements; LocalError if they do not conflict."""
        kind = evidence_kind(first.kind, second.kind)
        if kind is None or not conflicts(first.kind, first.digest, second.kind, second.digest):
            raise LocalError("evidence from statements that do not conflict")
        a, b = sorted((first, second), key=lambda s: encode(s.to_wire()))
        return cls(kind, committee.committee_id, committee.epoch, view, member, a, b)

    def to_wire(self) -> list[Any]:
        return ["evidence", SCHEMA, self.kind.value, self.committee_id, self.epoch, self.view,
                self.member, self.a.to_wire(), self.b.to_wire()]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> Evidence:
        def expect(cond: bool, what: str) -> None:
            if not cond:
                raise MalformedMessage(f"evidence: {what}")

        expect(isinstance(obj, list) and len(obj) == 9, "expected a 9-item array")
        tag, schema, kind, committee_id, epoch, view, member, a, b = obj
        expect(tag == "evidence" and schema == SCHEMA, "wrong type tag or schema")
        kinds = {k.value: k for k in EvidenceKind}
        expect(isinstance(kind, str) and kind in kinds, f"unknown kind {kind!r}")
        expect(isinstance(committee_id, bytes) and len(committee_id) == 32,
               "committee id must be 32 bytes")
        expect(all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                   for x in (epoch, view, member)),
               "epoch/view/member must be unsigned integers")
        statements = []
        for s in (a, b):
            expect(isinstance(s, list) and len(s) == 3, "a statement is [kind, digest, sig]")
            sk, sd, ss = s
            expect(isinstance(sk, int) and not isinstance(sk, bool) and sk in (0, 1, 2, 3),
                   "unknown statement kind")
            expect(isinstance(sd, bytes) and len(sd) == 32, "statement digest must be 32 bytes")
            expect(isinstance(ss, bytes) and len(ss) == SIGNATURE_LEN,
                   "statement signature must be 64 bytes")
            statements.append(Statement(SignedKind(sk), sd, ss))
        return cls(kinds[kind], committee_id, epoch, view, member, statements[0], statements[1])

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        return cls.from_wire(decode(data, max_size=MAX_EVIDENCE_SIZE))

    def verify(self, committee: CommitteeSpec) -> None:
        """Raise InvalidEvidence unless this proves `member` equivocated in `committee`."""
        if self.committee_id != committee.committee_id:
            raise InvalidEvidence(
                f"evidence for committee {self.committee_id.hex()[:16]}, "
                f"expected {committee.committee_id.hex()[:16]}")
        if self.epoch != committee.epoch:
            raise InvalidEvidence(
                f"evidence for epoch {self.epoch}, committee is at epoch {committee.epoch}")
        if not 0 <= self.member < committee.n:
            raise InvalidEvidence(f"evidence names member index {self.member}, n={committee.n}")
        if evidence_kind(self.a.kind, self.b.kind) is not self.kind:
            raise InvalidEvidence(
                f"statement kinds {self.a.kind.name}/{self.b.kind.name} do not make "
                f"{self.kind.value} evidence")
        if not conflicts(self.a.kind, self.a.digest, self.b.kind, self.b.digest):
            raise InvalidEvidence("the two statements do not conflict (same digest)")
        if encode(self.a.to_wire()) >= encode(self.b.to_wire()):
            raise InvalidEvidence("evidence statements are not in canonical order")
        for label, s in (("first", self.a), ("second", self.b)):
            if not statement_is_valid(committee, self.member, s.kind, self.view, s.digest,
                                      s.signature):
                raise InvalidEvidence(
                    f"{label} statement signature of member {self.member} does not verify "
                    f"({s.kind.name.lower()}, view {self.view})")
