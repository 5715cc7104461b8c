"""Catch-up: answering sync requests and asking for finalised blocks (docs/protocol.md §3.7, §9).

A member that cannot decide a proposal asks its proposer (`sync`, unsigned); the proposer
answers once per (member, view) with certified data only: what its proposal built on. A member
that holds a finalisation but not the chain below it asks the shell to fetch blocks. Neither
decides safety: every answer is certificates and blocks the receiver checks like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

from .events import FetchBlocks
from .limits import MAX_FETCH_BLOCKS, MAX_SYNC_CERTS
from .messages import Finalization, Message, Notarization, Nullification
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
