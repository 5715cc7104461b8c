"""RFC 6962 Merkle tree (SHA-256, 0x00 leaf / 0x01 node prefixes) over log entries.

Two layers:

* Proof *construction* is written once against a `NodeSource`: anything that can return the
  hash of a perfect, aligned subtree `(level, index)` — the subtree covering leaves
  `[index·2^level, (index+1)·2^level)`. The RFC 6962 recursion (split at the largest power of
  two below the size) only ever needs such perfect subtrees plus the ragged right edge, which
  is rebuilt from perfect subtrees in O(log² n). The store keeps perfect subtrees in SQLite;
  `MemoryTree` keeps them in lists (the pure integrator API in `coalitiond.verify`).
* Proof *verification* (RFC 9162 §2.1.3.2 and §2.1.4.2) needs nothing but hashes.

Why SHA-256 and not blake3: existing checkpoint verifiers and witnesses (C2SP tlog-*) fix
SHA-256, and the cost difference for 64-byte node inputs is nil in Python (research/bft.md §4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol

from .errors import LocalError

HASH_LEN: Final = 32
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
#: Root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
#: A proof for a tree of at most 2^64 leaves has at most 64 hashes (inclusion) or ~2·64
#: (consistency); anything longer is refused before hashing.
MAX_PROOF_LEN: Final = 128


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class NodeSource(Protocol):
    def node(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree covering leaves [index·2^level, (index+1)·2^level)."""
        ...


def subtree_hash(src: NodeSource, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) for a range the RFC 6962 recursion produces (lo aligned to its split)."""
    n = hi - lo
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and lo % n == 0:
        return src.node(n.bit_length() - 1, lo // n)
    k = _split(n)
    return node_hash(subtree_hash(src, lo, lo + k), subtree_hash(src, lo + k, hi))


def root(src: NodeSource, size: int) -> bytes:
    return subtree_hash(src, 0, size)


def inclusion_path(src: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf-to-root order."""
    if not 0 <= index < size:
        raise LocalError(f"inclusion proof: index {index} outside a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    # Walk down, collecting siblings; reversed at the end so the first hash is the leaf's.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subtree_hash(src, lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree_hash(src, lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(src: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 6962 §2.1.2."""
    if not 0 <= old_size <= new_size:
        raise LocalError(f"consistency proof: sizes {old_size} -> {new_size} are not ordered")
    if old_size == 0 or old_size == new_size:
        return []
    out: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[lo:hi], complete), iteratively; siblings are appended innermost-last,
    # so collect outermost-first and reverse.
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append(subtree_hash(src, lo, hi))
            break
        k = _split(n)
        if m <= k:
            out.append(subtree_hash(src, lo + k, hi))
            hi = lo + k
        else:
            out.append(subtree_hash(src, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    out.reverse()
    return out


def verify_inclusion_hash(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                          root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2, given the leaf *hash*."""
    if not 0 <= index < size or len(proof) > MAX_PROOF_LEN:
        return False
    if any(len(p) != HASH_LEN for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2."""
    if not 0 <= old_size <= new_size or len(proof) > MAX_PROOF_LEN:
        return False
    if any(len(p) != HASH_LEN for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        # Every tree extends the empty tree; RFC 9162 defines no proof for it.
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class MemoryTree:
    """All perfect subtrees of an append-only tree, in memory (amortised O(1) append)."""

    __slots__ = ("levels",)

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append_hash(h)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_hash(self, h: bytes) -> None:
        level = 0
        self.levels[0].append(h)
        # A node at `level` completes its parent when its index is odd.
        while len(self.levels[level]) % 2 == 0:
            row = self.levels[level]
            parent = node_hash(row[-2], row[-1])
            level += 1
            if len(self.levels) == level:
                self.levels.append([])
            self.levels[level].append(parent)

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return root(self, self.size if size is None else self._check(size))

    def _check(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise LocalError(f"tree size {size} outside 0..{self.size}")
        return size


class Frontier:
    """The right edge of an append-only tree: one perfect subtree per set bit of its size.

    Enough to append leaves and compute the current root without reading old nodes; every
    append reports the perfect subtrees it completed so the store can persist them.
    """

    __slots__ = ("size", "stack")

    def __init__(self, size: int = 0, stack: Sequence[tuple[int, bytes]] = ()) -> None:
        self.size = size
        #: (level, hash), highest level first.
        self.stack: list[tuple[int, bytes]] = list(stack)

    @classmethod
    def load(cls, src: NodeSource, size: int) -> Frontier:
        stack = []
        start = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                stack.append((level, src.node(level, start >> level)))
                start += 1 << level
        return cls(size, stack)

    def append(self, h: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the new perfect nodes as (level, index, hash)."""
        index = self.size
        new = [(0, index, h)]
        self.stack.append((0, h))
        level = 0
        while len(self.stack) >= 2 and self.stack[-2][0] == self.stack[-1][0]:
            (_, left), (_, right) = self.stack[-2], self.stack[-1]
            del self.stack[-2:]
            level += 1
            parent = node_hash(left, right)
            self.stack.append((level, parent))
            new.append((level, index >> level, parent))
        self.size += 1
        return new

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        acc = self.stack[-1][1]
        for _, h in reversed(self.stack[:-1]):
            acc = node_hash(h, acc)
        return acc


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(leaves) of RFC 6962 over the leaves' canonical bytes; SHA-256("") for none."""
    return MemoryTree([leaf_hash(leaf) for leaf in leaves]).root()
