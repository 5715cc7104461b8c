"""The safety rules of docs/protocol.md, one at a time, without a core (consensus/rules.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from coalitiond.consensus import rules
from coalitiond.consensus.limits import (
    AMNESIA_MARGIN_VIEWS,
    DEFAULT_MAX_BLOCK_BYTES,
    MAX_VIEWS_AHEAD,
    MAX_VIEWS_BEHIND,
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
from coalitiond.testing.simulator import make_committee

COMMITTEE, KEYS = make_committee(4)  # q = 3; leader of view v is v % 4
GENESIS = genesis_block(COMMITTEE)
D1, D2 = b"\x01" * 32, b"\x02" * 32


@dataclass
class V:
    notarization: Certificate | None = None
    nullification: Certificate | None = None


def blk(view: int, parent: Block = GENESIS, commands: tuple[bytes, ...] = (),
        executed: tuple[int, bytes] = (0, ZERO_DIGEST), evidence: tuple[bytes, ...] = ()) -> Block:
    return Block(COMMITTEE.epoch, parent.height + 1, view, parent.digest,
                 COMMITTEE.leader(view), commands, executed[0], executed[1], evidence)


def vote(member: int, kind: VoteKind, view: int, digest: bytes = ZERO_DIGEST) -> Vote:
    return Vote.sign(KEYS[member], COMMITTEE, member, kind, view, digest)


def cert(kind: VoteKind, view: int, digest: bytes = ZERO_DIGEST) -> Certificate:
    return Certificate.from_votes([vote(i, kind, view, digest) for i in (1, 2, 3)])


def notarized(b: Block) -> V:
    return V(notarization=cert(VoteKind.NOTARIZE, b.view, b.digest))


NULLIFIED = V(nullification=cert(VoteKind.NULLIFY, 1))


def roots(height: int, state_root: bytes) -> CertifiedRoots:
    return CertifiedRoots(height, state_root, 0, EMPTY_LOG_ROOT)


def check(b: Block, views: dict[int, V], blocks: dict[bytes, Block] | None = None,
          mine: dict[int, bytes] | None = None) -> rules.Verdict:
    own = {h: roots(h, r) for h, r in (mine or {}).items()}
    return rules.check_proposal(b, GENESIS, blocks or {}, views, own, max(own, default=0),
                                COMMITTEE,
                                max_block_bytes=DEFAULT_MAX_BLOCK_BYTES)


def test_view_window_bounds_single_statements() -> None:
    assert rules.accepts_view(100, 100 + MAX_VIEWS_AHEAD)
    assert not rules.accepts_view(100, 101 + MAX_VIEWS_AHEAD)
    assert rules.accepts_view(100, 100 - MAX_VIEWS_BEHIND)
    assert not rules.accepts_view(100, 99 - MAX_VIEWS_BEHIND)
    assert not rules.accepts_view(1, 0)
    refuse = rules.statement_refusal
    assert refuse(COMMITTEE, 5, COMMITTEE.epoch, 5, 3, "vote") is None
    assert refuse(COMMITTEE, 5, COMMITTEE.epoch + 1, 5, 3, "vote") == \
        f"vote for epoch {COMMITTEE.epoch + 1}, we are at {COMMITTEE.epoch}"
    assert refuse(COMMITTEE, 5, COMMITTEE.epoch, 5, 4, "vote") == "vote names member index 4, n=4"
    assert refuse(COMMITTEE, 5, COMMITTEE.epoch, 0, 3, "header") == "header for view 0 (genesis)"


def test_guard_allows_one_digest_per_kind_and_never_nullify_with_finalize() -> None:
    guard = {(5, SignedKind.NOTARIZE): D1, (5, SignedKind.NULLIFY): ZERO_DIGEST}
    assert rules.guard_allows(guard, 5, 5, SignedKind.NOTARIZE, D1)  # re-signing is allowed
    assert not rules.guard_allows(guard, 5, 5, SignedKind.NOTARIZE, D2)
    assert not rules.guard_allows(guard, 5, 5, SignedKind.FINALIZE, D1)
    assert rules.guard_allows(guard, 5, 6, SignedKind.FINALIZE, D1)
    assert not rules.guard_allows({}, 100, 99 - MAX_VIEWS_BEHIND, SignedKind.NULLIFY, ZERO_DIGEST)


def test_amnesiac_member_signs_only_above_abstain_through() -> None:
    assert rules.may_sign(False, None, 1)
    assert not rules.may_sign(True, None, 1_000)
    through = rules.abstain_through(max_view_seen=7, certificate_view=9)
    assert through == 9 + AMNESIA_MARGIN_VIEWS
    assert not rules.may_sign(True, through, through)
    assert rules.may_sign(True, through, through + 1)


def test_no_notarise_and_no_finalise_vote_after_nullify() -> None:
    guard = {(3, SignedKind.NULLIFY): ZERO_DIGEST}
    assert not rules.may_notarize(guard, 3) and not rules.may_finalize_vote(guard, 3)
    assert rules.may_notarize(guard, 4) and rules.may_finalize_vote(guard, 4)


def test_first_vote_per_member_counts_and_quorum_forms_in_member_order() -> None:
    table = {3: vote(3, VoteKind.NOTARIZE, 1, D1), 1: vote(1, VoteKind.NOTARIZE, 1, D1)}
    assert not rules.counts_toward_quorum(table, vote(1, VoteKind.NOTARIZE, 1, D2))
    assert rules.counts_toward_quorum(table, vote(2, VoteKind.NOTARIZE, 1, D1))
    assert rules.quorum_votes(table, D1, COMMITTEE.quorum) is None
    table[0] = vote(0, VoteKind.NOTARIZE, 1, D2)
    assert rules.quorum_votes(table, D1, COMMITTEE.quorum) is None
    table[2] = vote(2, VoteKind.NOTARIZE, 1, D1)
    same = rules.quorum_votes(table, D1, COMMITTEE.quorum)
    assert same is not None and [v.signer for v in same] == [1, 2, 3]


def test_leader_builds_on_highest_notarised_view_over_nullified_ones() -> None:
    b1 = blk(1)
    blocks = {b1.digest: b1}
    assert rules.select_parent(1, GENESIS, blocks, {}) is GENESIS
    assert rules.select_parent(3, GENESIS, blocks, {1: notarized(b1)}) is None  # view 2 open
    views = {1: notarized(b1), 2: V(nullification=cert(VoteKind.NULLIFY, 2))}
    assert rules.select_parent(3, GENESIS, blocks, views) is b1
    assert rules.select_parent(3, GENESIS, blocks, {1: NULLIFIED, 2: views[2]}) is GENESIS


def test_only_the_leader_proposes() -> None:
    assert rules.proposer_is_leader(COMMITTEE, blk(2))
    wrong = Block(COMMITTEE.epoch, 1, 2, GENESIS.digest, 3, (), 0, ZERO_DIGEST)
    assert not rules.proposer_is_leader(COMMITTEE, wrong)


def test_proposal_waits_for_a_notarised_parent_and_nullified_skipped_views() -> None:
    b1 = blk(1)
    b3 = blk(3, parent=b1)
    blocks = {b1.digest: b1}
    assert check(b1, {}) is rules.Verdict.VALID
    assert check(b3, {}, blocks) is rules.Verdict.WAIT  # parent not notarised
    assert check(b3, {1: notarized(b1)}, blocks) is rules.Verdict.WAIT  # view 2 not nullified
    assert not rules.skipped_views_nullified(1, 3, {1: notarized(b1)})
    views = {1: notarized(b1), 2: V(nullification=cert(VoteKind.NULLIFY, 2))}
    assert rules.skipped_views_nullified(1, 3, views)
    assert check(b3, views, blocks) is rules.Verdict.VALID


def test_proposal_content_rules_refuse_with_the_broken_rule() -> None:
    with pytest.raises(rules.InvalidProposal, match="a command appears twice"):
        check(blk(1, commands=(b"a", b"a")), {})
    with pytest.raises(rules.InvalidProposal, match="roots differ from the parent's"):
        check(blk(1, executed=(0, D1)), {})
    with pytest.raises(rules.InvalidProposal, match="evidence does not decode"):
        check(blk(1, evidence=(b"junk",)), {})
    b1 = blk(1, commands=(b"a",))
    b2 = blk(2, parent=b1, commands=(b"a",))
    with pytest.raises(rules.InvalidProposal, match="repeats one in an unfinalised ancestor"):
        check(b2, {1: notarized(b1)}, {b1.digest: b1})


def test_roots_rule_checks_every_claim_against_our_own_or_waits() -> None:
    """docs/protocol.md §7, one case per branch of `check_roots`."""
    parent = roots(3, D1)
    mine = {5: roots(5, D2)}
    check_roots = rules.check_roots
    with pytest.raises(rules.InvalidProposal, match="goes below the parent's 3"):
        check_roots(roots(2, D1), parent, mine, 5)
    assert check_roots(parent, parent, mine, 5) is rules.Verdict.VALID
    with pytest.raises(rules.InvalidProposal, match="differ from the parent's"):
        check_roots(roots(3, D2), parent, mine, 5)
    assert check_roots(roots(5, D2), parent, mine, 5) is rules.Verdict.VALID
    with pytest.raises(rules.WrongRoots) as wrong:
        check_roots(roots(5, D1), parent, mine, 5)
    assert (wrong.value.claimed, wrong.value.mine) == (roots(5, D1), roots(5, D2))
    assert check_roots(roots(6, D1), parent, mine, 5) is rules.Verdict.WAIT_EXECUTION
    with pytest.raises(rules.InvalidProposal, match="cannot check them"):
        check_roots(roots(4, D1), parent, mine, 5)


def test_finalisation_finalises_the_block_and_its_unfinalised_ancestors() -> None:
    b1 = blk(1)
    b2 = blk(2, parent=b1)
    f2 = cert(VoteKind.FINALIZE, 2, b2.digest)
    assert rules.finalized_chain(f2, GENESIS, {b1.digest: b1, b2.digest: b2}) == (b1, b2)
    assert rules.finalized_chain(f2, GENESIS, {}) == rules.Gap(None)
    assert rules.finalized_chain(f2, GENESIS, {b2.digest: b2}) == rules.Gap(1)
    assert rules.finalized_chain(f2, b2, {}) == ()
    other = cert(VoteKind.FINALIZE, 2, D1)
    assert isinstance(rules.finalized_chain(other, b2, {}), rules.Conflict)
