"""The catalog of signed peer records — a pure data structure (no clock: callers pass `now`).

Rules (DESIGN §2.4; mosaik §3.2 plus its §8.2 hardening):
* a record from another network is refused;
* a record whose `issued_at` is more than `max_future_skew` seconds ahead of our clock is
  refused (self-declared timestamps drive expiry, so a future stamp would pin a record);
* a record older than `ttl` is stale: ignored on arrival, purged by `expire`;
* a record replaces the stored one only if its version `(start_id, counter)` is strictly newer;
* a signed departure removes the record if its version is ≥ the stored one, and leaves a
  tombstone (until `ttl`) so that gossip still in flight cannot resurrect the old record;
  a newer record (e.g. a restart with a new start id) clears the tombstone;
* the catalog holds at most `max_entries` peers and `max_bytes` bytes of signed records:
  new peers beyond that are refused, except `protected` ones (committee members, from
  configuration), which evict the oldest unprotected records — so key-generating strangers
  cannot crowd members out;
* a record of an unprotected peer (a reader) is at most `max_reader_record` bytes, and is
  taken only from its own signer's link or from a member (`sender`): a reader cannot fill
  the catalog with records of throw-away keys it never linked with (one record per signer,
  and only admitted signers).

Membership never comes from here; the connection manager reads committee membership from
configuration, and uses the catalog only for addresses and tickets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ..primitives.errors import RemoteError
from .peer_record import Departure, PeerRecord, Version, parse_departure, parse_record

DEFAULT_TTL: Final = 300
DEFAULT_MAX_FUTURE_SKEW: Final = 30
DEFAULT_MAX_ENTRIES: Final = 1024
#: Bytes of signed records the catalog holds (members' records, ≤ 60000 bytes each, always
#: fit: 64 members take under 4 MiB).
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
#: Largest signed record of a peer that is not a committee member. A reader's record holds
#: a few addresses and roles; only members carry attestation tickets.
DEFAULT_MAX_READER_RECORD: Final = 4096


class CatalogError(RemoteError):
    """A record or departure refused by catalog policy. `label` is the metric label."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label


class Outcome(enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # same or older version, our own record, or a tombstoned one
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Entry:
    record: PeerRecord
    signed: bytes


class Catalog:
    def __init__(
        self,
        network_id: bytes,
        own: PeerRecord,
        own_signed: bytes,
        *,
        ttl: int = DEFAULT_TTL,
        max_future_skew: int = DEFAULT_MAX_FUTURE_SKEW,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_reader_record: int = DEFAULT_MAX_READER_RECORD,
        protected: frozenset[bytes] = frozenset(),
    ) -> None:
        self.network_id = network_id
        self.own_id = own.peer_id
        self.ttl = ttl
        self.max_future_skew = max_future_skew
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_reader_record = max_reader_record
        self.protected = protected
        self._entries: dict[bytes, Entry] = {}
        #: Bytes of the signed records held (what `max_bytes` bounds).
        self.bytes_held = 0
        #: peer id → (departed version, unix time the tombstone may be dropped)
        self._tombstones: dict[bytes, tuple[Version, int]] = {}
        self.set_own(own, own_signed)

    # -- reads ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries

    def get(self, peer_id: bytes) -> PeerRecord | None:
        e = self._entries.get(peer_id)
        return e.record if e else None

    def peer_ids(self) -> list[bytes]:
        return sorted(self._entries)

    def snapshot(self) -> list[bytes]:
        """Every signed record we hold, our own included, ordered by peer id."""
        return [self._entries[p].signed for p in sorted(self._entries)]

    # -- writes ---------------------------------------------------------------------------

    def _put(self, peer_id: bytes, entry: Entry) -> None:
        self._remove(peer_id)
        self._entries[peer_id] = entry
        self.bytes_held += len(entry.signed)

    def _remove(self, peer_id: bytes) -> None:
        old = self._entries.pop(peer_id, None)
        if old is not None:
            self.bytes_held -= len(old.signed)

    def set_own(self, record: PeerRecord, signed: bytes) -> None:
        if record.peer_id != self.own_id:
            raise ValueError("own record with another peer id")
        self._put(self.own_id, Entry(record, signed))

    def upsert(self, signed: bytes, now: int, sender: bytes | None = None
               ) -> tuple[Outcome, PeerRecord]:
        """Merge one signed record. Raises RemoteError subclasses for invalid input.
        `sender`: the reader (non-member) whose link brought it; None when a member's link
        or the handshake did."""
        record = parse_record(signed)
        self._check_network(record.network_id)
        pid = record.peer_id
        if pid not in self.protected and pid != self.own_id:
            if sender is not None and pid != sender:
                raise CatalogError(
                    "not_admitted",
                    f"record of {pid.hex()[:16]}… relayed by reader {sender.hex()[:16]}…: a "
                    "reader's record comes from its own link or from a member")
            if len(signed) > self.max_reader_record:
                raise CatalogError(
                    "record_too_large",
                    f"record of reader {pid.hex()[:16]}… is {len(signed)} bytes "
                    f"(limit {self.max_reader_record})")
        if record.issued_at > now + self.max_future_skew:
            raise CatalogError(
                "future_clock",
                f"record of {record.peer_id.hex()[:16]}… is dated {record.issued_at - now}s "
                f"in the future (limit {self.max_future_skew}s)",
            )
        if record.peer_id == self.own_id:
            return Outcome.UNCHANGED, record
        if record.issued_at < now - self.ttl:
            return Outcome.STALE, record
        tomb = self._tombstones.get(record.peer_id)
        if tomb is not None:
            if record.version <= tomb[0]:
                return Outcome.UNCHANGED, record
            del self._tombstones[record.peer_id]
        old = self._entries.get(record.peer_id)
        if old is not None and record.version <= old.record.version:
            return Outcome.UNCHANGED, record
        grows = len(signed) - (len(old.signed) if old is not None else 0)
        while ((old is None and len(self._entries) >= self.max_entries)
               or self.bytes_held + grows > self.max_bytes):
            victims = [p for p in self._entries
                       if p not in self.protected and p != self.own_id and p != pid]
            if pid not in self.protected or not victims:
                raise CatalogError(
                    "catalog_full", f"catalog holds {len(self._entries)} peers in "
                    f"{self.bytes_held} bytes (limits {self.max_entries} peers, "
                    f"{self.max_bytes} bytes)")
            oldest = min(victims, key=lambda p: (self._entries[p].record.issued_at, p))
            self._remove(oldest)
        self._put(pid, Entry(record, signed))
        return (Outcome.NEW if old is None else Outcome.UPDATED), record

    def depart(self, signed: bytes, now: int, sender: bytes | None = None
               ) -> tuple[bool, Departure]:
        """Apply a signed departure; True if it removed a record. `sender` as in `upsert`:
        a reader relays only its own departure (or a member's), so it cannot fill the
        tombstones with throw-away keys."""
        dep = parse_departure(signed)
        self._check_network(dep.network_id)
        if (sender is not None and dep.peer_id != sender
                and dep.peer_id not in self.protected):
            raise CatalogError("not_admitted",
                               f"departure of {dep.peer_id.hex()[:16]}… relayed by reader "
                               f"{sender.hex()[:16]}…")
        if dep.departed_at > now + self.max_future_skew:
            raise CatalogError("future_clock", "departure dated too far in the future")
        if dep.departed_at < now - self.ttl or dep.peer_id == self.own_id:
            return False, dep
        old = self._entries.get(dep.peer_id)
        tomb = self._tombstones.get(dep.peer_id)
        if tomb is not None and dep.version <= tomb[0]:
            return False, dep
        if old is not None and dep.version < old.record.version:
            return False, dep  # the peer came back after this departure was signed
        if len(self._tombstones) >= self.max_entries and dep.peer_id not in self._tombstones:
            self._drop_oldest_tombstone()
        self._tombstones[dep.peer_id] = (dep.version, now + self.ttl)
        if old is None:
            return False, dep
        self._remove(dep.peer_id)
        return True, dep

    def expire(self, now: int) -> list[bytes]:
        """Drop records older than `ttl` (never our own) and old tombstones."""
        gone = [p for p, e in self._entries.items()
                if p != self.own_id and e.record.issued_at < now - self.ttl]
        for p in gone:
            self._remove(p)
        for p in [p for p, (_, until) in self._tombstones.items() if until < now]:
            del self._tombstones[p]
        return sorted(gone)

    def _drop_oldest_tombstone(self) -> None:
        oldest = min(self._tombstones, key=lambda p: self._tombstones[p][1])
        del self._tombstones[oldest]

    def _check_network(self, network_id: bytes) -> None:
        if network_id != self.network_id:
            raise CatalogError("wrong_network", "record names another network")
