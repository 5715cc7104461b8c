"""REPORTDATA binding (docs/attestation.md §2 documents it byte by byte).

A TDX quote carries 64 bytes chosen by the guest (REPORTDATA) and no time. We fill them with

    REPORTDATA = blake3-XOF-64( cbor([ "coalitiond/tdx-bind", 1,
                                       peer_id, network_id, committee_id, epoch, issued_at ]) )

so a quote names exactly one member key (PeerId), one network and committee, and one freshness
value (committee epoch + the TD's issue time in unix seconds). The preimage is a deterministic
CBOR array with a leading type string and schema version (DESIGN §2.2: never raw
concatenations); blake3 in XOF mode fills the 64-byte field exactly, so no half of it is
left for a host to choose.
"""

from __future__ import annotations

import hmac
from typing import Final

import blake3

from ..primitives.encoding import encode
from ..primitives.errors import LocalError

BINDING_TYPE: Final = "coalitiond/tdx-bind"
BINDING_VERSION: Final = 1
REPORT_DATA_LEN: Final = 64
ID_LEN: Final = 32
#: Largest value the preimage accepts for epoch / issued_at (fits CBOR uint64).
_U64_MAX: Final = (1 << 64) - 1


def binding_preimage(
    peer_id: bytes, network_id: bytes, committee_id: bytes, epoch: int, issued_at: int
) -> bytes:
    for name, value in (("peer_id", peer_id), ("network_id", network_id),
                        ("committee_id", committee_id)):
        if len(value) != ID_LEN:
            raise LocalError(f"binding: {name} must be {ID_LEN} bytes, got {len(value)}")
    for name, n in (("epoch", epoch), ("issued_at", issued_at)):
        if not 0 <= n <= _U64_MAX:
            raise LocalError(f"binding: {name} out of range: {n}")
    return encode(
        [BINDING_TYPE, BINDING_VERSION, peer_id, network_id, committee_id, epoch, issued_at]
    )


def report_data(
    peer_id: bytes, network_id: bytes, committee_id: bytes, epoch: int, issued_at: int
) -> bytes:
    """The 64 REPORTDATA bytes a member puts in its quote."""
    pre = binding_preimage(peer_id, network_id, committee_id, epoch, issued_at)
    return blake3.blake3(pre).digest(length=REPORT_DATA_LEN)


def matches(
    quoted: bytes,
    peer_id: bytes,
    network_id: bytes,
    committee_id: bytes,
    epoch: int,
    issued_at: int,
) -> bool:
    """Constant-time comparison of a verified REPORTDATA with the recomputed binding."""
    expected = report_data(peer_id, network_id, committee_id, epoch, issued_at)
    return hmac.compare_digest(quoted, expected)
