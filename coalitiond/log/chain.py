"""Checking a run of finalised blocks someone handed out (a member's catch-up answer, a
`tail`, the read API's `/v1/blocks`), trusting only the committee: hash links, and the
finalize certificate that makes each block final, its own or a descendant's."""

from __future__ import annotations

from typing import Final

from ..consensus.types import Block, BlockHeader, Certificate, VoteKind
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import RemoteError
from .records import FinalizedBlock

#: Blocks a reader holds while waiting for the finalization that covers them.
MAX_PENDING_BLOCKS: Final = 4096


class ChainVerifier:
    """Checks blocks a member hands out, in height order, trusting only the committee.

    Each block must link to the previous one by parent digest. A block with its own finalize
    certificate is final; a block with only a notarization is *pending* until a later block
    with a finalize certificate arrives that descends from it (Simplex finalises ancestors).
    `feed` returns the blocks that became final, in order.
    """

    def __init__(self, committee: CommitteeSpec, previous: Block | None = None) -> None:
        self.committee = committee
        self.previous = previous
        self.pending: list[FinalizedBlock] = []

    def feed(self, fb: FinalizedBlock) -> list[FinalizedBlock]:
        block = fb.block
        if self.previous is not None and (block.parent != self.previous.digest
                                          or block.height != self.previous.height + 1):
            raise RemoteError(f"height {block.height}: does not link to the block before it")
        self.previous = block
        if fb.finalization is not None:
            check_certificate(self.committee, fb.finalization, VoteKind.FINALIZE, block)
            final = [*self.pending, fb]
            self.pending = []
            return final
        # Final only through a descendant (it may carry a notarization, or nothing when the
        # member missed its votes): pending until a finalised block chains back to it.
        if fb.notarization is not None:
            check_certificate(self.committee, fb.notarization, VoteKind.NOTARIZE, block)
        if len(self.pending) >= MAX_PENDING_BLOCKS:
            raise RemoteError(f"height {block.height}: more than {MAX_PENDING_BLOCKS} blocks "
                              "without a finalization")
        self.pending.append(fb)
        return []


def check_certificate(committee: CommitteeSpec, cert: Certificate, kind: VoteKind,
                      block: Block | BlockHeader) -> None:
    """`cert` must be a valid `kind` certificate of exactly `block` (RemoteError if not)."""
    if cert.kind is not kind or cert.digest != block.digest or cert.view != block.view:
        raise RemoteError(f"height {block.height}: the {kind.name.lower()} certificate is "
                          "not for this block")
    cert.verify(committee)
