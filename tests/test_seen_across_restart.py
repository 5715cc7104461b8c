"""Equivocation whose halves straddle a restart (issue #14 hole 6): the core reports every
first-seen statement of another member (`RecordSeen`), the shell keeps it in the store's
`seen_votes` table for a window of views, and the restarted core takes it back, so the
second half, seen after the restart, still makes evidence (docs/protocol.md §5)."""

from __future__ import annotations

from pathlib import Path

from test_consensus_core import CONFIG, KEYS, blk, core, vote

from coalitiond.commands.envelope import Acl
from coalitiond.components.executor import Executor
from coalitiond.components.feed.component import Feed
from coalitiond.consensus.events import (
    DurableState,
    EvidenceFound,
    MessageReceived,
    RecordSeen,
    SeenStatement,
    Start,
)
from coalitiond.consensus.evidence import EvidenceKind
from coalitiond.consensus.limits import MAX_VIEWS_BEHIND
from coalitiond.consensus.messages import Nullification, Proposal
from coalitiond.consensus.statements import SignedKind
from coalitiond.consensus.types import Certificate, Vote, VoteKind
from coalitiond.consensus.voter import Core
from coalitiond.log import EvidenceRecord, SeenRecord, Store
from coalitiond.node.journal import BlockJournal
from coalitiond.node.voter import (
    MAX_PENDING_SEEN,
    VoterStatus,
    queue_seen,
    recover,
    seen_records,
)
from coalitiond.testing.chain import ChainBuilder
from coalitiond.testing.cores import end_recall

D1, D2 = b"\x01" * 32, b"\x02" * 32


def test_the_core_reports_first_seen_statements_and_takes_them_back_at_restart() -> None:
    before = core(0)
    actions = before.step(vote(2, VoteKind.NOTARIZE, 1, D1))
    [seen] = [a.statement for a in actions if isinstance(a, RecordSeen)]
    assert (seen.member, seen.view, seen.kind, seen.digest) == (2, 1, SignedKind.NOTARIZE, D1)
    # The same statement again, and our own statements, are not reported.
    assert not any(isinstance(a, RecordSeen) for a in before.step(
        vote(2, VoteKind.NOTARIZE, 1, D1)))
    assert not any(isinstance(a, RecordSeen) for a in before.step(
        vote(0, VoteKind.NULLIFY, 1)))

    after = core(0, DurableState(seen=(seen,)))
    found = [a.evidence for a in after.step(vote(2, VoteKind.NOTARIZE, 1, D2))
             if isinstance(a, EvidenceFound)]
    assert [(e.kind, e.member, e.view) for e in found] == [
        (EvidenceKind.CONFLICTING_NOTARIZE, 2, 1)], "the half seen before the restart is lost"
    found[0].verify(after.committee)
    # A leader's two proposals straddle it too.
    b1, b2 = blk(1, 1, commands=(b"1",)), blk(1, 1, commands=(b"2",))
    sig = Proposal.sign(KEYS[1], after.committee, b1).signature
    again = core(0, DurableState(seen=(SeenStatement(1, 1, SignedKind.PROPOSE, b1.digest,
                                                     sig),)))
    found = [a.evidence for a in again.step(MessageReceived(1, Proposal.sign(
        KEYS[1], again.committee, b2))) if isinstance(a, EvidenceFound)]
    assert [e.kind for e in found] == [EvidenceKind.CONFLICTING_PROPOSAL]


def _executor(chain: ChainBuilder) -> Executor:
    return Executor(chain.committee.committee_id, Acl.allow([]), Feed([chain.keys[0].public]))


def test_the_store_keeps_them_across_a_restart_and_recovery_hands_them_to_the_core(
        tmp_path: Path) -> None:
    chain = ChainBuilder(4)
    committee, keys = chain.committee, chain.keys
    path = tmp_path / "log.sqlite3"

    def started(durable: DurableState | None = None) -> Core:
        c = Core(committee, keys[0], CONFIG, durable)
        c.step(Start())
        end_recall(c)
        return c

    first = Vote.sign(keys[3], committee, 3, VoteKind.FINALIZE, 2, D1)
    c = started()
    actions = c.step(MessageReceived(3, first))
    with Store.open(path, committee, signing_key=keys[0]) as s:
        s.record_event(seen=seen_records(committee.epoch, actions),
                       seen_floor=c.view - MAX_VIEWS_BEHIND)

    with Store.open(path, committee, signing_key=keys[0]) as s:
        durable = recover(s, committee, _executor(chain), BlockJournal(committee.quorum, 0),
                          VoterStatus(), guard_lost=False)
    assert [(x.member, x.view, x.kind) for x in durable.seen] == [(3, 2, SignedKind.FINALIZE)]
    c = started(durable)
    nullify = Certificate.from_votes([Vote.sign(keys[i], committee, i, VoteKind.NULLIFY, 2,
                                                b"\x00" * 32) for i in (1, 2, 3)])
    actions = c.step(MessageReceived(1, Nullification(nullify)))
    found = [a.evidence for a in actions if isinstance(a, EvidenceFound)]
    assert [(e.kind, e.member, e.view) for e in found] == [
        (EvidenceKind.NULLIFY_FINALIZE, 3, 2)]
    # Stored in the one evidence format.
    with Store.open(path, committee, signing_key=keys[0]) as s:
        s.record_event(evidence=[EvidenceRecord.of(found[0])])
        assert s.evidence()[0].kind == "nullify-finalize"


def test_statements_waiting_for_a_commit_are_bounded_oldest_dropped() -> None:
    """A member that signs nothing (abstaining) makes no commit: what waits stays bounded."""
    records = [SeenRecord(1, 0, v, 0, D1, b"\x00" * 64) for v in range(1, MAX_PENDING_SEEN + 6)]
    pending: list[SeenRecord] = []
    assert queue_seen(pending, records[:10]) == 0
    assert queue_seen(pending, records[10:]) == 5
    assert len(pending) == MAX_PENDING_SEEN and pending[0].view == 6
