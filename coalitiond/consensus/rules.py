"""The safety rules of docs/protocol.md, one pure function each.

Everything the safety argument (§4) rests on is decided here: which proposal a member may
notarise, which parent a leader builds on, when votes form a certificate, when a member may
sign at all (the signer guard and the amnesia rule), and which blocks a finalisation finalises.
The state machine (voter.py) owns the state and calls these with what it knows; nothing here
keeps state, signs, or emits anything, so each rule can be tested, and mutated, alone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ..primitives.committee import CommitteeSpec
from ..primitives.errors import RemoteError
from ..primitives.identity import digest as blake3_digest
from .evidence import Evidence
from .limits import (
    AMNESIA_MARGIN_VIEWS,
    MAX_VIEWS_AHEAD,
    MAX_VIEWS_BEHIND,
    SKIP_AFTER_SILENT_LEADS,
)
from .statements import SignedKind, conflicts
from .types import Block, Certificate, CertifiedRoots, Vote

#: The signer guard: what this member signed, by (view, kind) → digest (§8).
Guard = Mapping[tuple[int, SignedKind], bytes]


class CertifiedView(Protocol):
    """The certificates a member holds for one view (what the parent rules look at)."""

    @property
    def notarization(self) -> Certificate | None: ...

    @property
    def nullification(self) -> Certificate | None: ...


# ---------------------------------------------------------------------------------------------
# which statements are looked at (§3.9, §10)


def accepts_view(current: int, view: int) -> bool:
    """Is a vote or proposal for `view` looked at by a member in view `current`?
    docs/protocol.md §10 (MAX_VIEWS_AHEAD / MAX_VIEWS_BEHIND); view 0 is genesis (§3)."""
    return current - MAX_VIEWS_BEHIND <= view <= current + MAX_VIEWS_AHEAD and view > 0


def statement_refusal(committee: CommitteeSpec, current: int, epoch: int, view: int,
                      signer: int, what: str) -> str | None:
    """Why a single vote, proposal or header is refused, or None if it is looked at.
    docs/protocol.md §3.9 (single statements are not jumps) and §10: right epoch, a member's
    index, not genesis, within the view window."""
    if epoch != committee.epoch:
        return f"{what} for epoch {epoch}, we are at {committee.epoch}"
    if not 0 <= signer < committee.n:
        return f"{what} names member index {signer}, n={committee.n}"
    if view == 0:
        return f"{what} for view 0 (genesis)"
    if view > current + MAX_VIEWS_AHEAD:
        return f"{what} for view {view} is more than {MAX_VIEWS_AHEAD} views ahead of {current}"
    if view < current - MAX_VIEWS_BEHIND:
        return f"{what} for view {view} is stale (we are at {current})"
    return None


# ---------------------------------------------------------------------------------------------
# the signer guard and amnesia (§8)


def guard_allows(guard: Guard, current: int, view: int, kind: SignedKind, digest: bytes) -> bool:
    """May this member sign `kind` on `digest` in `view` without breaking its guard?
    docs/protocol.md §3 (local safety rules) and §8: one proposal, one notarise and one
    finalise digest per view, never nullify and finalise in one view, and never below the
    in-memory guard window (`current − MAX_VIEWS_BEHIND`). Re-signing the same digest is
    allowed."""
    if view < current - MAX_VIEWS_BEHIND:
        return False  # below the in-memory guard window: never sign there
    for k in SignedKind:
        d = guard.get((view, k))
        if d is not None and conflicts(k, d, kind, digest):
            return False
    return True


def may_sign(amnesiac: bool, abstain_through: int | None, view: int) -> bool:
    """The amnesia rule, docs/protocol.md §8 (Decision): a member that lost its guard signs
    nothing until it has fixed `abstain_through`, then only in views strictly above it."""
    if amnesiac and abstain_through is None:
        return False
    return abstain_through is None or view > abstain_through


def recall_allows(recall_open: bool, recalled_through: int, view: int) -> bool:
    """The start-up recall, docs/protocol.md §8: nothing is signed while the recall is open,
    and never at or below the highest view a peer showed us our own signature for."""
    return not recall_open and view > recalled_through


def abstain_through(max_view_seen: int, certificate_view: int) -> int:
    """The view an amnesiac member abstains through, fixed by its first verified certificate:
    the highest view it has seen, plus a margin. docs/protocol.md §8 (Decision)."""
    return max(max_view_seen, certificate_view) + AMNESIA_MARGIN_VIEWS


def may_notarize(guard: Guard, view: int) -> bool:
    """Simplex: no notarise vote (nor a proposal, which its leader notarises) in a view this
    member nullified. docs/protocol.md §3.2 ("unless it already nullified v")."""
    return guard.get((view, SignedKind.NULLIFY)) is None


def may_finalize_vote(guard: Guard, view: int) -> bool:
    """A finalise vote on a notarised view only if this member did not nullify that view.
    docs/protocol.md §3.3, and §4 ("a finalised view cannot be nullified")."""
    return guard.get((view, SignedKind.NULLIFY)) is None


# ---------------------------------------------------------------------------------------------
# votes and certificates (§3.3, §3.4, §3 Decisions)


def counts_toward_quorum(table: Mapping[int, Vote], vote: Vote) -> bool:
    """Only the first vote per (member, view, kind) counts: an equivocator's second vote never
    helps a certificate. docs/protocol.md §3, Decisions. `table` holds the counted votes of
    one view and kind, by signer."""
    return vote.signer not in table


def quorum_votes(table: Mapping[int, Vote], digest: bytes, quorum: int) -> list[Vote] | None:
    """The votes on `digest` in ascending member order if they reach `quorum`, else None:
    they form the certificate. docs/protocol.md §3.3 / §3.4 and §3, Decisions."""
    same = [table[i] for i in sorted(table) if table[i].digest == digest]
    return same if len(same) >= quorum else None


# ---------------------------------------------------------------------------------------------
# parents and proposals (§3.1, §3.2, §5, §6, §7)


def unfinalized_ancestors(parent: Block, tip: Block,
                          blocks: Mapping[bytes, Block]) -> list[Block] | None:
    """Unfinalised blocks from `parent` down to (not including) the finalised `tip`; None if a
    link is missing or the chain does not reach the tip. docs/protocol.md §3.2, §6 (no command
    repeated in unfinalised ancestors)."""
    out: list[Block] = []
    cur = parent
    while cur.digest != tip.digest:
        if cur.height <= tip.height:
            return None
        out.append(cur)
        nxt = blocks.get(cur.parent)
        if nxt is None:
            if cur.parent == tip.digest:
                break
            return None
        cur = nxt
    return out


def select_parent(view: int, tip: Block, blocks: Mapping[bytes, Block],
                  views: Mapping[int, CertifiedView]) -> Block | None:
    """The parent a leader of `view` builds on: the block of the highest notarised view below
    `view` with every view in between nullified, or the finalised tip; None if not yet known.
    docs/protocol.md §3.1."""
    w = view - 1
    while w > tip.view:
        s = views.get(w)
        if s is not None and s.notarization is not None:
            return blocks.get(s.notarization.digest)
        if s is not None and s.nullification is not None:
            w -= 1
            continue
        return None
    return tip


class Verdict(enum.Enum):
    """A proposal this member can decide: VALID (notarise it), WAIT (not yet decidable: its
    parent or the nullifications in between are missing; kept and re-examined, and the
    leader is asked for them), or WAIT_EXECUTION (it claims roots for a height this member
    has not executed yet: kept and re-examined after each execution, §7)."""

    VALID = 0
    WAIT = 1
    WAIT_EXECUTION = 2


class InvalidProposal(Exception):
    """A proposal that breaks a rule: refused, never voted for. The message names the rule."""


class WrongRoots(InvalidProposal):
    """The proposal claims roots for a height this member executed, and they differ from its
    own: refused, and evidence against the proposer (§7)."""

    def __init__(self, claimed: CertifiedRoots, mine: CertifiedRoots) -> None:
        super().__init__(f"the roots claimed for height {claimed.height} differ from ours")
        self.claimed = claimed
        self.mine = mine


def proposer_is_leader(committee: CommitteeSpec, block: Block) -> bool:
    """Only the leader of a view proposes in it. docs/protocol.md §3 (leader of v is v mod n)
    and §3.2."""
    return block.proposer == committee.leader(block.view)


def skipped_views_nullified(parent_view: int, view: int,
                            views: Mapping[int, CertifiedView]) -> bool:
    """Is every view strictly between the parent's and the proposal's nullified?
    docs/protocol.md §3.2, and §4 (why this makes every later block extend a finalised one)."""
    for w in range(parent_view + 1, view):
        ws = views.get(w)
        if ws is None or ws.nullification is None:
            return False
    return True


def check_block_size(block: Block, max_block_bytes: int) -> None:
    """The size rule, docs/protocol.md §10: a voter refuses a block whose encoding is above
    the committee's `max_block_bytes` (at most `MAX_SERVABLE_BLOCK_BYTES`), so every block
    the committee finalises can be served to catch-up, followers and readers. Raises
    InvalidProposal naming both sizes."""
    size = len(block.encode())
    if size > max_block_bytes:
        raise InvalidProposal(f"block of {size} bytes is above max_block_bytes "
                              f"{max_block_bytes} (the largest block every member can serve)")


def check_proposal(block: Block, tip: Block, blocks: Mapping[bytes, Block],
                   views: Mapping[int, CertifiedView], roots: Mapping[int, CertifiedRoots],
                   executed: int, committee: CommitteeSpec,
                   *, max_block_bytes: int) -> Verdict:
    """May this member notarise `block` (the first proposal of its current view, from the
    view's leader)? docs/protocol.md §3.2: the parent is the finalised tip or a notarised block
    at a lower view, every view in between is nullified, the height follows the parent's; the
    size rule first (`check_block_size`, §10: refused at once, never waited on); and the
    block's content rules (`check_block_content`) and its roots (`check_roots`, against
    `roots`, this member's own by height, `executed` the highest it executed). A verdict, or
    InvalidProposal naming the broken rule."""
    check_block_size(block, max_block_bytes)
    if block.height <= tip.height:
        raise InvalidProposal(f"height {block.height} is at or below our finalised tip "
                              f"{tip.height}")
    if block.parent == tip.digest:
        parent = tip
    else:
        found = blocks.get(block.parent)
        if found is None:
            return Verdict.WAIT
        ps = views.get(found.view)
        if ps is None or ps.notarization is None or ps.notarization.digest != found.digest:
            return Verdict.WAIT
        parent = found
    if parent.view >= block.view:
        raise InvalidProposal(f"parent view {parent.view} is not below {block.view}")
    if block.height != parent.height + 1:
        raise InvalidProposal(f"height {block.height} does not follow parent height "
                              f"{parent.height}")
    if not skipped_views_nullified(parent.view, block.view, views):
        return Verdict.WAIT
    ancestors = unfinalized_ancestors(parent, tip, blocks)
    if ancestors is None:
        return Verdict.WAIT
    check_block_content(block, ancestors, committee)
    return check_roots(block.roots, parent.roots, roots, executed)


def check_roots(claimed: CertifiedRoots, parent: CertifiedRoots,
                mine: Mapping[int, CertifiedRoots], executed: int) -> Verdict:
    """The roots rule, docs/protocol.md §7: a voter notarises only roots it has checked.
    The certified height never goes below the parent's; at the parent's height the roots are
    the parent's (a quorum notarised them, so an honest member checked them); above it they
    are this member's own for that height — not executed yet: WAIT_EXECUTION; executed and
    different: WrongRoots; executed but no longer remembered: refused (cannot check)."""
    if claimed.height < parent.height:
        raise InvalidProposal(f"executed_height {claimed.height} goes below the parent's "
                              f"{parent.height}")
    if claimed.height == parent.height:
        if claimed != parent:
            raise InvalidProposal("roots differ from the parent's for the same executed height")
        return Verdict.VALID
    own = mine.get(claimed.height)
    if own is not None:
        if own != claimed:
            raise WrongRoots(claimed, own)
        return Verdict.VALID
    if claimed.height > executed:
        return Verdict.WAIT_EXECUTION
    raise InvalidProposal(f"roots for height {claimed.height}: older than the heights this "
                          f"member remembers, cannot check them")


def check_block_content(block: Block, ancestors: list[Block], committee: CommitteeSpec) -> None:
    """The content rules a voter checks before notarising; raises InvalidProposal.
    docs/protocol.md §3.2 with §6 (no command repeated in the block or an unfinalised ancestor)
    and §5 (every evidence item decodes and names this committee). The roots are
    `check_roots`'; whether the component accepts the commands is asked of the shell after
    these pass (`ValidateBlock`, §6)."""
    digests = [blake3_digest(c) for c in block.commands]
    if len(set(digests)) != len(digests):
        raise InvalidProposal("a command appears twice in the block")
    seen = {blake3_digest(c) for a in ancestors for c in a.commands}
    if any(d in seen for d in digests):
        raise InvalidProposal("a command repeats one in an unfinalised ancestor")
    if len(set(block.evidence)) != len(block.evidence):
        raise InvalidProposal("an evidence item appears twice")
    for item in block.evidence:
        try:
            ev = Evidence.decode(item)
        except RemoteError as exc:
            raise InvalidProposal(f"evidence does not decode: {exc}") from None
        if ev.committee_id != committee.committee_id:
            raise InvalidProposal("evidence for another committee")


# ---------------------------------------------------------------------------------------------
# finalisation (§3.4, §9)


@dataclass(frozen=True, slots=True)
class Gap:
    """A finalisation this member cannot apply yet: heights `tip + 1 ..= last` are missing
    (`last` None: the finalised block itself is unknown). Fetched, then retried (§9)."""

    last: int | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A finalisation that contradicts this member's finalised chain (only possible beyond the
    safety bound): refused, never applied."""

    reason: str


def finalized_chain(cert: Certificate, tip: Block,
                    blocks: Mapping[bytes, Block]) -> tuple[Block, ...] | Gap | Conflict:
    """Which blocks a finalisation certificate finalises, in height order: its block and every
    ancestor above the finalised `tip` (empty: nothing new). docs/protocol.md §3.4 ("finalise
    the block and all its ancestors") and §9 (a missing link is a Gap to fetch)."""
    if cert.view <= tip.view:
        if cert.view == tip.view and cert.digest != tip.digest:
            return Conflict("finalisation conflicts with our finalised tip")
        return ()
    block = blocks.get(cert.digest)
    if block is None:
        return Gap(None)
    chain = [block]
    cur = block
    while cur.parent != tip.digest:
        parent = blocks.get(cur.parent)
        if parent is None or parent.height <= tip.height:
            if cur.height - 1 <= tip.height:
                return Conflict(f"finalised block at height {block.height} does not extend "
                                "our finalised chain")
            return Gap(cur.height - 1)
        chain.append(parent)
        cur = parent
    return tuple(reversed(chain))


# ---------------------------------------------------------------------------------------------
# ending a view early (§3.10): nullifying sooner than a timer is always safe (§4)


def skip_leader(committee: CommitteeSpec, me: int, view: int, last_active: Mapping[int, int],
                views: Mapping[int, CertifiedView]) -> bool:
    """Dead-leader skip, docs/protocol.md §3.10: nullify `view` at once, without waiting for
    its leader timer? Yes when its leader is not this member, each of the leader's last
    `SKIP_AFTER_SILENT_LEADS` views (`view − n`, `view − 2n`, …) is nullified and not
    notarised as this member knows it, and nothing signed by the leader (a proposal, header
    or vote of any kind) was seen for any view at or above the earliest of them
    (`last_active`: highest such view per member). Any statement of the leader lets it back
    in; a member that knows no certificates (just restarted) skips no one."""
    leader = committee.leader(view)
    if leader == me:
        return False
    led = [view - j * committee.n for j in range(1, SKIP_AFTER_SILENT_LEADS + 1)]
    if led[-1] <= 0 or last_active.get(leader, 0) >= led[-1]:
        return False
    for u in led:
        s = views.get(u)
        if s is None or s.nullification is None or s.notarization is not None:
            return False
    return True


def cannot_finalize(nullify_votes: int, committee: CommitteeSpec) -> bool:
    """Have so many members nullified a view that it can no longer be finalised? A member
    never both nullifies and finalises one view (§3, signer guard), so once more than
    `n − q` members nullified it, fewer than `q` can finalise it: nullifying it too costs
    nothing and ends the view without waiting for a timer (docs/protocol.md §3.10)."""
    return nullify_votes > committee.n - committee.quorum


def backoff_exponent(consecutive_nulls: int, max_exponent: int) -> int:
    """Timers are multiplied by 2 to the power of this (docs/protocol.md §3.6): one less than
    the views ended in a row by nullification, capped. The first nullified view does not slow
    the next: it is most often a dead or just-restarted leader, which a longer timer does not
    help; a second one in a row may be a network slower than the timers, and doubles them."""
    return min(max(consecutive_nulls - 1, 0), max_exponent)
