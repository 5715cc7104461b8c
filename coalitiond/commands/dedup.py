"""Client nonce deduplication: replicated, deterministic, bounded.

Rule (per client key, over envelopes that passed the stateless check):

* `highest` is the largest nonce applied so far (0 before the first);
* a nonce `n` is refused as **below the window** if `n <= highest − NONCE_WINDOW`;
* otherwise it is refused as **replayed** if it was already applied (a bitmap of the last
  NONCE_WINDOW nonces below and including `highest` remembers which were);
* otherwise it is accepted and recorded.

Why a window and not "strictly increasing": a client may send envelopes to several members
at once and they can land in blocks out of order; any nonce within NONCE_WINDOW of the
highest is still accepted once. Why not a set of every nonce ever seen: that grows without
bound. Memory is one (int, NONCE_WINDOW-bit) pair per admitted client, and clients are bounded
by the ACL (`MAX_ACL_CLIENTS`). The state is part of the executor's snapshot and state root,
so it survives restarts and every member refuses the same replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..primitives.crypto import PUBLIC_KEY_LEN
from ..primitives.encoding import encode
from ..primitives.errors import LocalError, RemoteError
from ..primitives.merkle import merkle_root
from .envelope import NonceBelowWindow, ReplayedNonce

#: How far below the highest applied nonce a late envelope is still accepted.
NONCE_WINDOW: Final = 1024
_MASK: Final = (1 << NONCE_WINDOW) - 1
_BITMAP_LEN: Final = NONCE_WINDOW // 8
_UINT64_MAX: Final = (1 << 64) - 1


class MalformedDedupState(RemoteError):
    """A dedup snapshot (from a peer during catch-up, or from disk) is not well formed."""


@dataclass(slots=True)
class ClientNonces:
    highest: int = 0
    #: bit i set ⇔ nonce `highest − i` was applied; only bits below NONCE_WINDOW are kept.
    seen: int = 0


class DedupState:
    def __init__(self) -> None:
        self._clients: dict[bytes, ClientNonces] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def highest(self, client: bytes) -> int:
        entry = self._clients.get(client)
        return entry.highest if entry else 0

    def check(self, client: bytes, nonce: int) -> None:
        """Raise NonceBelowWindow or ReplayedNonce; never changes state."""
        entry = self._clients.get(client)
        if entry is None:
            return
        if nonce <= entry.highest - NONCE_WINDOW:
            raise NonceBelowWindow(
                f"nonce {nonce} is at or below {entry.highest - NONCE_WINDOW} "
                f"(highest applied {entry.highest} minus window {NONCE_WINDOW})")
        if nonce <= entry.highest and entry.seen >> (entry.highest - nonce) & 1:
            raise ReplayedNonce(f"nonce {nonce} was already applied for this client")

    def record(self, client: bytes, nonce: int) -> None:
        """Mark `nonce` applied. The caller has called `check` first."""
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = ClientNonces()
        if nonce > entry.highest:
            shift = nonce - entry.highest
            # Guard the shift: a jump of 2^63 must not build a 2^63-bit integer.
            entry.seen = 1 if shift >= NONCE_WINDOW else ((entry.seen << shift) | 1) & _MASK
            entry.highest = nonce
        else:
            offset = entry.highest - nonce
            if offset >= NONCE_WINDOW:
                raise LocalError("dedup: record() of a nonce below the window")
            entry.seen |= 1 << offset

    # -- commitment and snapshot ----------------------------------------------------------

    def to_wire(self) -> list[Any]:
        """Sorted by client key: deterministic whatever order clients first appeared in."""
        return [[client, e.highest, e.seen.to_bytes(_BITMAP_LEN, "big")]
                for client, e in sorted(self._clients.items())]

    def root(self) -> bytes:
        return merkle_root([encode(["nonces", *row]) for row in self.to_wire()])

    @classmethod
    def from_wire(cls, obj: Any) -> DedupState:
        state = cls()
        if not isinstance(obj, list):
            raise MalformedDedupState("dedup state must be an array")
        previous: bytes | None = None
        for row in obj:
            if not (isinstance(row, list) and len(row) == 3):
                raise MalformedDedupState("dedup row must be [client, highest, bitmap]")
            client, highest, bitmap = row
            if not (isinstance(client, bytes) and len(client) == PUBLIC_KEY_LEN):
                raise MalformedDedupState("dedup client must be a 32-byte key")
            if previous is not None and client <= previous:
                raise MalformedDedupState("dedup rows must be sorted by client, no repeats")
            if not (isinstance(highest, int) and not isinstance(highest, bool)
                    and 1 <= highest <= _UINT64_MAX):
                raise MalformedDedupState("dedup highest nonce must be 1..2^64-1")
            if not (isinstance(bitmap, bytes) and len(bitmap) == _BITMAP_LEN):
                raise MalformedDedupState(f"dedup bitmap must be {_BITMAP_LEN} bytes")
            seen = int.from_bytes(bitmap, "big")
            if not seen & 1:
                raise MalformedDedupState("dedup bitmap must mark the highest nonce applied")
            if highest < NONCE_WINDOW and seen >> highest:
                raise MalformedDedupState("dedup bitmap marks nonces below 1")
            state._clients[client] = ClientNonces(highest, seen)
            previous = client
        return state
