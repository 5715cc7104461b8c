"""Signed statements: what a member can sign in consensus, and the exact bytes it signs.

A *statement* is `(kind, view, digest)` signed by one member under the kind's domain tag; the
payload names the committee and the epoch (DESIGN §2.2). Proposals sign only the block digest
(docs/protocol.md §2), so every statement is small and can be relayed or put into evidence
without the block. The four kinds are also the signer-guard kinds the store persists.
"""

from __future__ import annotations

import enum
from typing import Final

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey, is_valid
from ..primitives.encoding import encode
from .types import SCHEMA, VoteKind, vote_payload

PROPOSE_TAG: Final = b"coalitiond/propose/v1"


class SignedKind(enum.IntEnum):
    """What a member signs. Values 0–2 equal VoteKind's so a vote's kind maps directly."""

    NOTARIZE = 0
    FINALIZE = 1
    NULLIFY = 2
    PROPOSE = 3

    @property
    def domain_tag(self) -> bytes:
        if self is SignedKind.PROPOSE:
            return PROPOSE_TAG
        return VoteKind(int(self)).domain_tag

    @classmethod
    def of_vote(cls, kind: VoteKind) -> SignedKind:
        return cls(int(kind))


def proposal_payload(committee_id: bytes, epoch: int, view: int, digest: bytes) -> bytes:
    return encode(["proposal", SCHEMA, committee_id, epoch, view, digest])


def statement_payload(kind: SignedKind, committee_id: bytes, epoch: int, view: int,
                      digest: bytes) -> bytes:
    if kind is SignedKind.PROPOSE:
        return proposal_payload(committee_id, epoch, view, digest)
    return vote_payload(VoteKind(int(kind)), committee_id, epoch, view, digest)


def sign_statement(key: SigningKey, committee: CommitteeSpec, kind: SignedKind, view: int,
                   digest: bytes) -> bytes:
    payload = statement_payload(kind, committee.committee_id, committee.epoch, view, digest)
    return key.sign(kind.domain_tag, payload)


def statement_is_valid(committee: CommitteeSpec, member: int, kind: SignedKind, view: int,
                       digest: bytes, signature: bytes) -> bool:
    """True iff `signature` is member `member`'s on this statement in this committee/epoch."""
    if not 0 <= member < committee.n:
        return False
    payload = statement_payload(kind, committee.committee_id, committee.epoch, view, digest)
    return is_valid(committee.members[member], kind.domain_tag, payload, signature)


def conflicts(kind_a: SignedKind, digest_a: bytes, kind_b: SignedKind, digest_b: bytes) -> bool:
    """The guard rule: same kind with different digests, or nullify with finalise."""
    if kind_a is kind_b:
        return digest_a != digest_b
    return {kind_a, kind_b} == {SignedKind.NULLIFY, SignedKind.FINALIZE}
