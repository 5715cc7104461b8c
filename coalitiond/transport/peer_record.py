"""Signed peer records and signed departures (DESIGN §2.4; docs/wire.md §5).

A record is self-certifying: it names its PeerId (the ed25519 public key) and is signed by
it. We always keep and forward the exact signed bytes we received (mosaik's lesson: never
re-serialise something that is signed), and the decoder accepts only deterministic CBOR, so
the bytes are unique anyway.

Versions are `(start_id, counter)` compared lexicographically: `start_id` is chosen once per
process run (unix milliseconds at start), `counter` grows with every change and re-announce.
A newer version strictly replaces an older one. Records carry *claims* (roles, committee
ids, tickets); nothing here grants rights: committee membership comes from configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..primitives.crypto import PUBLIC_KEY_LEN, SigningKey, verify
from ..primitives.encoding import decode, encode
from ..primitives.errors import RemoteError

RECORD_TAG: Final = b"coalitiond/peer-record/v1"
DEPARTURE_TAG: Final = b"coalitiond/peer-departure/v1"
RECORD_TYPE: Final = "peer-record"
DEPARTURE_TYPE: Final = "peer-departure"
SCHEMA: Final = 1

#: A signed record must fit, with the identity proof around it, in one Noise handshake
#: message (65535 bytes): 60000 leaves room for keys, tags and the proof.
MAX_SIGNED_RECORD: Final = 60_000
MAX_ADDRESSES: Final = 8
MAX_ROLES: Final = 16
MAX_COMMITTEES: Final = 16
MAX_TICKETS: Final = 8
MAX_LABEL: Final = 64
MAX_HOST: Final = 255
_UINT63: Final = (1 << 63) - 1

Version = tuple[int, int]


class PeerRecordError(RemoteError):
    """A record or departure that is well-formed CBOR but not a valid record."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise PeerRecordError(f"peer record: {what}")


@dataclass(frozen=True, slots=True)
class PeerRecord:
    peer_id: bytes
    network_id: bytes
    start_id: int
    counter: int
    #: Wall-clock unix seconds at signing; drives expiry and the future-clock check.
    issued_at: int
    addresses: tuple[tuple[str, int], ...] = ()
    roles: tuple[str, ...] = ()
    committees: tuple[bytes, ...] = ()
    tickets: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def version(self) -> Version:
        return (self.start_id, self.counter)

    def body(self) -> bytes:
        return encode(
            [
                RECORD_TYPE,
                SCHEMA,
                self.peer_id,
                self.network_id,
                self.start_id,
                self.counter,
                self.issued_at,
                [[h, p] for h, p in self.addresses],
                list(self.roles),
                list(self.committees),
                dict(self.tickets),
            ]
        )

    def sign(self, key: SigningKey) -> bytes:
        """The signed wire form: `encode([body, signature])`."""
        if key.public != self.peer_id:
            raise ValueError("signing a record with a key that is not its peer id")
        body = self.body()
        signed = encode([body, key.sign(RECORD_TAG, body)])
        if len(signed) > MAX_SIGNED_RECORD:
            raise ValueError(f"signed record of {len(signed)} bytes exceeds {MAX_SIGNED_RECORD}")
        return signed


def _uint(v: Any, what: str) -> int:
    _check(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _UINT63, f"{what} must be an unsigned int")
    return int(v)


def _id(v: Any, what: str) -> bytes:
    _check(isinstance(v, bytes) and len(v) == PUBLIC_KEY_LEN, f"{what} must be 32 bytes")
    return bytes(v)


def _split_signed(data: bytes, max_size: int) -> tuple[bytes, bytes]:
    outer = decode(data, max_size=max_size)
    _check(
        isinstance(outer, list) and len(outer) == 2
        and isinstance(outer[0], bytes) and isinstance(outer[1], bytes),
        "signed form must be [body, signature]",
    )
    return outer[0], outer[1]


def parse_record(signed: bytes) -> PeerRecord:
    """Decode and verify a signed record. Raises EncodingError, PeerRecordError or
    SignatureError (all RemoteError)."""
    body, sig = _split_signed(signed, MAX_SIGNED_RECORD)
    f = decode(body, max_size=MAX_SIGNED_RECORD)
    _check(isinstance(f, list) and len(f) == 11, "body must be an 11-element array")
    _check(f[0] == RECORD_TYPE and f[1] == SCHEMA, f"unknown type/schema {f[0]!r}/{f[1]!r}")
    peer_id = _id(f[2], "peer id")
    network_id = _id(f[3], "network id")
    addrs = f[7]
    _check(isinstance(addrs, list) and len(addrs) <= MAX_ADDRESSES, "addresses")
    addresses: list[tuple[str, int]] = []
    for a in addrs:
        _check(
            isinstance(a, list) and len(a) == 2 and isinstance(a[0], str)
            and 0 < len(a[0]) <= MAX_HOST and isinstance(a[1], int)
            and not isinstance(a[1], bool) and 0 < a[1] < 65536,
            "address must be [host, port]",
        )
        addresses.append((a[0], a[1]))
    roles = f[8]
    _check(
        isinstance(roles, list) and len(roles) <= MAX_ROLES
        and all(isinstance(r, str) and len(r) <= MAX_LABEL for r in roles),
        "roles must be a short list of short strings",
    )
    comms = f[9]
    _check(isinstance(comms, list) and len(comms) <= MAX_COMMITTEES, "committees")
    tickets = f[10]
    _check(
        isinstance(tickets, dict) and len(tickets) <= MAX_TICKETS
        and all(isinstance(k, str) and len(k) <= MAX_LABEL and isinstance(v, bytes)
                for k, v in tickets.items()),
        "tickets must be a map of short strings to bytes",
    )
    record = PeerRecord(
        peer_id=peer_id,
        network_id=network_id,
        start_id=_uint(f[4], "start id"),
        counter=_uint(f[5], "counter"),
        issued_at=_uint(f[6], "issued_at"),
        addresses=tuple(addresses),
        roles=tuple(roles),
        committees=tuple(_id(c, "committee id") for c in comms),
        tickets=dict(tickets),
    )
    verify(peer_id, RECORD_TAG, body, sig)
    return record


@dataclass(frozen=True, slots=True)
class Departure:
    """A signed goodbye: removes the peer's record if `version` ≥ the known version."""

    peer_id: bytes
    network_id: bytes
    start_id: int
    counter: int
    departed_at: int

    @property
    def version(self) -> Version:
        return (self.start_id, self.counter)

    def body(self) -> bytes:
        return encode(
            [DEPARTURE_TYPE, SCHEMA, self.peer_id, self.network_id, self.start_id,
             self.counter, self.departed_at]
        )

    def sign(self, key: SigningKey) -> bytes:
        body = self.body()
        return encode([body, key.sign(DEPARTURE_TAG, body)])


def parse_departure(signed: bytes) -> Departure:
    body, sig = _split_signed(signed, 1024)
    f = decode(body, max_size=1024)
    _check(isinstance(f, list) and len(f) == 7, "departure body must be a 7-element array")
    _check(f[0] == DEPARTURE_TYPE and f[1] == SCHEMA, f"unknown type/schema {f[0]!r}/{f[1]!r}")
    dep = Departure(
        peer_id=_id(f[2], "peer id"),
        network_id=_id(f[3], "network id"),
        start_id=_uint(f[4], "start id"),
        counter=_uint(f[5], "counter"),
        departed_at=_uint(f[6], "departed_at"),
    )
    verify(dep.peer_id, DEPARTURE_TAG, body, sig)
    return dep
