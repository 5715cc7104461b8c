"""Identifiers (DESIGN §2.2): every identifier is 32 bytes.

`id(name)`: a 64-character hex string decodes to its bytes, anything else is
`blake3(utf8(name))`. `derive(parent, label) = blake3(parent ‖ utf8(label))`.
These two rules are mosaik's, so ids computed by either runtime agree.
"""

from __future__ import annotations

import string
from typing import Final

import blake3

from .encoding import encode
from .errors import LocalError

ID_LEN: Final = 32
_HEX: Final = frozenset(string.hexdigits)


def make_id(name: str) -> bytes:
    """The 32-byte id named by `name` (a 64-char hex string, or anything to be hashed)."""
    if len(name) == 2 * ID_LEN and all(c in _HEX for c in name):
        return bytes.fromhex(name)
    return blake3.blake3(name.encode("utf-8")).digest()


def derive(parent: bytes, label: str) -> bytes:
    """A child id: `blake3(parent ‖ utf8(label))`."""
    if len(parent) != ID_LEN:
        raise LocalError(f"derive: parent id must be {ID_LEN} bytes, got {len(parent)}")
    return blake3.blake3(parent + label.encode("utf-8")).digest()


def hash_structure(type_name: str, version: int, *fields: object) -> bytes:
    """blake3 of the deterministic CBOR array `[type_name, version, *fields]`.

    The structured-preimage rule of DESIGN §2.2: never hash raw concatenations of
    variable-length lists.
    """
    return blake3.blake3(encode([type_name, version, *fields])).digest()


def digest(data: bytes) -> bytes:
    """blake3 of raw bytes (block digests, anchors)."""
    return blake3.blake3(data).digest()


def short(ident: bytes) -> str:
    """A short hex prefix for logs; never for comparisons."""
    return ident[:4].hex()
