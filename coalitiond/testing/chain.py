"""Deterministic committees and certified chains for tests, benchmarks and demos.

Real keys, real signatures, real certificates — derived from a seed so a failing run can be
replayed. Not used by the daemon itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..consensus.types import Block, Certificate, CertifiedRoots, Vote, VoteKind, genesis_block
from ..log.records import entry_leaves
from ..log.sqlite import BlockToAppend
from ..primitives import merkle
from ..primitives.committee import CommitteeSpec, default_fault_bound
from ..primitives.crypto import SigningKey


def seeded_key(seed: int, index: int) -> SigningKey:
    return SigningKey(hashlib.sha256(f"coalitiond-fixture/{seed}/{index}".encode()).digest())


class ChainBuilder:
    """A committee of `n` seeded members and a chain of finalised blocks over it."""

    def __init__(self, n: int = 4, *, seed: int = 0, name: str = "feed-test") -> None:
        self.keys = [seeded_key(seed, i) for i in range(n)]
        self.committee = CommitteeSpec("fixture-net", "feed", name,
                                       tuple(k.public for k in self.keys),
                                       default_fault_bound(n))
        self.head = genesis_block(self.committee)
        self.view = 0
        #: The log's Merkle frontier after each block built, by digest, so every block
        #: certifies the real log at its parent's height (docs/protocol.md §7; the state
        #: root stays zero: nothing is executed here).
        self._log_after: dict[bytes, merkle.Frontier] = {self.head.digest: merkle.Frontier()}

    def block(self, commands: Sequence[bytes], *, parent: Block | None = None,
              view: int | None = None) -> Block:
        parent = self.head if parent is None else parent
        v = (max(self.view, parent.view) + 1) if view is None else view
        log = self._log_after.get(parent.digest, merkle.Frontier())
        certified = CertifiedRoots(parent.height, b"\x00" * 32, log.size, log.root()) \
            if parent.height > 0 else CertifiedRoots(0, b"\x00" * 32, 0, merkle.EMPTY_ROOT)
        block = Block.with_roots(self.committee.epoch, parent.height + 1, v, parent.digest,
                                 self.committee.leader(v), tuple(commands), certified)
        after = merkle.Frontier(log.size, log.stack)
        for leaf in entry_leaves(block):
            after.append(merkle.leaf_hash(leaf))
        self._log_after[block.digest] = after
        return block

    def resume(self, head: Block, log: merkle.Frontier) -> None:
        """Continue a chain a store already holds: its head block and its log's frontier."""
        self.head, self.view = head, head.view
        self._log_after[head.digest] = merkle.Frontier(log.size, log.stack)

    def votes(self, block: Block, kind: VoteKind, signers: Sequence[int] | None = None
              ) -> list[Vote]:
        signers = range(len(self.keys)) if signers is None else signers
        return [Vote.sign(self.keys[i], self.committee, i, kind, block.view, block.digest)
                for i in signers]

    def certify(self, block: Block, *, signers: Sequence[int] | None = None,
                all_votes: bool = True) -> BlockToAppend:
        """Finalize `block` with a quorum certificate from `signers` (default: the first q)
        and, with `all_votes`, every member's notarize and finalize vote."""
        q = self.committee.quorum
        cert_signers = list(range(q)) if signers is None else list(signers)
        fin = Certificate.from_votes(self.votes(block, VoteKind.FINALIZE, cert_signers))
        votes: list[Vote] = []
        if all_votes:
            votes = self.votes(block, VoteKind.NOTARIZE) + self.votes(block, VoteKind.FINALIZE)
        return BlockToAppend(block, fin, votes)

    def next(self, commands: Sequence[bytes], *, signers: Sequence[int] | None = None,
             all_votes: bool = True) -> BlockToAppend:
        """Build, certify and advance the head."""
        b = self.block(commands)
        self.head, self.view = b, b.view
        return self.certify(b, signers=signers, all_votes=all_votes)
