"""A log's base: where the log of a state-synced member starts (docs/formats.md §1, `base`).

A member that state-synced (docs/protocol.md §12) holds no blocks and no entries below height
`H + 1`. What it holds of the history below is the base: the block at `H` (so the block at
`H + 1` links to it), the log's size `N` after `H` and the RFC 6962 right edge (frontier) of
the tree of that size: one perfect-subtree hash per set bit of `N`, highest level first. From
the frontier alone the tree's root at `N` and at every later size, and every inclusion and
consistency proof that involves no leaf below `N`, can be computed (`primitives.merkle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..consensus.types import Block
from ..primitives import merkle
from ..primitives.errors import RemoteError
from .errors import StoreUsageError

#: A tree of at most 2^64 leaves has at most 64 frontier hashes.
MAX_FRONTIER_HASHES: Final = 64


class BelowBase(StoreUsageError):
    """A read of something below this member's base (it state-synced past it); the message
    says where the log starts and to ask another member."""


class BadFrontier(RemoteError):
    """Frontier hashes that cannot be the right edge of a tree of the given size."""


def frontier_levels(size: int) -> list[int]:
    """The levels of the perfect subtrees on the right edge of a tree of `size` leaves,
    highest first (one per set bit of `size`)."""
    return [level for level in reversed(range(size.bit_length())) if size >> level & 1]


def frontier_positions(size: int) -> list[tuple[int, int]]:
    """(level, index) of each frontier subtree of a tree of `size` leaves, highest first:
    the `tree_nodes` rows they are."""
    out = []
    start = 0
    for level in frontier_levels(size):
        out.append((level, start >> level))
        start += 1 << level
    return out


def make_frontier(size: int, hashes: Sequence[bytes]) -> merkle.Frontier:
    """The Frontier of a tree of `size` leaves from its right-edge hashes (highest first);
    BadFrontier when the count or a length is wrong (a root check is the caller's)."""
    if size < 0 or size >= 1 << 64:
        raise BadFrontier(f"tree size {size} is out of range")
    levels = frontier_levels(size)
    if len(hashes) != len(levels):
        raise BadFrontier(f"a tree of size {size} has {len(levels)} frontier hashes, "
                          f"got {len(hashes)}")
    if any(not isinstance(h, bytes) or len(h) != merkle.HASH_LEN for h in hashes):
        raise BadFrontier(f"frontier hashes must be {merkle.HASH_LEN} bytes each")
    return merkle.Frontier(size, list(zip(levels, hashes, strict=True)))


@dataclass(frozen=True, slots=True)
class LogBase:
    """The base of a state-synced log: the block at `height` and the tree after it.

    `note` is this member's own signed checkpoint for that height (size, root), so the base
    height answers `checkpoint(H)` like every stored height."""

    block: Block
    log_size: int
    frontier: tuple[bytes, ...]
    note: str

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def digest(self) -> bytes:
        return self.block.digest

    def tree(self) -> merkle.Frontier:
        return make_frontier(self.log_size, self.frontier)

    def root(self) -> bytes:
        return self.tree().root()

    def below(self, what: str) -> BelowBase:
        return BelowBase(f"{what} is below this member's base (it state-synced: its log "
                         f"starts at height {self.height + 1}, entry {self.log_size}); ask "
                         f"another member")
