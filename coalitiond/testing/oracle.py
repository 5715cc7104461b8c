"""The simulator's oracle: what any node could know, and whether honest statements follow.

The simulator's other invariants (agreement, no conflicting honest signatures, evidence for
every provable equivocation, liveness) only fail once a broken rule has done visible damage.
A broken rule in `Core` often does none within a short run: a vote for a block whose parent
was never notarised, with every member finalising the same chain afterwards, forks nothing.
The oracle states the rules' outcomes directly, from signed data alone:

* every message an honest node sends is well formed for the committee (its epoch; every
  certificate carries a quorum of distinct members' signatures);
* every notarise vote of an honest node is *justified*: the block's parent is genesis, or
  carries a quorum of notarise (or finalise) signatures, or was finalised by an honest node,
  and every view strictly between the parent's and the block's carries a quorum of nullify
  signatures (docs/protocol.md §3.2);
* every block an honest node finalises carries a quorum of notarise or finalise signatures
  (§4: every block of the finalised chain was notarised), under a certificate of a quorum of
  distinct members.

"A quorum of signatures" means: seen somewhere in the run, on the wire (verified when
delivered), in an honest node's own messages, or in a fetched chain that verified. What an
honest node knows is a subset of that, so the checks never fail a correct core, within the
safety bound or beyond it. The quorum is re-derived here from the dial
(`q = ceil((n + f_s + 1) / 2)`, DESIGN §2.5), not read from `CommitteeSpec`, so that a
mutation of the quorum (tests/mutants.py) cannot change what the oracle demands.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..consensus.messages import (
    Finalization,
    Message,
    Notarization,
    Nullification,
    NullificationsAnswer,
    Proposal,
)
from ..consensus.types import ZERO_DIGEST, Block, Certificate, Vote, VoteKind, genesis_block
from ..primitives.committee import CommitteeSpec

_Key = tuple[int, int, bytes]  # (vote kind, view, digest)


def reference_quorum(n: int, fault_bound: int) -> int:
    """`ceil((n + f_s + 1) / 2)`, written out here on purpose (see the module docstring)."""
    return -(-(n + fault_bound + 1) // 2)


class Oracle:
    """Signatures and blocks seen in one run, and the checks on honest statements."""

    def __init__(self, committee: CommitteeSpec) -> None:
        self.committee = committee
        self.epoch = committee.epoch
        self.q = reference_quorum(committee.n, committee.fault_bound)
        self.genesis = genesis_block(committee).digest
        self._signers: dict[_Key, set[int]] = {}
        self.blocks: dict[bytes, Block] = {}
        #: Blocks some honest node finalised.
        self.finalized: set[bytes] = set()

    # -- what was seen ----------------------------------------------------------------------

    def _add(self, kind: VoteKind, epoch: int, view: int, digest: bytes, signers: Sequence[int]
             ) -> None:
        if epoch != self.epoch:
            return  # another epoch's signatures never count here
        self._signers.setdefault((int(kind), view, digest), set()).update(
            i for i in signers if 0 <= i < self.committee.n)

    def learn_certificate(self, cert: Certificate) -> None:
        self._add(cert.kind, cert.epoch, cert.view, cert.digest, [i for i, _ in cert.signatures])

    def learn_block(self, block: Block) -> None:
        if block.epoch == self.epoch:
            self.blocks.setdefault(block.digest, block)

    def learn(self, msg: Message) -> None:
        """A message that verified on delivery, or one an honest node sent."""
        if isinstance(msg, Vote):
            self._add(msg.kind, msg.epoch, msg.view, msg.digest, [msg.signer])
        elif isinstance(msg, Proposal):
            self.learn_block(msg.block)
        elif isinstance(msg, Notarization | Finalization):
            self.learn_certificate(msg.certificate)
            if msg.block is not None:
                self.learn_block(msg.block)
        elif isinstance(msg, Nullification):
            self.learn_certificate(msg.certificate)
        elif isinstance(msg, NullificationsAnswer):
            for cert in msg.certificates:
                if cert.kind is VoteKind.NULLIFY:
                    self.learn_certificate(cert)

    def learn_chain(self, chain: Sequence[tuple[Block, Certificate]]) -> None:
        """A fetched run of finalised blocks that verified."""
        for block, cert in chain:
            self.learn_block(block)
            self.learn_certificate(cert)

    def certified(self, kind: VoteKind, view: int, digest: bytes) -> bool:
        return len(self._signers.get((int(kind), view, digest), ())) >= self.q

    # -- the checks -------------------------------------------------------------------------

    def certificate_refusal(self, cert: Certificate) -> str | None:
        """Why `cert` is not a certificate of this committee (signatures aside)."""
        signers = [i for i, _ in cert.signatures]
        if cert.epoch != self.epoch:
            return f"certificate for epoch {cert.epoch}, committee is at {self.epoch}"
        if signers != sorted(set(signers)):
            return f"certificate signers {signers} are not distinct and ascending"
        if len(signers) < self.q or not all(0 <= i < self.committee.n for i in signers):
            return f"certificate signers {signers} are not a quorum of {self.q} members"
        return None

    def message_refusal(self, msg: Message) -> str | None:
        """Why an honest node must not have sent `msg`, or None."""
        if isinstance(msg, Vote) and msg.epoch != self.epoch:
            return f"vote for epoch {msg.epoch}"
        if isinstance(msg, Notarization | Finalization | Nullification):
            return self.certificate_refusal(msg.certificate)
        if isinstance(msg, NullificationsAnswer):
            for cert in msg.certificates:
                refusal = self.certificate_refusal(cert)
                if refusal is not None:
                    return refusal
        return None

    def notarize_refusal(self, digest: bytes) -> str | None:
        """Why an honest notarise vote on `digest` is not justified, or None."""
        block = self.blocks.get(digest)
        if block is None:
            return f"notarise vote for block {digest.hex()[:12]} nobody proposed"
        parent_view = 0
        if block.parent != self.genesis:
            parent = self.blocks.get(block.parent)
            if parent is None:
                return f"block {digest.hex()[:12]} names an unknown parent"
            parent_view = parent.view
            if not (parent.digest in self.finalized
                    or self.certified(VoteKind.NOTARIZE, parent.view, parent.digest)
                    or self.certified(VoteKind.FINALIZE, parent.view, parent.digest)):
                return (f"block of view {block.view} builds on the block of view {parent.view}, "
                        f"which no quorum notarised")
        for w in range(parent_view + 1, block.view):
            if not self.certified(VoteKind.NULLIFY, w, ZERO_DIGEST):
                return (f"block of view {block.view} on a parent of view {parent_view} skips "
                        f"view {w}, which no quorum nullified")
        return None

    def finalized_refusal(self, block: Block, cert: Certificate) -> str | None:
        """Why an honest node must not have finalised `block` under `cert`, or None."""
        if cert.kind is not VoteKind.FINALIZE:
            return f"finalised under a {cert.kind.name.lower()} certificate"
        refusal = self.certificate_refusal(cert)
        if refusal is not None:
            return refusal
        if not (self.certified(VoteKind.NOTARIZE, block.view, block.digest)
                or self.certified(VoteKind.FINALIZE, block.view, block.digest)):
            return f"block of view {block.view} was never notarised by a quorum"
        return None
