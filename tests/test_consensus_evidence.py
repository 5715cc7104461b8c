"""Evidence objects: built from conflicting statements, verifiable offline, every refusal."""

from __future__ import annotations

import dataclasses

import pytest

from coalitiond.consensus.evidence import (
    Evidence,
    EvidenceKind,
    InvalidEvidence,
    Statement,
)
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import ZERO_DIGEST, MalformedMessage
from coalitiond.primitives.errors import LocalError
from coalitiond.testing.byzantine import foreign_committee
from coalitiond.testing.simulator import make_committee

COMMITTEE, KEYS = make_committee(5)
D1, D2 = b"\x01" * 32, b"\x02" * 32


def st(kind: SignedKind, digest: bytes, view: int = 4, member: int = 3) -> Statement:
    return Statement(kind, digest, sign_statement(KEYS[member], COMMITTEE, kind, view, digest))


@pytest.mark.parametrize(("a", "b", "kind"), [
    ((SignedKind.PROPOSE, D1), (SignedKind.PROPOSE, D2), EvidenceKind.CONFLICTING_PROPOSAL),
    ((SignedKind.NOTARIZE, D1), (SignedKind.NOTARIZE, D2), EvidenceKind.CONFLICTING_NOTARIZE),
    ((SignedKind.FINALIZE, D1), (SignedKind.FINALIZE, D2), EvidenceKind.CONFLICTING_FINALIZE),
    ((SignedKind.NULLIFY, ZERO_DIGEST), (SignedKind.FINALIZE, D1), EvidenceKind.NULLIFY_FINALIZE),
])
def test_each_kind_verifies_offline(a: tuple[SignedKind, bytes], b: tuple[SignedKind, bytes],
                                    kind: EvidenceKind) -> None:
    ev = Evidence.build(COMMITTEE, 4, 3, st(*a), st(*b))
    assert ev.kind is kind
    ev.verify(COMMITTEE)
    # Offline: only bytes and the committee configuration.
    again = Evidence.decode(ev.encode())
    assert again == ev and again.id == ev.id
    again.verify(COMMITTEE)


def test_same_pair_same_bytes_in_either_order() -> None:
    a, b = st(SignedKind.NOTARIZE, D1), st(SignedKind.NOTARIZE, D2)
    assert Evidence.build(COMMITTEE, 4, 3, a, b).encode() == \
        Evidence.build(COMMITTEE, 4, 3, b, a).encode()


def test_build_refuses_non_conflicting() -> None:
    with pytest.raises(LocalError, match=r"do not conflict"):
        Evidence.build(COMMITTEE, 4, 3, st(SignedKind.NOTARIZE, D1),
                       st(SignedKind.NOTARIZE, D1))
    with pytest.raises(LocalError, match=r"do not conflict"):
        Evidence.build(COMMITTEE, 4, 3, st(SignedKind.NOTARIZE, D1),
                       st(SignedKind.FINALIZE, D2))


def good() -> Evidence:
    return Evidence.build(COMMITTEE, 4, 3, st(SignedKind.NOTARIZE, D1),
                          st(SignedKind.NOTARIZE, D2))


def test_wrong_committee_refused() -> None:
    other = foreign_committee(COMMITTEE)
    with pytest.raises(InvalidEvidence, match=(
            f"^evidence for committee {COMMITTEE.committee_id.hex()[:16]}, "
            f"expected {other.committee_id.hex()[:16]}$")):
        good().verify(other)


def test_wrong_epoch_refused() -> None:
    ev = dataclasses.replace(good(), epoch=7)
    with pytest.raises(InvalidEvidence, match=r"^evidence for epoch 7, committee is at epoch 0$"):
        ev.verify(COMMITTEE)


def test_member_out_of_range_refused() -> None:
    ev = dataclasses.replace(good(), member=9)
    with pytest.raises(InvalidEvidence, match=r"^evidence names member index 9, n=5$"):
        ev.verify(COMMITTEE)


def test_wrong_member_signature_refused() -> None:
    ev = dataclasses.replace(good(), member=2)  # statements are member 3's
    with pytest.raises(InvalidEvidence, match=r"^first statement signature of member 2 does not "
                                              r"verify \(notarize, view 4\)$"):
        ev.verify(COMMITTEE)


def test_wrong_view_refused() -> None:
    ev = dataclasses.replace(good(), view=5)
    with pytest.raises(InvalidEvidence, match=r"does not verify"):
        ev.verify(COMMITTEE)


def test_kind_mismatch_refused() -> None:
    ev = dataclasses.replace(good(), kind=EvidenceKind.CONFLICTING_FINALIZE)
    with pytest.raises(InvalidEvidence, match=r"^statement kinds NOTARIZE/NOTARIZE do not make "
                                              "conflicting-finalize evidence$"):
        ev.verify(COMMITTEE)


def test_same_digest_refused() -> None:
    s = st(SignedKind.NOTARIZE, D1)
    ev = Evidence(EvidenceKind.CONFLICTING_NOTARIZE, COMMITTEE.committee_id, 0, 4, 3, s, s)
    with pytest.raises(InvalidEvidence, match=r"^the two statements do not conflict \(same "
                                              r"digest\)$"):
        ev.verify(COMMITTEE)


def test_non_canonical_order_refused() -> None:
    e = good()
    swapped = Evidence(e.kind, e.committee_id, e.epoch, e.view, e.member, e.b, e.a)
    with pytest.raises(InvalidEvidence, match=r"^evidence statements are not in canonical order$"):
        swapped.verify(COMMITTEE)


def test_malformed_refused() -> None:
    wire = good().to_wire()
    wire[2] = "made-up"
    with pytest.raises(MalformedMessage, match=r"^evidence: unknown kind 'made-up'$"):
        Evidence.from_wire(wire)
    with pytest.raises(MalformedMessage, match=r"^evidence: expected a 9-item array$"):
        Evidence.from_wire(["evidence", 1])
