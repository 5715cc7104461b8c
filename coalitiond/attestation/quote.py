"""Reading a TDX DCAP quote's layout (v4, v5): MR_TD and REPORTDATA, never a signature.

This is what a state machine may do with a quote: pure byte-layout checks that give the same
answer on every member and on every replay, years later (the Compute component reads a
provider's MR_TD this way). Verifying a quote (signatures, collateral, TCB status) depends on
the clock and on collateral that expires, so it is `attestation.dcap`'s job and never runs
inside `apply`. Changing what is accepted here changes the Compute state machine: bump its
signature.
"""

from __future__ import annotations

import struct
from typing import Final

from ..primitives.errors import RemoteError
from .binding import REPORT_DATA_LEN

MRTD_LEN: Final = 48
#: Largest quote parsed. Real quotes with an embedded PCK chain are ~5 KiB; an envelope
#: carries at most 64 KiB.
MAX_QUOTE_SIZE: Final = 32 * 1024

_TDX_TEE_TYPE: Final = 0x81
_ECDSA_P256: Final = 2
_HEADER_LEN: Final = 48
_TD10_BODY_LEN: Final = 584
#: Quote v5 body types → the body size that type has (research/dcap.md §3.1).
_V5_BODY_SIZES: Final = {2: 584, 3: 648, 4: 885}
_MRTD_OFFSET: Final = 136
#: REPORTDATA sits at the same body offset in TD 1.0 and both TD 1.5 bodies.
_REPORT_DATA_OFFSET: Final = 520

__all__ = ["MAX_QUOTE_SIZE", "MRTD_LEN", "REPORT_DATA_LEN", "MalformedQuote", "quote_mr_td",
           "quote_report_data"]


class MalformedQuote(RemoteError):
    """Bytes that do not have the layout of a TDX DCAP quote (v4 or v5)."""


def quote_mr_td(quote: bytes) -> bytes:
    """MR_TD of a TDX quote (v4: TD 1.0 body at 48; v5: body type 2/3/4 at 54), read at
    offset 136 of the TD report body. Checks the layout only, never a signature."""
    at = _td_body_offset(quote)
    return quote[at + _MRTD_OFFSET: at + _MRTD_OFFSET + MRTD_LEN]


def quote_report_data(quote: bytes) -> bytes:
    """The 64 REPORTDATA bytes of a TDX quote (offset 520 of the TD report body). Layout
    checks as `quote_mr_td`; never a signature."""
    at = _td_body_offset(quote)
    return quote[at + _REPORT_DATA_OFFSET: at + _REPORT_DATA_OFFSET + REPORT_DATA_LEN]


def _td_body_offset(quote: bytes) -> int:
    """Where the TD report body starts, after checking the whole quote layout."""
    if not isinstance(quote, bytes):
        raise MalformedQuote("tdx_quote: must be bytes")
    if len(quote) > MAX_QUOTE_SIZE:
        raise MalformedQuote(f"tdx_quote: {len(quote)} bytes exceeds {MAX_QUOTE_SIZE}")
    if len(quote) < _HEADER_LEN:
        raise MalformedQuote("tdx_quote: shorter than its 48-byte header")
    version, key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type != _TDX_TEE_TYPE:
        raise MalformedQuote(f"tdx_quote: TEE type {tee_type:#x} is not TDX (0x81)")
    if key_type != _ECDSA_P256:
        raise MalformedQuote(f"tdx_quote: attestation key type {key_type} is not ECDSA-P256 (2)")
    if version == 4:
        body_at, body_len = _HEADER_LEN, _TD10_BODY_LEN
    elif version == 5:
        if len(quote) < _HEADER_LEN + 6:
            raise MalformedQuote("tdx_quote: v5 quote ends before its body descriptor")
        body_type, body_len = struct.unpack_from("<HI", quote, _HEADER_LEN)
        if _V5_BODY_SIZES.get(body_type) != body_len:
            raise MalformedQuote(f"tdx_quote: v5 body type {body_type} of {body_len} bytes is "
                                 "not a TD report (2: 584, 3: 648, 4: 885)")
        body_at = _HEADER_LEN + 6
    else:
        raise MalformedQuote(f"tdx_quote: version {version} (expected 4 or 5)")
    sig_at = body_at + body_len
    if len(quote) < sig_at + 4:
        raise MalformedQuote("tdx_quote: ends inside the TD report body")
    (sig_len,) = struct.unpack_from("<I", quote, sig_at)
    if len(quote) < sig_at + 4 + sig_len:
        raise MalformedQuote(f"tdx_quote: signature data of {sig_len} bytes runs past the end")
    # Bytes after the signature data are allowed: real quotes carry zero padding.
    return body_at
