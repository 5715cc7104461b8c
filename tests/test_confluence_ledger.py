"""The `ledger` confluence (SPEC §4.2, docs/confluences.md): deduplication by submission id
across citizens, per-recipient aggregation and running totals, failure modes, and the
SharedAttestation a consumer verifies offline."""

from __future__ import annotations

import pytest

from coalitiond.commands.envelope import InvalidCommand
from coalitiond.commands.member import MemberCommand
from coalitiond.components.confluence.ledger import Ledger
from coalitiond.consensus.types import Certificate
from coalitiond.integrator.shared_attestation import (
    BadPresentation,
    make_presentation,
    verify_presentation,
)
from coalitiond.primitives.encoding import decode, encode
from coalitiond.testing.confluence import ConfluenceRun, FeedCitizen

R1 = b"\x91" * 20
R2 = b"\x92" * 20


def sid(n: int) -> bytes:
    return bytes([n]) * 32


def world() -> tuple[list[FeedCitizen], ConfluenceRun]:
    a, b, c = FeedCitizen(1), FeedCitizen(2), FeedCitizen(3)
    a.refund(sid(1), 5, R1, 10)
    b.refund(sid(1), 5, R1, 10)     # the same submission through another citizen: once
    b.refund(sid(2), 5, R1, 7)
    c.refund(sid(3), 5, R2, 4)
    c.refund(sid(4), 6, R1, 100)
    for x in (a, b, c):
        x.slot(5)
        x.block()
    run = ConfluenceRun("ledger", [a, b, c])
    run.run(3)
    return [a, b, c], run


def test_refunds_are_deduplicated_and_aggregated_per_recipient() -> None:
    citizens, run = world()
    records = run.committed()
    assert [(r["slot"], r["recipient"], r["amount"], r["total"]) for r in records] == [
        (5, R1, 17, 17), (5, R2, 4, 4)]
    assert [s[0] for s in records[0]["submissions"]] == [sid(1), sid(2)]
    assert run.component.duplicates == 1
    # Slot 6 seals once everyone passed it; the running total carries over.
    for x in citizens:
        x.slot(6)
        x.block()
    run.run(3)
    last = run.committed()[-1]
    assert (last["slot"], last["recipient"], last["amount"], last["total"]) == (6, R1, 100, 117)


def test_a_refund_for_a_sealed_slot_is_late_and_changes_no_total() -> None:
    citizens, run = world()
    citizens[0].refund(sid(9), 5, R1, 1000)
    citizens[0].block()
    run.run(2)
    assert run.component.late == 1
    assert run.component.query("total", {"recipient": R1}) == {"recipient": R1, "total": 17}


def test_stall_mode_waits_for_a_stalled_citizen() -> None:
    a, b = FeedCitizen(1), FeedCitizen(2)
    a.refund(sid(1), 3, R1, 5)
    a.slot(3)
    a.block()
    b.block()
    run = ConfluenceRun("ledger", [a, b])
    run.run(5)
    assert run.committed() == []
    b.slot(3)
    b.block()
    run.run(2)
    (record,) = run.committed()
    assert (record["amount"], record["partial"], record["missing"]) == (5, False, [])


def test_partial_mode_attests_without_the_stalled_citizen() -> None:
    a, b = FeedCitizen(1), FeedCitizen(2)
    a.refund(sid(1), 3, R1, 5)
    a.slot(3)
    a.block()
    b.block()
    run = ConfluenceRun("ledger", [a, b], failure_mode="partial", deadline=2)
    run.run(2, advance_tick=True)
    assert run.committed() == []
    run.run(3, advance_tick=True)
    (record,) = run.committed()
    assert (record["amount"], record["partial"], record["missing"]) == (5, True, [1])
    b.refund(sid(2), 3, R1, 50)  # back, for a sealed slot: late
    b.slot(3)
    b.block()
    run.run(2, advance_tick=True)
    assert run.committed() == [record] and run.component.late == 1


def test_an_attestation_whose_amount_is_not_its_sum_is_refused() -> None:
    _, run = world()
    record = dict(run.committed()[0])
    record["amount"] += 1
    record["total"] += 1
    with pytest.raises(InvalidCommand, match="amount is not the sum"):
        run.component.check_member(MemberCommand.make(run.committee.committee_id, "attest",
                                                      record))


def _presentation(run: ConfluenceRun) -> tuple[bytes, int]:
    for item in run.items:
        for index, command in enumerate(item.block.commands):
            if b"attest" in command:
                assert item.finalization is not None
                return make_presentation(item.block, item.finalization, index), index
    raise AssertionError("no attest command")


def test_a_shared_attestation_verifies_offline_against_the_committee() -> None:
    _, run = world()
    data, _ = _presentation(run)
    checker = run.make_component(Ledger)
    record = verify_presentation(run.committee, checker, data)
    assert record == run.committed()[0]


def test_a_tampered_attestation_presentation_is_refused() -> None:
    _, run = world()
    data, index = _presentation(run)
    obj = decode(data)
    checker = run.make_component(Ledger)
    # Another total in the command: the commands no longer match the certified header.
    args = dict(MemberCommand.decode(obj[3][index]).args)
    args["total"] += 1
    args["amount"] += 1
    args["submissions"] = [[*args["submissions"][0][:5], args["submissions"][0][5] + 1],
                           *args["submissions"][1:]]
    obj[3][index] = MemberCommand.make(run.committee.committee_id, "attest", args).raw
    with pytest.raises(BadPresentation, match="commands digest differs"):
        verify_presentation(run.committee, checker, encode(obj))
    # A certificate short of a quorum.
    obj = decode(data)
    cert = Certificate.from_wire(obj[5])
    obj[5] = Certificate(cert.kind, cert.epoch, cert.view, cert.digest,
                         cert.signatures[:1]).to_wire()
    with pytest.raises(BadPresentation, match="quorum is 3"):
        verify_presentation(run.committee, checker, encode(obj))


def test_the_signed_bytes_of_an_attestation_are_the_documented_ones() -> None:
    """docs/confluences.md §5, rebuilt from the text with blake3 and raw ed25519 only."""
    import blake3
    import nacl.signing

    _, run = world()
    data, index = _presentation(run)
    tag, version, header, commands, at, cert = decode(data)
    assert (tag, version, at) == ("confluence-record", 1, index)
    assert blake3.blake3(encode(commands)).digest() == header[7]  # commands_digest
    digest = blake3.blake3(encode(header)).digest()
    _, _, kind, epoch, view, signed, sigs = cert
    assert (kind, signed) == (1, digest)
    cid = run.committee.committee_id
    message = b"coalitiond/finalize/v1\x00" + encode(["vote", 1, 1, cid, epoch, view, digest])
    assert len(sigs) >= run.committee.quorum
    for i, sig in sigs:
        nacl.signing.VerifyKey(run.committee.members[i]).verify(message, sig)
    assert commands[index] == encode(["member", 1, cid, "attest", run.committed()[0]])
