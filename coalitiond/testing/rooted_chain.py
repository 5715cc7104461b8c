"""A certified feed chain whose blocks carry true roots, for snapshot tests and benchmarks.

`ChainBuilder` blocks claim zero state roots; a restart that checks a snapshot against the
roots blocks certify needs the real ones. `RootedChain` executes every block it builds with
its own executor and log frontier, and the next block claims the roots after it (lag one, as
an honest proposer that has executed its parent claims). Not used by the daemon itself.
"""

from __future__ import annotations

from ..commands.client import EnvelopeSigner, publish
from ..commands.envelope import Acl, Envelope
from ..components.executor import Executor
from ..components.feed.component import Feed
from ..consensus.types import (
    NOTHING_EXECUTED,
    Block,
    Certificate,
    CertifiedRoots,
    VoteKind,
)
from ..log.records import entry_leaves
from ..log.sqlite import BlockToAppend
from ..primitives import merkle
from .chain import ChainBuilder, seeded_key

#: Stands in for signatures when `fake_signatures` is set (stores appended with
#: verify_signatures=False check only that a quorum signed; benchmarks need not pay q
#: ed25519 signatures per block).
FAKE_SIGNATURE = b"\x5a" * 64


class RootedChain:
    def __init__(self, n: int = 4, *, seed: int = 0, fake_signatures: bool = False) -> None:
        self.chain = ChainBuilder(n, seed=seed, name="feed-rooted")
        self.committee = self.chain.committee
        self.publisher = seeded_key(seed, 10_000)
        self.signer = EnvelopeSigner(self.publisher, self.committee.committee_id)
        self.executor = self.make_executor()
        self.frontier = merkle.Frontier()
        self.roots: CertifiedRoots = NOTHING_EXECUTED
        #: Roots after every height built, by height.
        self.history: dict[int, CertifiedRoots] = {}
        self.fake_signatures = fake_signatures

    def make_executor(self) -> Executor:
        """A fresh executor of this committee, as a member builds it."""
        component = Feed([self.publisher.public])
        component.bind(self.committee)
        return Executor(self.committee.committee_id, Acl.allow([self.publisher.public]),
                        component)

    def envelope(self, body: bytes) -> bytes:
        return self.signer.sign([publish("k", body)]).raw

    def next(self, commands: tuple[bytes, ...] = (), *,
             claim: CertifiedRoots | None = None) -> BlockToAppend:
        """Build, certify and execute the next block; it claims `claim` (default: the roots
        after its parent)."""
        chain = self.chain
        parent = chain.head
        view = max(chain.view, parent.view) + 1
        block = Block.with_roots(self.committee.epoch, parent.height + 1, view, parent.digest,
                                 self.committee.leader(view), commands,
                                 self.roots if claim is None else claim)
        chain.head, chain.view = block, view
        if self.fake_signatures:
            item = BlockToAppend(block, Certificate(
                VoteKind.FINALIZE, block.epoch, block.view, block.digest,
                tuple((i, FAKE_SIGNATURE) for i in range(self.committee.quorum))))
        else:
            item = chain.certify(block, all_votes=False)
        result = self.executor.apply_block(
            block.height, block.digest, block.commands,
            checked=[Envelope.decode(c) for c in block.commands])
        for leaf in entry_leaves(block):
            self.frontier.append(merkle.leaf_hash(leaf))
        self.roots = CertifiedRoots(block.height, result.state_root, self.frontier.size,
                                    self.frontier.root())
        self.history[block.height] = self.roots
        return item
