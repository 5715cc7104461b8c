"""The Almanac's tick tree: an append-only RFC 6962 tree over every tick ever applied that
keeps only what the root and proofs for the recent ticks need (bounded memory)."""

from __future__ import annotations

from collections.abc import Sequence

from ...primitives.errors import LocalError
from ...primitives.merkle import EMPTY_ROOT, node_hash, subtree_hash


class WindowTree:
    """An append-only RFC 6962 tree that forgets what proofs for recent leaves never need.

    `rows[level]` holds the perfect aligned subtrees at `level` from index `offsets[level]` on
    (`offsets[level] + len(rows[level]) == size >> level` always). Proofs and the root for
    leaves at or after `base` need, below `base`, only the *frontier* of `base` (one perfect
    subtree per set bit of `base`), so `forget(base)` drops every node left of the one just
    before `base`'s ancestor at each level. The tree can be rebuilt from that frontier plus
    the leaves after `base` (`from_frontier`): that is what a snapshot holds.
    """

    __slots__ = ("offsets", "rows")

    def __init__(self) -> None:
        self.rows: list[list[bytes]] = [[]]
        self.offsets: list[int] = [0]

    @classmethod
    def from_frontier(cls, base: int, frontier: Sequence[bytes]) -> WindowTree:
        """The tree of `base` leaves of which only the frontier is known (highest level
        first, one hash per set bit of `base`)."""
        levels = [level for level in reversed(range(base.bit_length())) if base >> level & 1]
        if len(levels) != len(frontier):
            raise LocalError(f"frontier of {base} needs {len(levels)} hashes, got "
                             f"{len(frontier)}")
        tree = cls()
        top = max(base.bit_length(), 1)
        tree.rows = [[] for _ in range(top)]
        tree.offsets = [base >> level for level in range(top)]
        for level, h in zip(levels, frontier, strict=True):
            tree.rows[level] = [h]
            tree.offsets[level] = (base >> level) - 1
        return tree

    @property
    def size(self) -> int:
        return self.offsets[0] + len(self.rows[0])

    def append_hash(self, h: bytes) -> None:
        index = self.size
        self.rows[0].append(h)
        level = 0
        while index & 1:
            parent = node_hash(self.node(level, index - 1), h)
            level += 1
            index >>= 1
            if len(self.rows) == level:
                self.rows.append([])
                self.offsets.append(index)
            self.rows[level].append(parent)
            h = parent

    def node(self, level: int, index: int) -> bytes:
        offset = self.offsets[level] if level < len(self.offsets) else 0
        if level >= len(self.rows) or not 0 <= index - offset < len(self.rows[level]):
            raise LocalError(f"tick tree: node ({level}, {index}) is not held")
        return self.rows[level][index - offset]

    def root(self) -> bytes:
        return subtree_hash(self, 0, self.size) if self.size else EMPTY_ROOT

    def frontier(self, base: int) -> list[bytes]:
        """The perfect subtrees covering leaves [0, base), highest level first."""
        return [self.node(level, (base >> level) - 1)
                for level in reversed(range(base.bit_length())) if base >> level & 1]

    def forget(self, base: int) -> None:
        """Drop nodes no proof for a leaf >= `base` (nor the root) needs."""
        for level, row in enumerate(self.rows):
            keep_from = max((base >> level) - 1, 0)
            drop = keep_from - self.offsets[level]
            if drop > 0:
                del row[:drop]
                self.offsets[level] = keep_from
