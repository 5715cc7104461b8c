"""The start-up recall (docs/protocol.md §8, issue #14 hole 5): a member restarted from a
wiped data directory or an old backup asks its peers what they saw it sign, and never signs
at or below it. Real cores; every message crosses the wire as the shell sends it (encode,
decode, verify_message)."""

from __future__ import annotations

from typing import Any

import pytest
from test_consensus_core import (
    COMMITTEE,
    CONFIG,
    KEYS,
    blk,
    cert,
    core,
    own_votes,
    proposal,
    refusals,
)

from coalitiond.consensus.events import (
    Broadcast,
    DurableState,
    GuardRecord,
    MessageReceived,
    PersistSignerGuard,
    Send,
    SetTimer,
    Start,
    TimerFired,
    TimerKind,
)
from coalitiond.consensus.limits import (
    MAX_RECALL_ANSWER_SIZE,
    MAX_RECALL_STATEMENTS,
    RECALL_ROUNDS,
)
from coalitiond.consensus.messages import (
    BadSignature,
    Message,
    Nullification,
    RecallAnswer,
    RecalledStatement,
    RecallRequest,
    decode_message,
    encode_message,
    verify_message,
)
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import ZERO_DIGEST, MalformedMessage, Vote, VoteKind
from coalitiond.consensus.voter import Core
from coalitiond.primitives.encoding import encode
from coalitiond.testing.cores import AnsweringCore, end_recall


def wire(msg: Message) -> Message:
    """What the shell hands the core: the message encoded, decoded and signature-checked."""
    got = decode_message(COMMITTEE, encode_message(COMMITTEE, msg))
    verify_message(COMMITTEE, got)
    return got


def answers_to(peer: Core, requester: int) -> list[RecallAnswer]:
    actions = peer.step(MessageReceived(requester, wire(RecallRequest())))
    out = [a.message for a in actions if isinstance(a, Send) and a.to == requester
           and isinstance(a.message, RecallAnswer)]
    return [wire(m) for m in out]  # type: ignore[misc]


def restarted(member: int, durable: DurableState | None = None) -> tuple[Core, list[Any]]:
    c = AnsweringCore(COMMITTEE, KEYS[member], CONFIG, durable)
    return c, c.step(Start())


def test_a_member_restored_from_an_old_backup_does_not_sign_over_what_it_signed_after_it(
        ) -> None:
    """Member 0 notarised block A in view 3, then was restored from a backup whose guard
    ends in view 1 (not lost: old, so `guard_lost` is False and the flag does not help).
    Its peers saw the vote for A; they tell it, and it refuses to notarise B in view 3."""
    a = blk(3, 3, commands=(b"a",))
    before = Vote.sign(KEYS[0], COMMITTEE, 0, VoteKind.NOTARIZE, 3, a.digest)
    peers = [core(i) for i in (1, 2, 3)]
    for p in peers:
        p.step(MessageReceived(0, wire(before)))

    backup = DurableState(guard=(GuardRecord(0, 1, SignedKind.NULLIFY, ZERO_DIGEST),))
    c, started = restarted(0, backup)
    assert Broadcast(RecallRequest()) in started
    assert SetTimer(TimerKind.RECALL, 1, CONFIG.view_timeout_ms // RECALL_ROUNDS) in started
    assert c.abstaining  # nothing is signed while the recall is open
    for p in peers[:2]:  # q - 1 = 2 answers end the recall
        [answer] = answers_to(p, 0)
        assert answer.statements == (RecalledStatement(SignedKind.NOTARIZE, 3, a.digest,
                                                       before.signature),)
        assert refusals(c.step(MessageReceived(p.me, answer))) == []
    # The committee moves on to view 3 (views 1 and 2 nullified without member 0).
    for v in (1, 2):
        c.step(MessageReceived(1, wire(Nullification(cert(VoteKind.NULLIFY, v)))))
    assert c.view == 3
    b = blk(3, 3, commands=(b"b",))
    actions = c.step(proposal(b))
    assert own_votes(actions) == [], "notarised B over its own vote for A in view 3"
    assert not any(isinstance(x, PersistSignerGuard) for x in actions)
    assert c.abstaining
    assert own_votes(c.step(TimerFired(TimerKind.LEADER, 3))) == []
    # Past the recalled view it signs again.
    c.step(MessageReceived(1, wire(Nullification(cert(VoteKind.NULLIFY, 3)))))
    assert c.view == 4 and not c.abstaining
    assert [(v.kind, v.view) for v in own_votes(c.step(TimerFired(TimerKind.LEADER, 4)))] == [
        (VoteKind.NULLIFY, 4)]


def test_a_recalled_statement_the_guard_holds_does_not_stop_the_member_ending_its_view(
        ) -> None:
    """A whole-committee restart (n = 3, q = 3): member 0 notarised A in view 3 and the
    committee stopped before any view-3 certificate. Its peers return that vote, which its
    own durable guard already holds: nothing is missing, so the horizon stays where it was
    and its view timer still nullifies view 3. With the horizon at 3 it never could, and a
    peer that nullified view 3 meanwhile can no longer notarise: view 3 ends for nobody."""
    a = blk(3, 3, commands=(b"a",))
    before = Vote.sign(KEYS[0], COMMITTEE, 0, VoteKind.NOTARIZE, 3, a.digest)
    peers = [core(i) for i in (1, 2)]
    for p in peers:
        p.step(MessageReceived(0, wire(before)))
    own = DurableState(guard=(GuardRecord(0, 3, SignedKind.NOTARIZE, a.digest),))
    c, _ = restarted(0, own)
    assert c.view == 3
    for p in peers:
        [answer] = answers_to(p, 0)
        assert [(s.kind, s.view) for s in answer.statements] == [(SignedKind.NOTARIZE, 3)]
        assert refusals(c.step(MessageReceived(p.me, answer))) == []
    assert not c.abstaining
    assert [(v.kind, v.view) for v in own_votes(c.step(TimerFired(TimerKind.VIEW, 3)))] == [
        (VoteKind.NULLIFY, 3)]
    # Its guard still refuses a second notarise in view 3.
    assert own_votes(c.step(proposal(blk(3, 3, commands=(b"b",))))) == []


def test_recalled_statements_enter_the_guard_so_a_second_restart_keeps_them() -> None:
    """Peers answer each asker once per view: a member restarted twice while the committee
    waits in one view gets no answers the second time. What the first recall returned is
    in its guard (durably) by then, and the guard refuses the conflicting vote."""
    a = blk(3, 3, commands=(b"a",))
    before = Vote.sign(KEYS[0], COMMITTEE, 0, VoteKind.NOTARIZE, 3, a.digest)
    peer = core(1)
    peer.step(MessageReceived(0, wire(before)))
    backup = DurableState(guard=(GuardRecord(0, 1, SignedKind.NULLIFY, ZERO_DIGEST),))
    first, _ = restarted(0, backup)
    [answer] = answers_to(peer, 0)
    actions = first.step(MessageReceived(1, answer))
    record = PersistSignerGuard(0, 3, SignedKind.NOTARIZE, a.digest)
    assert actions == [record]  # durable before anything else happens
    assert answers_to(peer, 0) == []  # the second run asks in the same view: no answer
    second, _ = restarted(0, DurableState(guard=(*backup.guard, GuardRecord(
        record.epoch, record.view, record.kind, record.digest))))
    end_recall(second)
    for v in (1, 2):
        second.step(MessageReceived(1, wire(Nullification(cert(VoteKind.NULLIFY, v)))))
    assert second.view == 3
    assert own_votes(second.step(proposal(blk(3, 3, commands=(b"b",))))) == []


def test_a_wiped_member_recalls_its_proposal_too() -> None:
    """A wiped data directory looks like a fresh start: it asks all the same. Its own
    proposal for view 1, which peers saw, keeps it from proposing another one there."""
    first = blk(1, 1, commands=(b"first",))
    peers = [core(i) for i in (0, 2)]
    for p in peers:
        p.step(proposal(first))
    c, _ = restarted(1)
    for p in peers:
        [answer] = answers_to(p, 1)
        assert [(s.kind, s.view) for s in answer.statements] == [(SignedKind.PROPOSE, 1)]
        c.step(MessageReceived(p.me, answer))
    assert c.abstaining
    assert c.step(TimerFired(TimerKind.BATCH, 1)) == []  # no second proposal for view 1


def test_q_minus_one_answers_or_the_timer_end_the_recall_and_a_waiting_proposal_is_voted(
        ) -> None:
    b = blk(1, 1, commands=(b"x",))
    c, _ = restarted(0)
    assert own_votes(c.step(proposal(b))) == []  # kept until the recall ends
    assert c.step(MessageReceived(2, wire(RecallAnswer(0, ())))) == []
    assert c.abstaining  # one answer of q - 1 = 2
    actions = c.step(MessageReceived(3, wire(RecallAnswer(0, ()))))
    assert [(v.kind, v.digest) for v in own_votes(actions)] == [(VoteKind.NOTARIZE, b.digest)]
    assert not c.abstaining
    # With fewer answers the timer ends it: the request is sent again each round (links may
    # have come up since), the last round ends it, and the leader proposes.
    leader, _ = restarted(1)
    leader.step(MessageReceived(0, wire(RecallAnswer(1, ()))))
    interval = CONFIG.view_timeout_ms // RECALL_ROUNDS
    for r in range(1, RECALL_ROUNDS):
        assert leader.step(TimerFired(TimerKind.RECALL, r)) == [
            Broadcast(RecallRequest()), SetTimer(TimerKind.RECALL, r + 1, interval)]
        assert leader.abstaining
    actions = leader.step(TimerFired(TimerKind.RECALL, RECALL_ROUNDS))
    assert SetTimer(TimerKind.BATCH, 1, CONFIG.batch_interval_ms) in actions
    assert not leader.abstaining
    assert leader.step(TimerFired(TimerKind.RECALL, RECALL_ROUNDS)) == []  # ended once


def test_a_peer_answers_each_requester_once_per_view_with_its_newest_of_each_kind() -> None:
    p = core(1)
    own = [Vote.sign(KEYS[0], COMMITTEE, 0, kind, view, digest)
           for kind, view, digest in ((VoteKind.NOTARIZE, 1, b"\x01" * 32),
                                      (VoteKind.FINALIZE, 1, b"\x01" * 32),
                                      (VoteKind.NOTARIZE, 2, b"\x02" * 32),
                                      (VoteKind.NULLIFY, 2, ZERO_DIGEST))]
    for v in own:
        p.step(MessageReceived(0, wire(v)))
    other = Vote.sign(KEYS[2], COMMITTEE, 2, VoteKind.NOTARIZE, 5, b"\x05" * 32)
    p.step(MessageReceived(2, wire(other)))
    [answer] = answers_to(p, 0)
    assert answer.member == 0
    assert [(s.kind, s.view) for s in answer.statements] == [
        (SignedKind.NOTARIZE, 2), (SignedKind.FINALIZE, 1), (SignedKind.NULLIFY, 2)]
    assert answers_to(p, 0) == []  # asked again in the same view: no second answer
    # Its own request (the shell feeds our broadcasts back to us) and an unknown sender.
    assert p.step(MessageReceived(1, RecallRequest())) == []
    assert p.step(MessageReceived(None, RecallRequest())) == []
    p.step(MessageReceived(2, wire(Nullification(cert(VoteKind.NULLIFY, 1)))))
    assert len(answers_to(p, 0)) == 1  # a new view: one more answer


def _raw(body: object) -> bytes:
    return encode(["consensus", 1, COMMITTEE.committee_id, "recalled", body])


def _st(member: int, view: int, signer: int | None = None) -> list[object]:
    key = KEYS[member if signer is None else signer]
    d = b"\x09" * 32
    return [int(SignedKind.NOTARIZE), view, d,
            sign_statement(key, COMMITTEE, SignedKind.NOTARIZE, view, d)]


@pytest.mark.parametrize(("body", "reason"), [
    ("garbage", "recalled: expected [member, [statement, ...]]"),
    ([0, [_st(0, 1)] * (MAX_RECALL_STATEMENTS + 1)],
     f"recalled: {MAX_RECALL_STATEMENTS + 1} statements, at most {MAX_RECALL_STATEMENTS}"),
    ([0, [[9, 1, b"\x09" * 32, b"\x00" * 64]]], "recalled: unknown statement kind"),
    ([0, [[0, 0, b"\x09" * 32, b"\x00" * 64]]], "recalled: view must be a positive integer"),
    ([0, [[0, 1, b"\x09" * 31, b"\x00" * 64]]], "recalled: digest must be 32 bytes"),
    ([0, [[0, 1, b"\x09" * 32, b"\x00" * 63]]], "recalled: signature must be 64 bytes"),
    ([0, [_st(0, 1)], b"\x00" * MAX_RECALL_ANSWER_SIZE],
     f"bytes, at most {MAX_RECALL_ANSWER_SIZE}"),
])
def test_garbage_and_oversize_answers_are_refused_when_decoded(body: object,
                                                                reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        decode_message(COMMITTEE, _raw(body))


def test_a_forged_answer_is_refused_by_the_signature_check() -> None:
    """A peer cannot make us abstain through a view it invents: every statement must carry
    our own signature."""
    forged = decode_message(COMMITTEE, _raw([0, [_st(0, 10**9, signer=1)]]))
    with pytest.raises(BadSignature, match=r"^recalled notarize of member 0 for view "
                                           r"1000000000 does not verify$"):
        verify_message(COMMITTEE, forged)
    with pytest.raises(BadSignature, match=r"^recalled statements of member index 7, n=4$"):
        verify_message(COMMITTEE, decode_message(COMMITTEE, _raw([7, []])))
    assert isinstance(forged, RecallAnswer)


def test_the_core_refuses_answers_it_did_not_ask_for() -> None:
    c, _ = restarted(0)
    mine = RecallAnswer(0, (RecalledStatement(SignedKind.NOTARIZE, 1, b"\x01" * 32,
                                              sign_statement(KEYS[0], COMMITTEE,
                                                             SignedKind.NOTARIZE, 1,
                                                             b"\x01" * 32)),))
    theirs = RecallAnswer(2, (RecalledStatement(SignedKind.NOTARIZE, 50, b"\x01" * 32,
                                                sign_statement(KEYS[2], COMMITTEE,
                                                               SignedKind.NOTARIZE, 50,
                                                               b"\x01" * 32)),))
    assert refusals(c.step(MessageReceived(1, wire(theirs)))) == [
        "recall answer from member 1 about member 2's statements, we are 0"]
    assert refusals(c.step(MessageReceived(None, wire(mine)))) == [
        "recall answer from None: not a peer"]
    assert refusals(c.step(MessageReceived(0, wire(mine)))) == [
        "recall answer from 0: not a peer"]
    assert refusals(c.step(MessageReceived(1, wire(RecallAnswer(0, ()))))) == []
    assert refusals(c.step(MessageReceived(1, wire(mine)))) == [
        "second recall answer from member 1"]
    end_recall(c)
    # Closed: a peer replaying our own vote of the current view must not silence us.
    assert refusals(c.step(MessageReceived(2, wire(mine)))) == [
        "recall answer while no recall is open"]
    assert not c.abstaining
    b = blk(1, 1, commands=(b"x",))
    assert [v.kind for v in own_votes(c.step(proposal(b)))] == [VoteKind.NOTARIZE]

