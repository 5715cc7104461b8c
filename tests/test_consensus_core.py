"""The sans-IO core driven event by event: voting rules, guard ordering, refusals, restart."""

from __future__ import annotations

from typing import Any

import pytest

from coalitiond.consensus.events import (
    BlockExecuted,
    BlocksFetched,
    BlockValidated,
    Broadcast,
    CommandSubmitted,
    CoreConfig,
    DurableState,
    EvidenceFound,
    FetchBlocks,
    Finalized,
    GuardRecord,
    MessageReceived,
    PersistSignerGuard,
    RecordSeen,
    Refused,
    SeenStatement,
    Send,
    SetTimer,
    Start,
    StateDivergence,
    TimerFired,
    TimerKind,
    ValidateBlock,
    WrongRootFound,
)
from coalitiond.consensus.limits import MAX_VIEWS_AHEAD
from coalitiond.consensus.messages import (
    EvidenceMessage,
    Finalization,
    Notarization,
    Nullification,
    Proposal,
    RecallRequest,
)
from coalitiond.consensus.statements import SignedKind
from coalitiond.consensus.types import (
    EMPTY_LOG_ROOT,
    ZERO_DIGEST,
    Block,
    Certificate,
    CertifiedRoots,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.consensus.voter import Core
from coalitiond.testing.cores import AnsweringCore, started
from coalitiond.testing.simulator import make_committee

COMMITTEE, KEYS = make_committee(4)  # q = 3; leader of view v is v % 4
CONFIG = CoreConfig(leader_timeout_ms=200, view_timeout_ms=300, batch_interval_ms=20,
                    max_batch_commands=2, max_batch_bytes=4096, max_backoff_exponent=3)
GENESIS = genesis_block(COMMITTEE)


def core(member: int, durable: DurableState | None = None, **kw: object) -> Core:
    """A started core whose start-up recall (docs/protocol.md §8) ended with no answers."""
    c = AnsweringCore(COMMITTEE, KEYS[member], CONFIG, durable, **kw)  # type: ignore[arg-type]
    started(c)
    return c


def roots(height: int, state_root: bytes, log_size: int = 0,
          log_root: bytes = EMPTY_LOG_ROOT) -> CertifiedRoots:
    return CertifiedRoots(height, state_root, log_size, log_root)


def blk(view: int, proposer: int, parent: Block = GENESIS, commands: tuple[bytes, ...] = (),
        executed: tuple[int, bytes] | CertifiedRoots = (0, ZERO_DIGEST)) -> Block:
    claimed = executed if isinstance(executed, CertifiedRoots) else roots(*executed)
    return Block.with_roots(COMMITTEE.epoch, parent.height + 1, view, parent.digest, proposer,
                            commands, claimed)


def proposal(b: Block) -> MessageReceived:
    return MessageReceived(b.proposer, Proposal.sign(KEYS[b.proposer], COMMITTEE, b))


def vote(member: int, kind: VoteKind, view: int, digest: bytes = ZERO_DIGEST) -> MessageReceived:
    return MessageReceived(member, Vote.sign(KEYS[member], COMMITTEE, member, kind, view, digest))


def cert(kind: VoteKind, view: int, digest: bytes = ZERO_DIGEST,
         signers: tuple[int, ...] = (1, 2, 3)) -> Certificate:
    return Certificate.from_votes([Vote.sign(KEYS[i], COMMITTEE, i, kind, view, digest)
                                   for i in signers])


def own_votes(actions: list[object]) -> list[Vote]:
    return [a.message for a in actions
            if isinstance(a, Broadcast) and isinstance(a.message, Vote)]


def refusals(actions: list[object]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Refused)]


def test_start_asks_for_a_recall_and_arms_view_timers() -> None:
    c = Core(COMMITTEE, KEYS[0], CONFIG)
    assert c.step(Start()) == [Broadcast(RecallRequest()), SetTimer(TimerKind.RECALL, 1, 75),
                               SetTimer(TimerKind.LEADER, 1, 200),
                               SetTimer(TimerKind.VIEW, 1, 300)]


def test_leader_persists_guard_before_each_signature() -> None:
    leader = core(1)
    actions = leader.step(TimerFired(TimerKind.BATCH, 1))
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["PersistSignerGuard", "Broadcast", "PersistSignerGuard", "Broadcast"]
    g1, p, g2, v = actions
    assert isinstance(p, Broadcast) and isinstance(p.message, Proposal)
    assert g1 == PersistSignerGuard(0, 1, SignedKind.PROPOSE, p.message.block.digest)
    assert isinstance(v, Broadcast) and isinstance(v.message, Vote)
    assert g2 == PersistSignerGuard(0, 1, SignedKind.NOTARIZE, p.message.block.digest)


def _proposed(actions: list[Any]) -> list[tuple[bytes, ...]]:
    return [a.message.block.commands for a in actions
            if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]


def test_an_idle_leader_waits_the_idle_interval_then_proposes_an_empty_block() -> None:
    leader = Core(COMMITTEE, KEYS[1], CONFIG)
    assert SetTimer(TimerKind.BATCH, 1, 20) in started(leader)
    assert _proposed(leader.step(TimerFired(TimerKind.BATCH, 1))) == [()]


def test_a_command_reaching_a_leader_that_has_not_proposed_is_proposed_at_once() -> None:
    leader = Core(COMMITTEE, KEYS[1], CONFIG)
    started(leader)
    assert _proposed(leader.step(CommandSubmitted(b"one"))) == [(b"one",)]
    # Later commands of the view gather for the next one (batching by pipelining).
    assert _proposed(leader.step(CommandSubmitted(b"two"))) == []
    assert _proposed(leader.step(CommandSubmitted(b"three"))) == []
    # "one" stays pending until finalised (it is in a block in flight), the others wait.
    assert leader.pending_commands == 3


def test_duplicate_and_oversize_commands_refused() -> None:
    c = core(0)
    c.step(CommandSubmitted(b"x"))
    assert refusals(c.step(CommandSubmitted(b"x"))) == [
        "command refused: duplicate of a pending command"]
    assert refusals(c.step(CommandSubmitted(b"y" * 70_000))) == [
        "command refused: command of 70000 bytes exceeds 65536"]
    assert c.pending_commands == 1


def test_voter_notarizes_first_valid_proposal_and_relays_header() -> None:
    c = core(0)
    a = blk(1, 1, commands=(b"a",))
    actions = c.step(proposal(a))
    assert actions[0] == RecordSeen(SeenStatement(1, 1, SignedKind.PROPOSE, a.digest,
                                                  Proposal.sign(KEYS[1], COMMITTEE, a).signature))
    assert actions[1] == ValidateBlock(1, a.digest, (b"a",))  # answered valid by the shell
    assert actions[2] == PersistSignerGuard(0, 1, SignedKind.NOTARIZE, a.digest)
    assert [v.digest for v in own_votes(actions)] == [a.digest]
    headers = [x.message for x in actions if isinstance(x, Broadcast)
               and not isinstance(x.message, Vote)]
    assert headers == [Proposal.sign(KEYS[1], COMMITTEE, a).header]
    # A second, different proposal from the same leader: evidence, and no second vote.
    b = blk(1, 1, commands=(b"b",))
    actions = c.step(proposal(b))
    assert own_votes(actions) == []
    found = [x.evidence for x in actions if isinstance(x, EvidenceFound)]
    assert [(e.kind.value, e.member, e.view) for e in found] == [("conflicting-proposal", 1, 1)]
    found[0].verify(COMMITTEE)
    assert Broadcast(EvidenceMessage(found[0])) in actions


def test_proposal_from_non_leader_refused() -> None:
    c = core(0)
    actions = c.step(proposal(blk(1, 2)))
    assert refusals(actions) == ["proposal for view 1 from member 2, the leader is 1"]
    assert own_votes(actions) == []


def test_far_future_and_genesis_views_refused() -> None:
    c = core(0)
    far = 1 + MAX_VIEWS_AHEAD + 1
    assert refusals(c.step(vote(2, VoteKind.NULLIFY, far))) == [
        f"vote for view {far} is more than {MAX_VIEWS_AHEAD} views ahead of 1"]
    assert refusals(c.step(vote(2, VoteKind.NULLIFY, 0))) == ["vote for view 0 (genesis)"]


def test_validation_is_asked_of_the_shell_and_its_refusal_means_no_vote() -> None:
    """The core reads no shell state: a proposal that passes its rules becomes a
    ValidateBlock action, and only the answer decides the vote (docs/protocol.md §6)."""
    c = Core(COMMITTEE, KEYS[0], CONFIG)
    started(c)
    bad = blk(1, 1, commands=(b"bad",))
    actions = c.step(proposal(bad))
    assert [a for a in actions if isinstance(a, ValidateBlock)] == [
        ValidateBlock(1, bad.digest, (b"bad",))]
    assert own_votes(actions) == []
    actions = c.step(BlockValidated(1, bad.digest, False))
    assert refusals(actions) == ["proposal for view 1: the component refused the block's commands"]
    assert own_votes(actions) == []
    c = Core(COMMITTEE, KEYS[0], CONFIG)
    started(c)
    good = blk(1, 1, commands=(b"good",))
    c.step(proposal(good))
    assert own_votes(c.step(BlockValidated(1, b"\x09" * 32, True))) == []  # not asked
    assert [v.digest for v in own_votes(c.step(BlockValidated(1, good.digest, True)))] == [
        good.digest]
    assert own_votes(c.step(BlockValidated(1, good.digest, True))) == []  # answered once


def test_command_repeated_in_block_refused() -> None:
    c = core(0)
    actions = c.step(proposal(blk(1, 1, commands=(b"a", b"a"))))
    assert refusals(actions) == ["proposal for view 1: a command appears twice in the block"]


def finalized_at_height_1(member: int) -> tuple[Core, Block]:
    b1 = blk(1, 1)
    durable = DurableState(tip=b1, tip_certificate=cert(VoteKind.FINALIZE, 1, b1.digest))
    return core(member, durable), b1


def wrong_roots(actions: list[object]) -> list[WrongRootFound]:
    return [a for a in actions if isinstance(a, WrongRootFound)]


def test_roots_checked_against_our_own_before_notarising() -> None:
    """docs/protocol.md §7: roots a voter executed must be its own; a wrong claim is refused
    and kept as evidence against the proposer that verifies offline."""
    mine = roots(1, b"\x0a" * 32, 5, b"\x0e" * 32)
    for theirs in (roots(1, b"\x0b" * 32, 5, b"\x0e" * 32),   # state root
                   roots(1, b"\x0a" * 32, 6, b"\x0e" * 32),   # log size
                   roots(1, b"\x0a" * 32, 5, b"\x0f" * 32)):  # log root
        c, b1 = finalized_at_height_1(0)
        assert c.view == 2
        c.step(BlockExecuted(mine))
        actions = c.step(proposal(blk(2, 2, b1, executed=theirs)))
        assert refusals(actions) == [
            "proposal for view 2: the roots claimed for height 1 differ from ours"]
        assert own_votes(actions) == []
        assert not any(isinstance(a, StateDivergence) for a in actions)
        (found,) = wrong_roots(actions)
        found.evidence.verify(COMMITTEE)
        assert (found.evidence.member, found.evidence.view) == (2, 2)
        assert found.evidence.local == mine and found.evidence.header.roots == theirs
    c, b1 = finalized_at_height_1(0)
    c.step(BlockExecuted(mine))
    assert len(own_votes(c.step(proposal(blk(2, 2, b1, executed=mine))))) == 1


def test_roots_not_yet_executed_are_waited_for_then_checked() -> None:
    """A claim the voter cannot check yet is waited for (no blind vote, no sync request to
    the leader), then decided when it executes that height."""
    mine = roots(1, b"\x0a" * 32, 3, b"\x0e" * 32)
    c, b1 = finalized_at_height_1(0)
    actions = c.step(proposal(blk(2, 2, b1, executed=mine)))
    assert own_votes(actions) == [] and refusals(actions) == []
    assert not any(isinstance(a, Send) for a in actions)
    assert len(own_votes(c.step(BlockExecuted(mine)))) == 1
    c, b1 = finalized_at_height_1(0)
    c.step(proposal(blk(2, 2, b1, executed=roots(1, b"\x0b" * 32, 3, b"\x0e" * 32))))
    actions = c.step(BlockExecuted(mine))
    assert own_votes(actions) == [] and len(wrong_roots(actions)) == 1


def test_one_leader_cannot_put_an_honest_member_into_divergence() -> None:
    """Issue #14, hole 1: a leader claims a wrong root for a height its voters have not
    executed. Before, they notarised it blind and all diverged on execution."""
    mine = roots(1, b"\x0a" * 32)
    c, b1 = finalized_at_height_1(0)
    bad = blk(2, 2, b1, executed=roots(1, b"\x0b" * 32))
    out = c.step(proposal(bad))
    out += c.step(BlockExecuted(mine))
    assert not any(isinstance(a, StateDivergence) for a in out)
    assert own_votes(out) == []
    assert not c.abstaining


def test_a_certified_root_that_differs_from_ours_is_a_local_fault() -> None:
    """A finalised block certifies roots (a quorum checked them): ours differing means this
    member is at fault; it says so once and never signs again."""
    certified, ours = roots(1, b"\x0b" * 32), roots(1, b"\x0a" * 32)
    c, b1 = finalized_at_height_1(0)
    b2 = blk(2, 2, b1, executed=certified)
    c.step(MessageReceived(2, Finalization(cert(VoteKind.FINALIZE, 2, b2.digest), b2)))
    actions = c.step(BlockExecuted(ours))
    assert [a for a in actions if isinstance(a, StateDivergence)] == [
        StateDivergence(certified, ours)]
    assert c.abstaining
    b3 = blk(3, 3, b2, executed=certified)
    assert own_votes(c.step(proposal(b3))) == []
    assert own_votes(c.step(TimerFired(TimerKind.VIEW, c.view))) == []


def test_restart_refuses_conflicting_notarize() -> None:
    signed = b"\x07" * 32
    c = core(0, DurableState(guard=(GuardRecord(0, 1, SignedKind.NOTARIZE, signed),)))
    assert c.view == 1
    actions = c.step(proposal(blk(1, 1, commands=(b"other",))))
    assert own_votes(actions) == []
    assert not any(isinstance(a, PersistSignerGuard) for a in actions)
    # A recorded finalise forbids nullifying that view after the restart.
    c = core(0, DurableState(guard=(GuardRecord(0, 1, SignedKind.FINALIZE, signed),)))
    assert own_votes(c.step(TimerFired(TimerKind.LEADER, 1))) == []


def test_amnesiac_abstains_until_past_observed_views() -> None:
    c = core(0, DurableState(guard_lost=True))
    assert c.abstaining
    assert own_votes(c.step(proposal(blk(1, 1)))) == []
    assert own_votes(c.step(TimerFired(TimerKind.LEADER, 1))) == []
    c.step(MessageReceived(1, Nullification(cert(VoteKind.NULLIFY, 1))))
    assert c.view == 2 and c.abstaining  # abstains through view 1 + margin = 2
    assert own_votes(c.step(TimerFired(TimerKind.LEADER, 2))) == []
    c.step(MessageReceived(1, Nullification(cert(VoteKind.NULLIFY, 2))))
    assert c.view == 3 and not c.abstaining
    assert [v.kind for v in own_votes(c.step(TimerFired(TimerKind.LEADER, 3)))] == [
        VoteKind.NULLIFY]


def test_quorum_notarizes_then_finalizes() -> None:
    c = core(0)
    b = blk(1, 1, commands=(b"x",))
    c.step(proposal(b))
    c.step(vote(1, VoteKind.NOTARIZE, 1, b.digest))
    actions = c.step(vote(2, VoteKind.NOTARIZE, 1, b.digest))
    # Member 0 leads neither view 2 nor 3, so it does not broadcast the certificate: it
    # sends it, with its block, to the member that did not sign it (3) and to the next
    # leader (2), which needs it to propose; the signers form it from their own votes.
    announced = [(a.to, a.message) for a in actions if isinstance(a, Send)]
    assert [to for to, _ in announced] == [2, 3]
    assert all(isinstance(m, Notarization) and m.block == b for _, m in announced)
    assert not any(isinstance(a, Broadcast) and isinstance(a.message, Notarization)
                   for a in actions)
    assert [(v.kind, v.view) for v in own_votes(actions)] == [(VoteKind.FINALIZE, 1)]
    assert c.view == 2
    c.step(vote(1, VoteKind.FINALIZE, 1, b.digest))
    actions = c.step(vote(3, VoteKind.FINALIZE, 1, b.digest))
    final = [a for a in actions if isinstance(a, Finalized)]
    assert [f.block for f in final] == [b]
    assert final[0].certificate.signers() == (0, 1, 3)
    assert [(a.to, type(a.message)) for a in actions if isinstance(a, Send)] == [
        (2, Finalization)]
    assert c.tip == b


def test_nullify_on_leader_timeout_then_backoff() -> None:
    c = core(0)
    actions = c.step(TimerFired(TimerKind.LEADER, 1))
    assert actions[0] == PersistSignerGuard(0, 1, SignedKind.NULLIFY, ZERO_DIGEST)
    assert [v.kind for v in own_votes(actions)] == [VoteKind.NULLIFY]
    actions = c.step(MessageReceived(1, Nullification(cert(VoteKind.NULLIFY, 1))))
    # One nullified view does not slow the next (a dead leader, §3.6); two in a row: x2.
    assert SetTimer(TimerKind.LEADER, 2, 200) in actions
    actions = c.step(MessageReceived(1, Nullification(cert(VoteKind.NULLIFY, 2))))
    assert SetTimer(TimerKind.LEADER, 3, 400) in actions
    assert SetTimer(TimerKind.VIEW, 3, 600) in actions
    # Once nullified, never finalise that view.
    b = blk(1, 1)
    actions = c.step(MessageReceived(1, Notarization(cert(VoteKind.NOTARIZE, 1, b.digest), b)))
    assert own_votes(actions) == []


def test_missing_ancestor_fetches_then_finalizes_in_order() -> None:
    c = core(0)
    b1 = blk(1, 1)
    b2 = blk(2, 2, b1)
    c2 = cert(VoteKind.FINALIZE, 2, b2.digest)
    actions = c.step(MessageReceived(1, Finalization(c2, b2)))
    assert FetchBlocks(1, 1) in actions
    assert c.view == 3
    actions = c.step(BlocksFetched(((b1, c2), (b2, c2))))
    assert [a.block.height for a in actions if isinstance(a, Finalized)] == [1, 2]
    assert c.tip == b2


def test_fetched_chain_that_does_not_extend_refused() -> None:
    c = core(0)
    stray = Block(0, 1, 1, b"\x05" * 32, 1, (), 0, ZERO_DIGEST)
    actions = c.step(BlocksFetched(((stray, cert(VoteKind.FINALIZE, 1, stray.digest)),)))
    assert refusals(actions) == [
        "fetched block at height 1 does not extend our tip at height 0"]


def test_evidence_goes_into_the_next_leaders_block() -> None:
    c = core(2)  # leader of view 2
    c.step(vote(3, VoteKind.NOTARIZE, 1, b"\x01" * 32))
    actions = c.step(vote(3, VoteKind.NOTARIZE, 1, b"\x02" * 32))
    (ev,) = [a.evidence for a in actions if isinstance(a, EvidenceFound)]
    c.step(MessageReceived(1, Nullification(cert(VoteKind.NULLIFY, 1))))
    actions = c.step(TimerFired(TimerKind.BATCH, 2))
    (prop,) = [a.message for a in actions
               if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]
    assert prop.block.evidence == (ev.encode(),)


def test_fingerprint_is_deterministic() -> None:
    a, b = core(0), core(0)
    for c in (a, b):
        c.step(proposal(blk(1, 1)))
    assert a.fingerprint() == b.fingerprint()
    b.step(TimerFired(TimerKind.VIEW, 1))
    assert a.fingerprint() != b.fingerprint()


# ---- every refusal of the core, with its exact reason ----

def test_semantic_rechecks_refused() -> None:
    c = core(0)
    wrong_epoch = Vote(VoteKind.NULLIFY, 1, 1, ZERO_DIGEST, 2, b"\x00" * 64)
    assert refusals(c.step(MessageReceived(2, wrong_epoch))) == ["vote for epoch 1, we are at 0"]
    bad_index = Vote(VoteKind.NULLIFY, 0, 1, ZERO_DIGEST, 9, b"\x00" * 64)
    assert refusals(c.step(MessageReceived(2, bad_index))) == ["vote names member index 9, n=4"]
    foreign_cert = Certificate(VoteKind.NULLIFY, 3, 1, ZERO_DIGEST, ((1, b"\x00" * 64),))
    assert refusals(c.step(MessageReceived(2, Nullification(foreign_cert)))) == [
        "certificate for epoch 3 view 1"]
    c.step(MessageReceived(1, Nullification(cert(VoteKind.NULLIFY, 80))))
    assert c.view == 81
    assert refusals(c.step(vote(2, VoteKind.NULLIFY, 10))) == [
        "vote for view 10 is stale (we are at 81)"]


def test_foreign_evidence_message_refused() -> None:
    from coalitiond.consensus.evidence import Evidence, Statement
    from coalitiond.consensus.statements import sign_statement
    from coalitiond.testing.byzantine import foreign_committee

    other = foreign_committee(COMMITTEE)
    a, b = (Statement(SignedKind.NOTARIZE, d, sign_statement(KEYS[3], other, SignedKind.NOTARIZE,
                                                             1, d))
            for d in (b"\x01" * 32, b"\x02" * 32))
    ev = Evidence.build(other, 1, 3, a, b)
    c = core(0)
    assert refusals(c.step(MessageReceived(3, EvidenceMessage(ev)))) == [
        "evidence for another committee or epoch"]
    bad = Block(0, 1, 1, GENESIS.digest, 1, (), 0, ZERO_DIGEST, (ev.encode(),))
    assert refusals(c.step(proposal(bad))) == ["proposal for view 1: evidence for another committee"]


def test_proposal_rule_refusals() -> None:
    c = core(0)
    tall = Block(0, 5, 1, GENESIS.digest, 1, (), 0, ZERO_DIGEST)
    assert refusals(c.step(proposal(tall))) == [
        "proposal for view 1: height 5 does not follow parent height 0"]
    c = core(0)
    twice = Block(0, 1, 1, GENESIS.digest, 1, (), 0, ZERO_DIGEST, (b"e", b"e"))
    assert refusals(c.step(proposal(twice))) == ["proposal for view 1: an evidence item appears "
                                                 "twice"]
    c = core(0)
    (reason,) = refusals(c.step(proposal(Block(0, 1, 1, GENESIS.digest, 1, (), 0, ZERO_DIGEST,
                                               (b"junk",)))))
    assert reason.startswith("proposal for view 1: evidence does not decode: ")


def test_below_tip_and_executed_height_refusals() -> None:
    root = b"\x0c" * 32
    b1 = blk(1, 1)
    b2 = blk(2, 2, b1, executed=(1, root))
    c = core(0, DurableState(tip=b2, tip_certificate=cert(VoteKind.FINALIZE, 2, b2.digest)))
    assert c.view == 3
    assert refusals(c.step(proposal(blk(3, 3, b1)))) == [
        "proposal for view 3: height 2 is at or below our finalised tip 2"]
    c = core(0, DurableState(tip=b2, tip_certificate=cert(VoteKind.FINALIZE, 2, b2.digest)))
    assert refusals(c.step(proposal(blk(3, 3, b2)))) == [
        "proposal for view 3: executed_height 0 goes below the parent's 1"]
    c = core(0, DurableState(tip=b2, tip_certificate=cert(VoteKind.FINALIZE, 2, b2.digest)))
    assert refusals(c.step(proposal(blk(3, 3, b2, executed=(1, b"\x0d" * 32))))) == [
        "proposal for view 3: roots differ from the parent's for the same executed height"]


def test_command_repeating_an_unfinalised_ancestor_refused() -> None:
    c = core(0)
    b1 = blk(1, 1, commands=(b"a",))
    c.step(proposal(b1))
    c.step(MessageReceived(1, Notarization(cert(VoteKind.NOTARIZE, 1, b1.digest), b1)))
    assert c.view == 2
    assert refusals(c.step(proposal(blk(2, 2, b1, commands=(b"a",))))) == [
        "proposal for view 2: a command repeats one in an unfinalised ancestor"]


def test_empty_and_recently_finalised_commands_refused() -> None:
    c = core(0)
    assert refusals(c.step(CommandSubmitted(b""))) == ["command refused: empty command"]
    b1 = blk(1, 1, commands=(b"done",))
    c.step(MessageReceived(1, Finalization(cert(VoteKind.FINALIZE, 1, b1.digest), b1)))
    assert c.tip == b1
    assert refusals(c.step(CommandSubmitted(b"done"))) == [
        "command refused: duplicate of a recently finalised command"]


def test_pending_queue_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from coalitiond.consensus import batcher

    monkeypatch.setattr(batcher, "MAX_PENDING_COMMANDS", 2)
    monkeypatch.setattr(batcher, "MAX_PENDING_BYTES", 10)
    c = core(0)
    c.step(CommandSubmitted(b"1234"))
    assert refusals(c.step(CommandSubmitted(b"1234567"))) == [
        "command refused: pending queue full (10 bytes)"]
    c.step(CommandSubmitted(b"5678"))
    assert refusals(c.step(CommandSubmitted(b"9"))) == [
        "command refused: pending queue full (2 commands)"]


def _notarized_view_1(member: int, voters: tuple[int, ...]) -> tuple[Core, Block, list[object]]:
    """`member` sees view 1's proposal and the notarise votes of `voters` (the last vote
    completes the quorum with its own); returns the actions of that last step."""
    c = core(member)
    b = blk(1, 1, commands=(b"x",))
    c.step(proposal(b))
    actions: list[object] = []
    for v in voters:
        actions = list(c.step(vote(v, VoteKind.NOTARIZE, 1, b.digest)))
    return c, b, actions


def test_the_next_two_leaders_broadcast_a_notarization_they_formed() -> None:
    for member in (2, 3):  # leaders of views 2 and 3
        _, b, actions = _notarized_view_1(member, tuple(i for i in (0, 1) if i != member))
        broadcast = [a.message for a in actions
                     if isinstance(a, Broadcast) and isinstance(a.message, Notarization)]
        assert len(broadcast) == 1 and broadcast[0].block == b, member
        assert not any(isinstance(a, Send) for a in actions), member


def test_only_the_next_leader_broadcasts_a_finalization() -> None:
    c, b, _ = _notarized_view_1(3, (0, 1))  # member 3 leads view 3, not view 2
    c.step(vote(0, VoteKind.FINALIZE, 1, b.digest))
    actions = c.step(vote(1, VoteKind.FINALIZE, 1, b.digest))
    assert [a.block for a in actions if isinstance(a, Finalized)] == [b]
    assert not any(isinstance(a, Broadcast) and isinstance(a.message, Finalization)
                   for a in actions)
    assert [(a.to, type(a.message)) for a in actions if isinstance(a, Send)] == [
        (2, Finalization)]  # the one member that did not sign it


def test_a_signer_still_voting_in_the_view_we_left_is_sent_the_certificate() -> None:
    c, b, _ = _notarized_view_1(0, (1, 2))  # signers 0, 1, 2; sent to 2 and 3
    assert c.view == 2
    # Member 1 signed but got nothing from us: its nullify vote (it timed out, missing a
    # vote) is answered with the certificate, once.
    answered = c.step(vote(1, VoteKind.NULLIFY, 1))
    help_sent = [(a.to, a.message) for a in answered if isinstance(a, Send)]
    assert len(help_sent) == 1 and help_sent[0][0] == 1
    assert isinstance(help_sent[0][1], Notarization)
    assert help_sent[0][1].certificate.digest == b.digest
    assert not any(isinstance(a, Send) for a in c.step(vote(1, VoteKind.NOTARIZE, 1,
                                                            b.digest)))
    # Member 3 did not sign, so we sent it the certificate: its crossing vote is not
    # answered; nor is a finalise vote, whose signer holds the notarisation.
    assert not any(isinstance(a, Send) for a in c.step(vote(3, VoteKind.NULLIFY, 1)))
    # The same vote again is a re-send on its view timer (it lost ours): answered.
    again = [a.to for a in c.step(vote(3, VoteKind.NULLIFY, 1)) if isinstance(a, Send)]
    assert again == [3]
    assert not any(isinstance(a, Send) for a in c.step(vote(2, VoteKind.FINALIZE, 1,
                                                            b.digest)))


def test_member_commands_of_a_finalised_block_not_yet_executed_are_not_proposed_again() -> None:
    # The shell executes finalised blocks after the round's sends, so the drivers may still
    # offer a command the block they have not seen yet carries.
    offered = (b"member-command",)
    c = core(2, member_commands=lambda: offered)
    b = blk(1, 1, commands=offered)
    c.step(proposal(b))
    c.step(MessageReceived(1, Notarization(cert(VoteKind.NOTARIZE, 1, b.digest), b)))
    actions = c.step(MessageReceived(1, Finalization(cert(VoteKind.FINALIZE, 1, b.digest), b)))
    assert [a.block for a in actions if isinstance(a, Finalized)] == [b]
    assert c.view == 2 and c.leader == 2
    submitted = c.step(CommandSubmitted(b"client-command"))
    proposed = [a.message.block for a in submitted
                if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]
    assert [p.commands for p in proposed] == [(b"client-command",)]
