"""Catch-up: answering sync requests, fetching nullifications by view, asking for finalised
blocks (docs/protocol.md §3.7, §9).

A member that cannot decide a proposal asks its proposer (`sync`, unsigned); the proposer
answers once per (member, view) with certified data only: what its proposal built on. A member
that misses the nullifications of many views between a proposal and its parent fetches them
by range (`nullifications?`), a bounded page at a time, from one peer after another. A member
that holds a finalisation but not the chain below it asks the shell to fetch blocks. None of
this decides safety: every answer is certificates and blocks the receiver checks like any
other, and a view counts as nullified only on a verified nullification certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .events import FetchBlocks
from .limits import (
    MAX_FETCH_ANSWER_BYTES,
    MAX_FETCH_ANSWERS_PER_VIEW,
    MAX_FETCH_BLOCKS,
    MAX_FETCH_VIEWS,
    MAX_SYNC_CERTS,
)
from .messages import (
    Finalization,
    Message,
    Notarization,
    Nullification,
    NullificationsAnswer,
    NullificationsRequest,
)
from .rules import CertifiedView, Gap, unfinalized_ancestors
from .types import Block, Certificate


def sync_answer(proposal: Block, view: int, tip: Block, tip_certificate: Certificate | None,
                blocks: Mapping[bytes, Block],
                views: Mapping[int, CertifiedView]) -> list[Message]:
    """What the proposer of `proposal` (view `view`) sends a member that cannot check it:
    the notarisation (with block) of the parent and of every unfinalised ancestor, its
    finalised tip's finalisation, and the nullifications of the views in between, at most
    `MAX_SYNC_CERTS` of them (twice that in all). docs/protocol.md §3.7. Empty if this member
    no longer holds the parent's notarisation."""
    answer: list[Message] = []
    if proposal.parent == tip.digest:
        parent_view = tip.view
    else:
        parent = blocks.get(proposal.parent)
        ps = views.get(parent.view) if parent is not None else None
        if parent is None or ps is None or ps.notarization is None:
            return []
        parent_view = parent.view
        # The parent and every unfinalised ancestor: the requester may miss any of them.
        for b in unfinalized_ancestors(parent, tip, blocks) or [parent]:
            bs = views.get(b.view)
            if bs is not None and bs.notarization is not None and \
                    bs.notarization.digest == b.digest:
                answer.append(Notarization(bs.notarization, b))
    if tip_certificate is not None and tip_certificate.digest == tip.digest:
        answer.append(Finalization(tip_certificate, tip))  # lagging requesters
    first = parent_view + 1
    for w in range(max(first, view - MAX_SYNC_CERTS), view):
        ws = views.get(w)
        if ws is not None and ws.nullification is not None:
            answer.append(Nullification(ws.nullification))
    return answer[: 2 * MAX_SYNC_CERTS]


def fetch_request(tip_height: int, gap: Gap) -> FetchBlocks:
    """The heights to ask for to close `gap` above the finalised tip, at most
    `MAX_FETCH_BLOCKS` (docs/protocol.md §9; an answer may extend further)."""
    last = tip_height + MAX_FETCH_BLOCKS
    if gap.last is not None:
        last = min(gap.last, last)
    return FetchBlocks(tip_height + 1, last)


def fetched_refusal(block: Block, tip: Block) -> str | None:
    """Why a fetched finalised block above the tip cannot be applied: it must be the tip's
    child (`verify_fetched` checked the certificates, not that the chain is ours). §9."""
    if block.parent != tip.digest or block.height != tip.height + 1:
        return (f"fetched block at height {block.height} does not extend our tip at height "
                f"{tip.height}")
    return None


# ---------------------------------------------------------------------------------------------
# fetching nullifications by view (§9)

#: Room for the envelope and the answer's own framing in `MAX_FETCH_ANSWER_BYTES`.
ANSWER_HEADROOM = 1024


@dataclass(slots=True)
class NullificationFetch:
    """The one open `nullifications?` request of a member (docs/protocol.md §9).

    `view` is the view whose waiting proposal needs the nullifications; `first..last` the
    range asked of member `peer`; `seq` numbers the request (its FETCH timer carries it);
    `fruitless` counts peers asked in a row that brought nothing new; `open` is False once
    the request was answered (`answered`) or timed out."""

    view: int
    first: int
    last: int
    peer: int
    seq: int
    fruitless: int = 0
    open: bool = True
    answered: bool = False


def missing_nullifications(parent_view: int, view: int,
                           views: Mapping[int, CertifiedView]) -> tuple[int, int] | None:
    """The next range to fetch for a proposal of `view` built on a parent of `parent_view`:
    from the lowest view in between without a nullification, at most `MAX_FETCH_VIEWS` views,
    never reaching `view`. None if every view in between is nullified (§3.2, §9)."""
    for w in range(parent_view + 1, view):
        ws = views.get(w)
        if ws is None or ws.nullification is None:
            return w, min(view - 1, w + MAX_FETCH_VIEWS - 1)
    return None


def next_fetch(previous: NullificationFetch | None, view: int, proposer: int, me: int,
               n: int, wanted: tuple[int, int], seq: int) -> NullificationFetch | None:
    """Whom to ask for `wanted` (§9), deterministically. A new view starts with the
    proposer (it built on those views, so an honest one holds every certificate asked for);
    after a page that brought something new the same peer is asked for the next page; after
    an answer with nothing new, or none in time, the next member in index order (never
    ourselves). None while a request is open, or once every other member was asked in a row
    without result (the view timer starts a new round, `restart_fetch`)."""
    if previous is not None and previous.view == view:
        if previous.open:
            return None
        if previous.answered and wanted[0] > previous.first:
            return NullificationFetch(view, wanted[0], wanted[1], previous.peer, seq)
        fruitless = previous.fruitless + 1
        if fruitless >= n - 1:
            return None
        peer = (previous.peer + 1) % n
        if peer == me:
            peer = (peer + 1) % n
        return NullificationFetch(view, wanted[0], wanted[1], peer, seq, fruitless)
    peer = proposer if proposer != me else (me + 1) % n
    return NullificationFetch(view, wanted[0], wanted[1], peer, seq)


def restart_fetch(fetch: NullificationFetch | None, view: int) -> bool:
    """The view timer re-fired: a round that asked every peer without result starts again
    (peers may have learnt the certificates since); True if there is one to restart. §9."""
    if fetch is None or fetch.view != view or fetch.open:
        return False
    fetch.fruitless = 0
    return True


def nullifications_answer(request: NullificationsRequest,
                          views: Mapping[int, CertifiedView]) -> NullificationsAnswer:
    """What a member sends for `nullifications?`: the nullifications it holds for the views
    asked for, ascending, at most `MAX_FETCH_VIEWS` and within `MAX_FETCH_ANSWER_BYTES`
    encoded (§9, §10)."""
    certs = []
    size = ANSWER_HEADROOM
    for w in range(request.first, min(request.last, request.first + MAX_FETCH_VIEWS - 1) + 1):
        ws = views.get(w)
        cert = ws.nullification if ws is not None else None
        if cert is None:
            continue
        size += len(cert.encode())
        if size > MAX_FETCH_ANSWER_BYTES:
            break
        certs.append(cert)
    return NullificationsAnswer(request.first, request.last, tuple(certs))


def may_answer_fetch(served: dict[int, tuple[int, int]], member: int, view: int) -> bool:
    """At most `MAX_FETCH_ANSWERS_PER_VIEW` answers per member and per view of ours (§10);
    counts this one. `served` holds at most one entry per member."""
    last_view, count = served.get(member, (view, 0))
    if last_view != view:
        count = 0
    if count >= MAX_FETCH_ANSWERS_PER_VIEW:
        return False
    served[member] = (view, count + 1)
    return True
