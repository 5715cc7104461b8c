"""Pending client commands: bounded, deduplicated, in arrival order (docs/protocol.md §6).

Pure data structure owned by the core. A dict keeps insertion order, which is deterministic,
so taking a batch never depends on hashing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final

from ..primitives.identity import digest as blake3_digest
from .types import MAX_COMMAND_SIZE

#: Pending commands and bytes; beyond them new commands are refused (the client retries).
MAX_PENDING_COMMANDS: Final = 50_000
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
#: How many recently finalised command digests are remembered to drop resubmissions.
RECENT_COMMITTED_WINDOW: Final = 100_000


def wire_size(command: bytes) -> int:
    """Bytes `command` takes in an encoded block: the CBOR byte-string head and the bytes."""
    n = len(command)
    head = 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5
    return head + n


def prefix_within(commands: Sequence[bytes], max_bytes: int) -> tuple[bytes, ...]:
    """The longest prefix of `commands` whose `wire_size`s add up to at most `max_bytes`."""
    out: list[bytes] = []
    size = 0
    for cmd in commands:
        size += wire_size(cmd)
        if size > max_bytes:
            break
        out.append(cmd)
    return tuple(out)


class Batcher:
    def __init__(self) -> None:
        self._pending: dict[bytes, bytes] = {}  # digest -> command, in arrival order
        self._bytes = 0
        self._recent: set[bytes] = set()
        self._recent_order: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def add(self, command: bytes) -> str | None:
        """Queue `command`; return None, or why it was refused (a one-line reason)."""
        if not command:
            return "empty command"
        if len(command) > MAX_COMMAND_SIZE:
            return f"command of {len(command)} bytes exceeds {MAX_COMMAND_SIZE}"
        key = blake3_digest(command)
        if key in self._pending:
            return "duplicate of a pending command"
        if key in self._recent:
            return "duplicate of a recently finalised command"
        if len(self._pending) >= MAX_PENDING_COMMANDS:
            return f"pending queue full ({MAX_PENDING_COMMANDS} commands)"
        if self._bytes + len(command) > MAX_PENDING_BYTES:
            return f"pending queue full ({MAX_PENDING_BYTES} bytes)"
        self._pending[key] = command
        self._bytes += len(command)
        return None

    def full_batch(self, max_count: int, max_bytes: int) -> bool:
        """Is a size-triggered batch ready?"""
        return len(self._pending) >= max_count or self._bytes >= max_bytes

    def take(self, max_count: int, max_bytes: int, exclude: set[bytes]) -> tuple[bytes, ...]:
        """Up to `max_count` commands / `max_bytes` encoded bytes (`wire_size`: each command
        with its CBOR head, as the block will hold it), oldest first, skipping `exclude`
        (digests already in unfinalised ancestors). Does not remove them: a command leaves
        the queue only when a block holding it is finalised."""
        out: list[bytes] = []
        size = 0
        for key, cmd in self._pending.items():
            if len(out) >= max_count:
                break
            if key in exclude:
                continue
            if size + wire_size(cmd) > max_bytes:
                break
            out.append(cmd)
            size += wire_size(cmd)
        return tuple(out)

    def discard(self, commands: Iterable[bytes]) -> None:
        """Forget pending commands this member will not vote for (a vote-time check refused
        them), so its own proposals stop carrying them. Not remembered as finalised."""
        for cmd in commands:
            found = self._pending.pop(blake3_digest(cmd), None)
            if found is not None:
                self._bytes -= len(found)

    def committed(self, commands: Iterable[bytes]) -> None:
        """Commands finalised in a block (by anyone): forget them, remember their digests."""
        for cmd in commands:
            key = blake3_digest(cmd)
            found = self._pending.pop(key, None)
            if found is not None:
                self._bytes -= len(found)
            if key not in self._recent:
                self._recent.add(key)
                self._recent_order.append(key)
                if len(self._recent_order) > RECENT_COMMITTED_WINDOW:
                    self._recent.discard(self._recent_order.popleft())
