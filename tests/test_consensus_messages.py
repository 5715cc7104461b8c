"""Wire messages of the consensus core: round trips, golden bytes, and every refusal."""

from __future__ import annotations

import pytest

from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.messages import (
    MAX_MESSAGE_SIZE,
    BadSignature,
    EvidenceMessage,
    Finalization,
    Notarization,
    Nullification,
    Proposal,
    SyncRequest,
    WrongCommittee,
    decode_message,
    encode_message,
    verify_fetched,
    verify_message,
)
from coalitiond.consensus.statements import (
    PROPOSE_TAG,
    SignedKind,
    proposal_payload,
    sign_statement,
)
from coalitiond.consensus.types import (
    ZERO_DIGEST,
    Block,
    Certificate,
    InvalidCertificate,
    MalformedMessage,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.primitives.committee import CommitteeSpec, default_fault_bound
from coalitiond.primitives.encoding import OversizeError, TrailingBytesError, encode
from coalitiond.testing.byzantine import foreign_committee
from coalitiond.testing.simulator import make_committee

COMMITTEE, KEYS = make_committee(4)


def block(view: int = 1, proposer: int = 1, commands: tuple[bytes, ...] = (b"a",)) -> Block:
    g = genesis_block(COMMITTEE)
    return Block(COMMITTEE.epoch, 1, view, g.digest, proposer, commands, 0, ZERO_DIGEST)


def cert(kind: VoteKind, view: int, digest: bytes, signers: range = range(3)) -> Certificate:
    return Certificate.from_votes([Vote.sign(KEYS[i], COMMITTEE, i, kind, view, digest)
                                   for i in signers])


# ---- the quorum dial table of docs/protocol.md §1 ----

@pytest.mark.parametrize(("n", "q", "safe", "live"), [
    (3, 3, 2, 0), (4, 3, 1, 1), (5, 4, 2, 1), (6, 5, 3, 1), (7, 6, 4, 1), (9, 7, 4, 2),
    (11, 9, 6, 2), (13, 10, 6, 3), (15, 12, 8, 3),
])
def test_quorum_dial_table(n: int, q: int, safe: int, live: int) -> None:
    spec = CommitteeSpec("net", "feed", "x", tuple(bytes([i]) * 32 for i in range(n)),
                         default_fault_bound(n))
    assert (spec.quorum, spec.safety_bound, spec.liveness_bound) == (q, safe, live)


# ---- golden bytes ----

def test_proposal_payload_golden() -> None:
    assert COMMITTEE.committee_id.hex() == (
        "2037754d6ff1baf61f174be1f52cc1e920ddf68852f9fb74d7c07a194064a33f")
    payload = proposal_payload(COMMITTEE.committee_id, 0, 7, b"\x11" * 32)
    assert payload.hex() == (
        "866870726f706f73616c015820" + COMMITTEE.committee_id.hex() + "0007"
        "58201111111111111111111111111111111111111111111111111111111111111111")
    sig = KEYS[2].sign(PROPOSE_TAG, payload)
    assert sig.hex() == (
        "a3170ed9fed40364ea9e1f98805aa0faaa6bc3753ce63eb4ed2beebee09d5d55"
        "07b21e4aee48ee33ac744e450cd77e20f466acd17a6797d4717a5025f0714903")
    assert sign_statement(KEYS[2], COMMITTEE, SignedKind.PROPOSE, 7, b"\x11" * 32) == sig


# ---- round trips ----

def all_messages() -> list[object]:
    b = block()
    ev = Evidence.build(
        COMMITTEE, 3, 2,
        Statement(SignedKind.NOTARIZE, b"\x01" * 32,
                  sign_statement(KEYS[2], COMMITTEE, SignedKind.NOTARIZE, 3, b"\x01" * 32)),
        Statement(SignedKind.NOTARIZE, b"\x02" * 32,
                  sign_statement(KEYS[2], COMMITTEE, SignedKind.NOTARIZE, 3, b"\x02" * 32)))
    proposal = Proposal.sign(KEYS[1], COMMITTEE, b)
    return [
        proposal,
        proposal.header,
        Vote.sign(KEYS[0], COMMITTEE, 0, VoteKind.NOTARIZE, 1, b.digest),
        Notarization(cert(VoteKind.NOTARIZE, 1, b.digest), b),
        Notarization(cert(VoteKind.NOTARIZE, 1, b.digest), None),
        Finalization(cert(VoteKind.FINALIZE, 1, b.digest), b),
        Nullification(cert(VoteKind.NULLIFY, 2, ZERO_DIGEST)),
        EvidenceMessage(ev),
        SyncRequest(5),
    ]


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_round_trip_and_verify(msg: object) -> None:
    data = encode_message(COMMITTEE, msg)  # type: ignore[arg-type]
    back = decode_message(COMMITTEE, data)
    assert back == msg
    verify_message(COMMITTEE, back)


# ---- refusals, each with its exact message ----

def test_wrong_committee_refused() -> None:
    foreign = foreign_committee(COMMITTEE)
    vote = Vote.sign(KEYS[0], foreign, 0, VoteKind.NULLIFY, 1, ZERO_DIGEST)
    with pytest.raises(WrongCommittee, match=(
            f"^message for committee {foreign.committee_id.hex()[:16]}, "
            f"we are {COMMITTEE.committee_id.hex()[:16]}$")):
        decode_message(COMMITTEE, encode_message(foreign, vote))


def test_wrong_epoch_refused() -> None:
    later = CommitteeSpec(COMMITTEE.network_name, COMMITTEE.component_kind,
                          COMMITTEE.component_name, COMMITTEE.members, COMMITTEE.fault_bound,
                          epoch=1)
    vote = Vote.sign(KEYS[0], later, 0, VoteKind.NULLIFY, 1, ZERO_DIGEST)
    with pytest.raises(WrongCommittee, match=r"^vote for epoch 1, committee is at epoch 0$"):
        verify_message(COMMITTEE, vote)


def test_malformed_envelope_refused() -> None:
    with pytest.raises(MalformedMessage, match=r"^message: expected a 5-item envelope$"):
        decode_message(COMMITTEE, encode(["consensus", 1]))
    with pytest.raises(MalformedMessage, match=r"^message: unknown type 'bogus'$"):
        decode_message(COMMITTEE, encode(["consensus", 1, COMMITTEE.committee_id, "bogus", []]))
    with pytest.raises(MalformedMessage, match=r"^vote: expected an 8-item array$"):
        decode_message(COMMITTEE, encode(["consensus", 1, COMMITTEE.committee_id, "vote",
                                          ["vote", 1]]))
    with pytest.raises(MalformedMessage, match=r"^sync: expected \[view\]$"):
        decode_message(COMMITTEE, encode(["consensus", 1, COMMITTEE.committee_id, "sync",
                                          [-1]]))


def test_oversize_and_trailing_bytes_refused() -> None:
    with pytest.raises(OversizeError):
        decode_message(COMMITTEE, b"\x00" * (MAX_MESSAGE_SIZE + 1))
    good = encode_message(COMMITTEE, SyncRequest(1))
    with pytest.raises(TrailingBytesError):
        decode_message(COMMITTEE, good + b"\x00")


def test_bad_signature_refused() -> None:
    vote = Vote.sign(KEYS[1], COMMITTEE, 1, VoteKind.NOTARIZE, 5, b"\x03" * 32)
    flipped = Vote(vote.kind, vote.epoch, 5, vote.digest, 1,
                   bytes([vote.signature[0] ^ 1]) + vote.signature[1:])
    with pytest.raises(BadSignature, match=r"^notarize vote of member 1 for view 5 does not verify$"):
        verify_message(COMMITTEE, flipped)


def test_wrong_domain_tag_refused() -> None:
    """A finalise signature relabelled as a notarise vote must not verify."""
    fin = Vote.sign(KEYS[1], COMMITTEE, 1, VoteKind.FINALIZE, 5, b"\x03" * 32)
    relabelled = Vote(VoteKind.NOTARIZE, fin.epoch, 5, fin.digest, 1, fin.signature)
    with pytest.raises(BadSignature, match=r"^notarize vote of member 1 for view 5 does not verify$"):
        verify_message(COMMITTEE, relabelled)


def test_impersonation_refused() -> None:
    vote = Vote.sign(KEYS[1], COMMITTEE, 1, VoteKind.NOTARIZE, 5, b"\x03" * 32)
    claimed = Vote(vote.kind, vote.epoch, 5, vote.digest, 2, vote.signature)
    with pytest.raises(BadSignature, match=r"^notarize vote of member 2 for view 5 does not verify$"):
        verify_message(COMMITTEE, claimed)
    out_of_range = Vote(vote.kind, vote.epoch, 5, vote.digest, 9, vote.signature)
    with pytest.raises(BadSignature, match=r"^vote names member index 9, n=4$"):
        verify_message(COMMITTEE, out_of_range)


def test_proposal_signed_by_another_member_refused() -> None:
    b = block(proposer=1)
    forged = Proposal(b, sign_statement(KEYS[2], COMMITTEE, SignedKind.PROPOSE, 1, b.digest))
    with pytest.raises(BadSignature, match=r"^proposal of member 1 for view 1 does not verify$"):
        verify_message(COMMITTEE, forged)


def test_certificate_refusals() -> None:
    b = block()
    with pytest.raises(InvalidCertificate, match=r"^certificate has 2 signatures, quorum is 3$"):
        verify_message(COMMITTEE, Notarization(cert(VoteKind.NOTARIZE, 1, b.digest, range(2)),
                                               b))
    with pytest.raises(InvalidCertificate, match=r"^notarization carries a finalize certificate$"):
        verify_message(COMMITTEE, Notarization(cert(VoteKind.FINALIZE, 1, b.digest), b))
    other = block(commands=(b"other",))
    with pytest.raises(InvalidCertificate,
                       match=r"^finalization: block does not match the certificate$"):
        verify_message(COMMITTEE, Finalization(cert(VoteKind.FINALIZE, 1, b.digest), other))


def test_verify_fetched() -> None:
    g = genesis_block(COMMITTEE)
    b1 = Block(0, 1, 1, g.digest, 1, (), 0, ZERO_DIGEST)
    b2 = Block(0, 2, 2, b1.digest, 2, (), 0, ZERO_DIGEST)
    c2 = cert(VoteKind.FINALIZE, 2, b2.digest)
    verify_fetched(COMMITTEE, [(b1, c2), (b2, c2)])
    with pytest.raises(InvalidCertificate, match=r"^fetched block at height 2: its certificate "
                                                 "does not finalise it or a later block"):
        verify_fetched(COMMITTEE, [(b1, c2), (b2, cert(VoteKind.FINALIZE, 1, b1.digest))])
    stray = Block(0, 2, 2, b"\x09" * 32, 2, (), 0, ZERO_DIGEST)
    with pytest.raises(MalformedMessage, match=r"^fetched block at height 2 does not link"):
        verify_fetched(COMMITTEE, [(b1, cert(VoteKind.FINALIZE, 1, b1.digest)),
                                   (stray, cert(VoteKind.FINALIZE, 2, stray.digest))])
