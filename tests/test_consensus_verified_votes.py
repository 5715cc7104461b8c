"""VerifiedVotes: certificates made of already-verified vote signatures skip re-verification,
and nothing else does."""

from __future__ import annotations

import pytest

from coalitiond.consensus.messages import (
    BadSignature,
    Finalization,
    Notarization,
    Nullification,
    Proposal,
    ProposalHeader,
    VerifiedVotes,
    verify_message,
)
from coalitiond.consensus.types import (
    ZERO_DIGEST,
    Block,
    Certificate,
    InvalidCertificate,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.testing.simulator import make_committee

COMMITTEE, KEYS = make_committee(4)


def block(view: int = 1) -> Block:
    g = genesis_block(COMMITTEE)
    return Block(COMMITTEE.epoch, 1, view, g.digest, 1, (b"a",), 0, ZERO_DIGEST)


def votes(kind: VoteKind, view: int, digest: bytes, signers: range = range(3)) -> list[Vote]:
    return [Vote.sign(KEYS[i], COMMITTEE, i, kind, view, digest) for i in signers]


def test_certificate_of_remembered_votes_is_covered() -> None:
    b = block()
    known = VerifiedVotes(64)
    vs = votes(VoteKind.NOTARIZE, 1, b.digest)
    for v in vs:
        known.add_vote(v)
    cert = Certificate.from_votes(vs)
    assert known.covers(cert)
    assert known.unknown_in(cert) == 0


def test_certificate_with_one_unseen_signature_is_not_covered() -> None:
    b = block()
    known = VerifiedVotes(64)
    vs = votes(VoteKind.FINALIZE, 1, b.digest, range(4))
    for v in vs[:3]:
        known.add_vote(v)
    cert = Certificate.from_votes(vs)
    assert not known.covers(cert)
    assert known.unknown_in(cert) == 1


def test_forged_signature_for_a_known_signer_is_still_verified_and_refused() -> None:
    b = block()
    known = VerifiedVotes(64)
    vs = votes(VoteKind.NOTARIZE, 1, b.digest)
    for v in vs:
        known.add_vote(v)
    good = Certificate.from_votes(vs)
    forged_sig = bytes(64)
    forged = Certificate(good.kind, good.epoch, good.view, good.digest,
                         ((0, forged_sig), *good.signatures[1:]))
    assert not known.covers(forged)
    with pytest.raises(InvalidCertificate):
        verify_message(COMMITTEE, Notarization(forged, b), known)


def test_signature_known_for_another_statement_does_not_cover() -> None:
    b = block()
    known = VerifiedVotes(64)
    for v in votes(VoteKind.NOTARIZE, 1, b.digest):
        known.add_vote(v)
    # Same signers and signature bytes, relabelled as a finalization: a different statement.
    n = Certificate.from_votes(votes(VoteKind.NOTARIZE, 1, b.digest))
    relabelled = Certificate(VoteKind.FINALIZE, n.epoch, n.view, n.digest, n.signatures)
    assert not known.covers(relabelled)
    with pytest.raises(InvalidCertificate):
        verify_message(COMMITTEE, Finalization(relabelled, b), known)


def test_covered_certificate_still_needs_a_quorum_of_distinct_signers() -> None:
    known = VerifiedVotes(64)
    vs = votes(VoteKind.NULLIFY, 1, ZERO_DIGEST, range(2))
    for v in vs:
        known.add_vote(v)
    short = Certificate.from_votes(vs)
    assert known.covers(short)
    with pytest.raises(InvalidCertificate, match="quorum"):
        verify_message(COMMITTEE, Nullification(short), known)


def test_verify_message_with_covered_certificate_passes_without_signature_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = block()
    known = VerifiedVotes(64)
    vs = votes(VoteKind.NOTARIZE, 1, b.digest)
    for v in vs:
        known.add_vote(v)
    cert = Certificate.from_votes(vs)

    def no_checks(*_: object) -> bool:
        raise AssertionError("a covered certificate must not be verified again")

    monkeypatch.setattr("coalitiond.consensus.types.is_valid", no_checks)
    verify_message(COMMITTEE, Notarization(cert, b), known)


def test_verified_certificate_signatures_are_remembered() -> None:
    b = block()
    known = VerifiedVotes(64)
    cert = Certificate.from_votes(votes(VoteKind.FINALIZE, 1, b.digest))
    verify_message(COMMITTEE, Finalization(cert, b), known)
    assert not known.covers(cert)  # verify_message does not write: the caller does
    known.add_certificate(cert)
    assert known.covers(cert)


def test_oldest_signatures_are_forgotten_first_at_the_bound() -> None:
    b = block()
    known = VerifiedVotes(3)
    vs = votes(VoteKind.NOTARIZE, 1, b.digest, range(4))
    for v in vs:
        known.add_vote(v)
    assert len(known) == 3
    assert not known.covers(Certificate.from_votes(vs[:1]))
    assert known.covers(Certificate.from_votes(vs[1:]))


def test_relayed_header_of_a_verified_proposal_is_not_verified_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = block()
    proposal = Proposal.sign(KEYS[1], COMMITTEE, b)
    known = VerifiedVotes(64)
    verify_message(COMMITTEE, proposal, known)
    known.add_proposal(b.epoch, b.view, b.digest, b.proposer, proposal.signature)

    def no_checks(*_: object) -> bool:
        raise AssertionError("a header of a verified proposal must not be verified again")

    monkeypatch.setattr("coalitiond.consensus.statements.is_valid", no_checks)
    verify_message(COMMITTEE, proposal.header, known)
    verify_message(COMMITTEE, proposal, known)  # and the proposal after its header


def test_header_with_other_signature_bytes_is_still_verified_and_refused() -> None:
    b = block()
    proposal = Proposal.sign(KEYS[1], COMMITTEE, b)
    known = VerifiedVotes(64)
    known.add_proposal(b.epoch, b.view, b.digest, b.proposer, proposal.signature)
    forged = ProposalHeader(b.view, b.digest, b.proposer, bytes(64))
    with pytest.raises(BadSignature, match="proposal header"):
        verify_message(COMMITTEE, forged, known)
    other_view = ProposalHeader(b.view + 1, b.digest, b.proposer, proposal.signature)
    with pytest.raises(BadSignature, match="proposal header"):
        verify_message(COMMITTEE, other_view, known)
