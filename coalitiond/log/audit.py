"""Offline audit of a log: a pure, incremental checker (no I/O).

Fed one FinalizedBlock at a time (from a store or an archive), it checks the hash chain,
certificates (q distinct committee members, valid signatures), every collected vote, each
checkpoint (signature, size, root, committee, epoch, height, block digest) against the Merkle
tree it rebuilds, and the log roots each block certifies (`executed_height`, `log_size`,
`log_root`, docs/protocol.md §7) against the tree at that height. The first problem raises
AuditFailure naming the height, the entry index when there is one, and what failed. The
entries are the block's own leaves (`entry_leaves`, a record carries no others); a store
checks its stored copy of them against the same leaves (`Store.audit`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ..consensus.types import (
    Certificate,
    InvalidCertificate,
    VoteKind,
    genesis_block,
)
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import CoalitiondError
from ..primitives.merkle import Frontier, leaf_hash
from .checkpoint import CheckpointError, verify_checkpoint
from .records import FinalizedBlock, entry_leaves

#: Tree (size, root) remembered per height to check the roots later blocks certify. Honest
#: voters never certify a height older than the roots they keep (1024), so a block that
#: names one older than this window cannot be in a committee's chain.
ROOTS_WINDOW: Final = 65_536


class AuditFailure(CoalitiondError):
    """A check failed. `height` and `entry` say where (None when not applicable)."""

    def __init__(self, what: str, *, height: int | None = None, entry: int | None = None) -> None:
        self.what = what
        self.height = height
        self.entry = entry
        where = []
        if height is not None:
            where.append(f"height {height}")
        if entry is not None:
            where.append(f"entry {entry}")
        super().__init__(f"{', '.join(where)}: {what}" if where else what)


@dataclass
class AuditSummary:
    height: int
    entries: int
    root: bytes
    head_digest: bytes
    blocks: int = 0
    signatures_checked: int = 0
    leaf_hashes: list[bytes] = field(default_factory=list, repr=False)


class LogAuditor:
    """Checks a log block by block. `signer` is the public key that signs its checkpoints."""

    def __init__(self, committee: CommitteeSpec, signer: bytes, *,
                 check_signatures: bool = True, keep_leaf_hashes: bool = False) -> None:
        if committee.index_of(signer) is None:
            raise AuditFailure(f"checkpoint signer {signer.hex()} is not a committee member")
        self.committee = committee
        self.signer = signer
        self.check_signatures = check_signatures
        self.keep_leaf_hashes = keep_leaf_hashes
        genesis = genesis_block(committee)
        self.tree = Frontier()
        self.summary = AuditSummary(0, 0, self.tree.root(), genesis.digest)
        #: Heights notarised but not (yet) finalised by a descendant's finalize certificate.
        self.pending: list[int] = []
        #: The tree (size, root) after each of the last ROOTS_WINDOW heights.
        self.tree_at: OrderedDict[int, tuple[int, bytes]] = OrderedDict([(0, (0, self.tree.root()))])

    def feed(self, fb: FinalizedBlock) -> None:
        s = self.summary
        b = fb.block
        h = s.height + 1

        def fail(what: str, entry: int | None = None) -> AuditFailure:
            return AuditFailure(what, height=h, entry=entry)

        if b.height != h:
            raise fail(f"block says height {b.height}; the log is not contiguous")
        if b.parent != s.head_digest:
            raise fail(f"parent {b.parent.hex()[:16]} is not the digest of height {h - 1} "
                       f"({s.head_digest.hex()[:16]}): the hash chain is broken")
        if b.epoch != self.committee.epoch:
            raise fail(f"block epoch {b.epoch}, committee epoch {self.committee.epoch}")
        certified = self.tree_at.get(b.executed_height)
        if certified is None:
            raise fail(f"the block certifies the log at height {b.executed_height}, more than "
                       f"{ROOTS_WINDOW} heights back")
        if certified != (b.log_size, b.log_root):
            raise fail(f"the block certifies log size {b.log_size} root "
                       f"{b.log_root.hex()[:16]} at height {b.executed_height}; the log there "
                       f"has size {certified[0]} root {certified[1].hex()[:16]}")
        for cert, kind in ((fb.finalization, VoteKind.FINALIZE),
                           (fb.notarization, VoteKind.NOTARIZE)):
            if cert is not None:
                self._check_certificate(fail, cert, kind, fb)
        for v in fb.votes:
            if v.kind is VoteKind.NULLIFY or (v.epoch, v.view, v.digest) != (
                    b.epoch, b.view, b.digest):
                raise fail(f"a vote of member {v.signer} is not for this block")
            if self.check_signatures:
                if not v.verify(self.committee):
                    raise fail(f"{v.kind.name.lower()} vote of member {v.signer} does not verify")
                s.signatures_checked += 1
        if fb.finalization is not None:
            self.pending.clear()
        else:
            self.pending.append(h)
        leaves = entry_leaves(b)
        for leaf in leaves:
            lh = leaf_hash(leaf)
            self.tree.append(lh)
            if self.keep_leaf_hashes:
                s.leaf_hashes.append(lh)
        s.entries += len(leaves)
        try:
            cp = verify_checkpoint(fb.checkpoint, self.signer)
        except CheckpointError as e:
            raise fail(f"checkpoint: {e}") from None
        root = self.tree.root()
        if cp.size != s.entries:
            raise fail(f"checkpoint tree size {cp.size}, the log has {s.entries} entries")
        if cp.root != root:
            raise fail(f"checkpoint root {cp.root.hex()[:16]} is not the Merkle root of the "
                       f"entries ({root.hex()[:16]})")
        if (cp.committee_id, cp.epoch, cp.height, cp.block_digest) != (
                self.committee.committee_id, b.epoch, h, b.digest):
            raise fail("checkpoint names another committee, epoch, height or block")
        s.height, s.head_digest, s.root = h, b.digest, root
        self.tree_at[h] = (s.entries, root)
        if len(self.tree_at) > ROOTS_WINDOW:
            self.tree_at.popitem(last=False)
        s.blocks += 1

    def _check_certificate(self, fail: Callable[..., AuditFailure], cert: Certificate, kind: VoteKind,
                           fb: FinalizedBlock) -> None:
        b = fb.block
        name = kind.name.lower()
        if cert.kind is not kind:
            raise fail(f"{name} certificate has kind {cert.kind.name.lower()}")
        if (cert.view, cert.digest) != (b.view, b.digest):
            raise fail(f"{name} certificate is for view {cert.view} digest "
                       f"{cert.digest.hex()[:16]}, not this block")
        if self.check_signatures:
            try:
                cert.verify(self.committee)
            except InvalidCertificate as e:
                raise fail(f"{name} certificate: {e}") from None
            self.summary.signatures_checked += len(cert.signatures)
        elif len(set(cert.signers())) < self.committee.quorum:
            raise fail(f"{name} certificate has fewer than q={self.committee.quorum} signers")

    def finish(self) -> AuditSummary:
        if self.pending:
            raise AuditFailure(
                f"never finalised: no finalize certificate at or after height "
                f"{self.pending[0]}", height=self.pending[0])
        return self.summary
