"""Integrator verification API: pure functions, no I/O, no trust in the committee.

Leaves are the entries' canonical bytes (docs/formats.md, "Entries"); these functions apply
the RFC 6962 prefixes themselves (0x00 ‖ leaf, 0x01 ‖ left ‖ right, SHA-256). Proofs are
lists of 32-byte hashes in RFC 6962 order (leaf side first).

    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, 3)
    assert verify_inclusion(leaves[3], 3, len(leaves), proof, root)
    cp = verify_checkpoint(note, member_public_key)   # raises CheckpointError
    assert verify_inclusion(entry, index, cp.size, proof, cp.root)

A checkpoint signature says one member vouches for a root; the finalize certificate stored
beside it (in archives and the store) says a quorum finalised the block at `cp.height`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .log.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from .primitives import merkle
from .primitives.errors import LocalError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
]

leaf_hash = merkle.leaf_hash


def _tree(leaves: Sequence[bytes]) -> merkle.MemoryTree:
    return merkle.MemoryTree([merkle.leaf_hash(leaf) for leaf in leaves])


merkle_root = merkle.merkle_root


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of `leaves[index]` in the tree of all `leaves`."""
    if not 0 <= index < len(leaves):
        raise LocalError(f"inclusion_proof: index {index} outside 0..{len(leaves) - 1}")
    return merkle.inclusion_path(_tree(leaves), index, len(leaves))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """True iff `proof` shows `leaf` (canonical entry bytes) at `index` in the tree `root`."""
    return merkle.verify_inclusion_hash(merkle.leaf_hash(leaf), index, size, proof, root)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of `leaves[:old_size]` is a prefix of the tree of `leaves`."""
    if not 0 <= old_size <= len(leaves):
        raise LocalError(f"consistency_proof: old size {old_size} outside 0..{len(leaves)}")
    return merkle.consistency_path(_tree(leaves), old_size, len(leaves))


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True iff `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    return merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
