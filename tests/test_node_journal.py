"""The block journal keeps every vote a member collects for a finalised block, including
the slowest members' votes that arrive after the block was handed to the store — at any
moment, also while the commit storing it is in flight (docs/formats.md, "Late votes").

Each test drives the journal and a real store through the same calls the member makes, in
an order the member's tasks can interleave in; the orders are written out, not raced."""

from __future__ import annotations

from pathlib import Path

from coalitiond.consensus.messages import Notarization
from coalitiond.consensus.types import Certificate, Vote, VoteKind
from coalitiond.log import Store
from coalitiond.log.sqlite import GuardRecord
from coalitiond.node.journal import MAX_LATE_VOTES, BlockJournal
from coalitiond.testing.chain import ChainBuilder

N = 5  # q = 4: each block below is finalised without member 4's vote


def _signers(s: Store, height: int, kind: VoteKind = VoteKind.FINALIZE) -> list[int]:
    return sorted(v.signer for v in s.finalized(height).votes if v.kind is kind)


def _guard(view: int) -> list[GuardRecord]:
    return [GuardRecord(0, view, int(VoteKind.NOTARIZE), bytes([view]) * 32)]


def _finalise(chain: ChainBuilder, journal: BlockJournal, commands: list[bytes]) -> None:
    """The core finalises the next block with the first q members' votes, all observed."""
    block = chain.block(commands)
    chain.head, chain.view = block, block.view
    q = chain.committee.quorum
    for kind in (VoteKind.NOTARIZE, VoteKind.FINALIZE):
        for vote in chain.votes(block, kind, range(q)):
            journal.observe(vote)
    journal.finalized(block, Certificate.from_votes(chain.votes(block, VoteKind.FINALIZE,
                                                                range(q))))


def test_a_vote_arriving_while_its_block_is_being_stored_is_kept(tmp_path: Path) -> None:
    chain = ChainBuilder(N)
    journal = BlockJournal(chain.committee.quorum, 0)
    with Store.open(tmp_path / "log.sqlite3", chain.committee,
                    signing_key=chain.keys[0]) as s:
        _finalise(chain, journal, [b"a"])
        items = journal.take_blocks()
        late = journal.take_late_votes()
        # The commit is in flight (the member awaits it); intake observes member 4's vote.
        journal.observe(chain.votes(items[0].block, VoteKind.FINALIZE, [4])[0])
        s.append_blocks(items, late_votes=late)
        journal.stored(items)
        assert _signers(s, 1) == [0, 1, 2, 3]
        # The member's next commit, whatever it is for, carries the late vote.
        s.record_event(guard=_guard(2), late_votes=journal.take_late_votes())
        assert _signers(s, 1) == [0, 1, 2, 3, 4]
        assert journal.late_votes_waiting == 0


def test_a_late_vote_waits_until_its_block_is_durable(tmp_path: Path) -> None:
    """Released before the block's commit returned, the vote would make the next commit
    fail (the store holds no such block yet) and so stop the member."""
    chain = ChainBuilder(N)
    journal = BlockJournal(chain.committee.quorum, 0)
    with Store.open(tmp_path / "log.sqlite3", chain.committee,
                    signing_key=chain.keys[0]) as s:
        _finalise(chain, journal, [b"a"])
        items = journal.take_blocks()
        vote = chain.votes(items[0].block, VoteKind.FINALIZE, [4])[0]
        journal.observe(vote)
        assert journal.take_late_votes() == []  # block 1 is not durable yet
        s.append_blocks(items)
        journal.stored(items)
        assert journal.take_late_votes() == [(1, vote)]


def test_votes_for_a_block_waiting_for_its_descendant_go_into_its_record(
        tmp_path: Path) -> None:
    chain = ChainBuilder(N)
    journal = BlockJournal(chain.committee.quorum, 0)
    q = chain.committee.quorum
    with Store.open(tmp_path / "log.sqlite3", chain.committee,
                    signing_key=chain.keys[0]) as s:
        first = chain.block([b"a"])
        chain.head, chain.view = first, first.view
        second = chain.block([b"b"])
        second_fin = Certificate.from_votes(chain.votes(second, VoteKind.FINALIZE, range(q)))
        # Block 1 is final through block 2's certificate, which we hold; block 2's own
        # record is not complete until it is finalised in its own right below.
        journal.finalized(first, second_fin)
        assert journal.take_blocks() == []
        late = chain.votes(first, VoteKind.FINALIZE, [1, 4])
        for vote in late:
            journal.observe(vote)
        journal.observe(Notarization(Certificate.from_votes(
            chain.votes(first, VoteKind.NOTARIZE, range(q))), None))
        journal.finalized(second, second_fin)
        items = journal.take_blocks()
        assert [item.block.height for item in items] == [1, 2]
        assert items[0].finalization is None and items[0].notarization is not None
        s.append_blocks(items)
        journal.stored(items)
        assert _signers(s, 1) == [1, 4]
        assert _signers(s, 2) == [0, 1, 2, 3]


def test_late_votes_are_bounded_and_a_repeated_vote_takes_one_place() -> None:
    chain = ChainBuilder(N)
    journal = BlockJournal(chain.committee.quorum, 0)
    blocks = []
    for i in range(MAX_LATE_VOTES // 2 + 1):
        _finalise(chain, journal, [bytes([i % 256, i // 256])])
        items = journal.take_blocks()
        journal.stored(items)
        blocks.append(items[0].block)
    vote = chain.votes(blocks[0], VoteKind.FINALIZE, [4])[0]
    for _ in range(3):
        journal.observe(vote)
    assert journal.late_votes_waiting == 1
    for block in blocks:
        for kind in (VoteKind.NOTARIZE, VoteKind.FINALIZE):
            journal.observe(chain.votes(block, kind, [4])[0])
    assert journal.late_votes_waiting == MAX_LATE_VOTES
    assert journal.late_votes_dropped == 2 * len(blocks) - MAX_LATE_VOTES
    late = journal.take_late_votes()
    assert len(late) == MAX_LATE_VOTES and journal.late_votes_dropped == 0
    assert late == sorted(late, key=lambda hv: (hv[0], int(hv[1].kind), hv[1].signer))


def test_a_vote_for_another_view_of_a_known_digest_is_never_filed_under_the_block() -> None:
    chain = ChainBuilder(N)
    journal = BlockJournal(chain.committee.quorum, 0)
    _finalise(chain, journal, [b"a"])
    items = journal.take_blocks()
    journal.stored(items)
    block = items[0].block
    other_view = Vote.sign(chain.keys[4], chain.committee, 4, VoteKind.FINALIZE,
                           block.view + 1, block.digest)
    journal.observe(other_view)
    assert journal.late_votes_waiting == 0
