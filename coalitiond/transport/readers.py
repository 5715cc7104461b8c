"""Reader admission: who of the non-members that link to a member gets a slot (wire.md §8).

* **Reserved** readers — keys named in configuration (the committee's ACL clients and
  `transport.reserved_readers`) — always get a slot of their own: no number of strangers
  can lock them out.
* Everyone else shares a small **anonymous** pool: at most `max_readers` links, at most
  `max_readers_per_address` of them from one IP address.
* When the pool (or the address's share) is full, a newcomer takes the slot of the
  anonymous reader that has been idle longest — no request on the gossip or client
  channel; PINGs and discovery do not count — provided it has been idle at least
  `reader_idle_timeout`; that reader is closed with IDLE (17). Otherwise the newcomer is
  refused with UNKNOWN_PEER (3).

Pure: the caller passes the live reader links as `Slot`s and trio's current time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

#: Anonymous reader slots per member, per address, and the idle time after which an
#: anonymous reader's slot may go to a newcomer.
DEFAULT_MAX_ANONYMOUS_READERS: Final = 16
DEFAULT_MAX_READERS_PER_ADDRESS: Final = 8
DEFAULT_READER_IDLE_TIMEOUT: Final = 60.0


@dataclass(frozen=True, slots=True)
class Slot:
    peer_id: bytes
    host: str
    last_request: float


@dataclass(frozen=True, slots=True)
class ReaderDecision:
    """`evict` (possibly None) is closed to make room; `refusal` (a detail) refuses."""

    evict: bytes | None = None
    refusal: str | None = None


def admit_anonymous(slots: Sequence[Slot], host: str, now: float, *, max_readers: int,
                    max_per_address: int, idle_timeout: float) -> ReaderDecision:
    """Whether an anonymous reader from `host` gets a slot, given the anonymous readers
    already linked (`slots`, the newcomer itself not among them)."""
    same = [s for s in slots if s.host == host]
    if len(same) >= max_per_address:
        full, pool = f"all {max_per_address} anonymous reader slots of address {host}", same
    elif len(slots) >= max_readers:
        full, pool = f"all {max_readers} anonymous reader slots", list(slots)
    else:
        return ReaderDecision()
    idle = [s for s in pool if now - s.last_request >= idle_timeout]
    if not idle:
        return ReaderDecision(refusal=f"not a committee member and {full} are taken")
    victim = min(idle, key=lambda s: (s.last_request, s.peer_id))
    return ReaderDecision(evict=victim.peer_id)
