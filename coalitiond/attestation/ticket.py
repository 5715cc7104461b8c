"""The attestation ticket: what a member publishes under key "tdx" in its signed peer record.

Encoding (deterministic CBOR map, text keys, no others allowed):

    { "v": 1, "quote": bytes, "peer": bytes32, "network": bytes32, "committee": bytes32,
      "epoch": uint, "issued_at": uint }

`peer`, `network`, `committee`, `epoch` and `issued_at` are the data needed to recompute the
REPORTDATA binding (binding.py); the quote itself is the raw TDX quote from configfs-tsm.
The ticket is not signed separately: it travels inside the peer record, which the member signs
with its ed25519 key (proof of possession of the key the quote binds), and the link it gates is
authenticated with that same key by the Noise handshake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError
from .binding import ID_LEN, report_data
from .dcap import MAX_QUOTE_SIZE, AttestationRefused

TICKET_KEY: Final = "tdx"
TICKET_VERSION: Final = 1
#: A ticket is a quote plus ~150 bytes of context.
MAX_TICKET_SIZE: Final = MAX_QUOTE_SIZE + 1024

_FIELDS: Final = frozenset({"v", "quote", "peer", "network", "committee", "epoch", "issued_at"})


@dataclass(frozen=True, slots=True)
class Ticket:
    quote: bytes
    peer_id: bytes
    network_id: bytes
    committee_id: bytes
    epoch: int
    issued_at: int

    def encode(self) -> bytes:
        return encode(
            {
                "v": TICKET_VERSION,
                "quote": self.quote,
                "peer": self.peer_id,
                "network": self.network_id,
                "committee": self.committee_id,
                "epoch": self.epoch,
                "issued_at": self.issued_at,
            }
        )

    def expected_report_data(self) -> bytes:
        return report_data(
            self.peer_id, self.network_id, self.committee_id, self.epoch, self.issued_at
        )


def _malformed(detail: str) -> AttestationRefused:
    return AttestationRefused("ticket_malformed", detail)


def _uint(d: dict[str, Any], key: str) -> int:
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _malformed(f"ticket field {key!r} must be an unsigned integer")
    return v


def _id(d: dict[str, Any], key: str) -> bytes:
    v = d[key]
    if not isinstance(v, bytes) or len(v) != ID_LEN:
        raise _malformed(f"ticket field {key!r} must be {ID_LEN} bytes")
    return v


def decode_ticket(data: bytes) -> Ticket:
    """Decode ticket bytes from a peer. Raises AttestationRefused("ticket_malformed", ...)."""
    if not isinstance(data, bytes):
        raise LocalError("ticket must be bytes")
    if len(data) > MAX_TICKET_SIZE:
        raise _malformed(f"ticket larger than {MAX_TICKET_SIZE} bytes")
    try:
        obj = decode(data, max_size=MAX_TICKET_SIZE)
    except EncodingError as e:
        raise _malformed(f"ticket is not deterministic CBOR: {e}") from None
    if not isinstance(obj, dict):
        raise _malformed("ticket must be a CBOR map")
    keys = set(obj)
    if keys != _FIELDS:
        missing = sorted(_FIELDS - keys)
        if missing:
            raise _malformed(f"ticket lacks field {missing[0]!r}")
        raise _malformed(f"ticket has unknown field {sorted(map(str, keys - _FIELDS))[0]!r}")
    if obj["v"] != TICKET_VERSION:
        raise _malformed(f"unsupported ticket version {obj['v']!r}")
    quote = obj["quote"]
    if not isinstance(quote, bytes) or not quote:
        raise _malformed("ticket field 'quote' must be non-empty bytes")
    return Ticket(
        quote=quote,
        peer_id=_id(obj, "peer"),
        network_id=_id(obj, "network"),
        committee_id=_id(obj, "committee"),
        epoch=_uint(obj, "epoch"),
        issued_at=_uint(obj, "issued_at"),
    )
