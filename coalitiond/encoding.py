"""Deterministic CBOR (RFC 8949 §4.2.1, core deterministic encoding).

Everything that is hashed or signed goes through `encode`; everything that arrives from
outside goes through `decode`, which accepts only bytes that `encode` itself would write.

The data model is deliberately small: unsigned and negative integers (64-bit), byte strings,
text strings, arrays (lists or tuples), maps, booleans and null. No floats (all times are
integers), no tags, no indefinite lengths, no undefined, no simple values other than
false/true/null.

Map keys are ordered by the bytewise lexicographic order of their encodings (RFC 8949).
This differs from the older RFC 7049 "length first" rule that `cbor2.dumps(canonical=True)`
uses when a map mixes key types; `tests/test_encoding.py` pins the difference.

Why our own decoder instead of cbor2's: the decoder is a trust boundary and must refuse
duplicate keys, non-shortest heads, unsorted maps, indefinite lengths, tags and trailing
bytes, each with its own error. cbor2 accepts most of these silently.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from .errors import EncodingError, LocalError

#: Default upper bound for one decoded object. Callers with tighter limits pass their own.
DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024
#: Nesting bound; our structures are shallow, attackers' need not be.
MAX_DEPTH: Final = 32

_UINT64_MAX: Final = (1 << 64) - 1


class NonCanonicalError(EncodingError):
    """The input is valid CBOR but not in deterministic form."""


class DuplicateKeyError(EncodingError):
    """A map holds the same key twice."""


class IndefiniteLengthError(EncodingError):
    """An indefinite-length item (forbidden in deterministic CBOR)."""


class TrailingBytesError(EncodingError):
    """Bytes remain after the first complete item."""


class UnsupportedTypeError(EncodingError):
    """A tag, float or simple value that this protocol does not use."""


class TruncatedError(EncodingError):
    """The input ends in the middle of an item."""


class OversizeError(EncodingError):
    """The input is larger than the limit the caller allows."""


class TooDeepError(EncodingError):
    """Nesting deeper than MAX_DEPTH."""


# ---------------------------------------------------------------------------------------
# Encoder


def _head(major: int, value: int) -> bytes:
    m = major << 5
    if value < 24:
        return bytes((m | value,))
    if value < 0x100:
        return bytes((m | 24, value))
    if value < 0x10000:
        return bytes((m | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((m | 26,)) + value.to_bytes(4, "big")
    return bytes((m | 27,)) + value.to_bytes(8, "big")


def _encode_into(obj: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise LocalError("encode: nesting deeper than MAX_DEPTH")
    # bool first: bool is a subclass of int.
    if obj is True:
        out.append(b"\xf5")
    elif obj is False:
        out.append(b"\xf4")
    elif obj is None:
        out.append(b"\xf6")
    elif isinstance(obj, int):
        if obj >= 0:
            if obj > _UINT64_MAX:
                raise LocalError(f"encode: integer {obj} does not fit 64 bits")
            out.append(_head(0, obj))
        else:
            n = -1 - obj
            if n > _UINT64_MAX:
                raise LocalError(f"encode: integer {obj} does not fit 64 bits")
            out.append(_head(1, n))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        out.append(_head(2, len(b)))
        out.append(b)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        out.append(_head(3, len(b)))
        out.append(b)
    elif isinstance(obj, (list, tuple)):
        out.append(_head(4, len(obj)))
        for item in obj:
            _encode_into(item, out, depth + 1)
    elif isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (int, str, bytes)) or isinstance(k, bool):
                raise LocalError(f"encode: unsupported map key type {type(k).__name__}")
            items.append((encode(k), v))
        items.sort(key=lambda kv: kv[0])
        out.append(_head(5, len(items)))
        for kb, v in items:
            out.append(kb)
            _encode_into(v, out, depth + 1)
    else:
        raise LocalError(f"encode: unsupported type {type(obj).__name__}")


def encode(obj: Any) -> bytes:
    """Encode `obj` deterministically. Raises LocalError for values outside the data model."""
    out: list[bytes] = []
    _encode_into(obj, out, 0)
    return b"".join(out)


# ---------------------------------------------------------------------------------------
# Decoder


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise TruncatedError(
                f"truncated input: need {n} bytes at offset {self.pos}, "
                f"have {len(self.data) - self.pos}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk


def _read_head(r: _Reader) -> tuple[int, int]:
    start = r.pos
    initial = r.take(1)[0]
    major = initial >> 5
    info = initial & 0x1F
    if info < 24:
        return major, info
    if info == 24:
        value = r.take(1)[0]
        minimum = 24
    elif info == 25:
        value = struct.unpack(">H", r.take(2))[0]
        minimum = 0x100
    elif info == 26:
        value = struct.unpack(">I", r.take(4))[0]
        minimum = 0x10000
    elif info == 27:
        value = struct.unpack(">Q", r.take(8))[0]
        minimum = 0x100000000
    elif info == 31:
        if major in (2, 3, 4, 5):
            raise IndefiniteLengthError(f"indefinite-length item at offset {start}")
        raise UnsupportedTypeError(f"break or indefinite marker at offset {start}")
    else:
        raise EncodingError(f"reserved additional information {info} at offset {start}")
    if major != 7 and value < minimum:
        raise NonCanonicalError(f"non-shortest integer or length encoding at offset {start}")
    return major, value


def _decode_item(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise TooDeepError(f"nesting deeper than {MAX_DEPTH} at offset {r.pos}")
    start = r.pos
    major, value = _read_head(r)
    if major == 0:
        return value
    if major == 1:
        return -1 - value
    if major == 2:
        return r.take(value)
    if major == 3:
        raw = r.take(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EncodingError(f"invalid UTF-8 in text string at offset {start}") from None
    if major == 4:
        # Each item takes at least one byte: refuse absurd counts before allocating.
        if value > len(r.data) - r.pos:
            raise TruncatedError(f"array of {value} items cannot fit at offset {start}")
        return [_decode_item(r, depth + 1) for _ in range(value)]
    if major == 5:
        if value * 2 > len(r.data) - r.pos:
            raise TruncatedError(f"map of {value} pairs cannot fit at offset {start}")
        result: dict[Any, Any] = {}
        previous_key: bytes | None = None
        for _ in range(value):
            key_start = r.pos
            key = _decode_item(r, depth + 1)
            key_bytes = r.data[key_start : r.pos]
            if not isinstance(key, (int, str, bytes)) or isinstance(key, bool):
                raise UnsupportedTypeError(f"map key of type {type(key).__name__} at offset {key_start}")
            if previous_key is not None:
                if key_bytes == previous_key:
                    raise DuplicateKeyError(f"duplicate map key {key!r} at offset {key_start}")
                if key_bytes < previous_key:
                    raise NonCanonicalError(f"map keys not in bytewise order at offset {key_start}")
            if key in result:
                # Distinct encodings can never collide for our key types; kept as a guard.
                raise DuplicateKeyError(f"duplicate map key {key!r} at offset {key_start}")
            previous_key = key_bytes
            result[key] = _decode_item(r, depth + 1)
        return result
    if major == 6:
        raise UnsupportedTypeError(f"tag {value} at offset {start} is not used by this protocol")
    # major 7
    if value == 20 and r.data[start] == 0xF4:
        return False
    if value == 21 and r.data[start] == 0xF5:
        return True
    if value == 22 and r.data[start] == 0xF6:
        return None
    initial = r.data[start]
    if initial in (0xF9, 0xFA, 0xFB):
        raise UnsupportedTypeError(f"floating-point value at offset {start} is not used")
    raise UnsupportedTypeError(f"simple value {value} at offset {start} is not used")


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode exactly one deterministic CBOR item from `data`.

    Raises a subclass of EncodingError (a RemoteError: the bytes came from outside) naming
    the problem and the byte offset.
    """
    if len(data) > max_size:
        raise OversizeError(f"input of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise TruncatedError("empty input")
    r = _Reader(bytes(data))
    obj = _decode_item(r, 0)
    if r.pos != len(r.data):
        raise TrailingBytesError(f"{len(r.data) - r.pos} trailing bytes after offset {r.pos}")
    return obj
