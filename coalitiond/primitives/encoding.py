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

Fast path (cbor2 6.x, Rust). `encode` and `decode` first try cbor2 and fall back to the
pure-Python reference code (`_encode_strict`, `_decode_strict`) whenever the fast path is
not sure; the contract (bytes written, inputs accepted, values returned, error classes)
is the reference code's. `decode` returns cbor2's value only if a walk finds it inside
the data model (exact types, 64-bit ints, int/str/bytes keys in strictly ascending
encoded order, depth within MAX_DEPTH) *and* `cbor2.dumps(value)` reproduces the input
byte for byte, i.e. the input is exactly what `_encode_strict` writes for that value; a
refused input therefore always gets the reference decoder's precise error. Tags are never
interpreted (every cbor2 semantic decoder is replaced by a refusal). `encode` hands cbor2
values of exact model types, re-ordering maps whose keys are out of canonical order; any
other value (subclasses, other Mappings, bytearray, out-of-range ints) takes the
reference encoder. `FAST_PATH_STATS` counts fallbacks. `tests/test_encoding_fast_path.py`
checks fast and reference paths against each other.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import cbor2

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
# Reference encoder


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
            items.append((_encode_strict(k), v))
        items.sort(key=lambda kv: kv[0])
        out.append(_head(5, len(items)))
        for kb, v in items:
            out.append(kb)
            _encode_into(v, out, depth + 1)
    else:
        raise LocalError(f"encode: unsupported type {type(obj).__name__}")


def _encode_strict(obj: Any) -> bytes:
    """The reference encoder: sorts map keys itself, raises LocalError outside the model."""
    out: list[bytes] = []
    _encode_into(obj, out, 0)
    return b"".join(out)


# ---------------------------------------------------------------------------------------
# Reference decoder


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


def _decode_strict(data: bytes) -> Any:
    """The reference decoder: accepts exactly the bytes `_encode_strict` writes."""
    if not data:
        raise TruncatedError("empty input")
    r = _Reader(bytes(data))
    obj = _decode_item(r, 0)
    if r.pos != len(r.data):
        raise TrailingBytesError(f"{len(r.data) - r.pos} trailing bytes after offset {r.pos}")
    return obj


# ---------------------------------------------------------------------------------------
# Fast path: cbor2 (Rust) does the byte work, a Python walk checks the data model.
#
# Soundness argument for decode: the fast path returns `value` only if (a) `value` is in
# the data model (exact types, 64-bit ints, int/str/bytes keys in strictly ascending
# encoded order, nesting within MAX_DEPTH) and (b) `cbor2.dumps(value)` equals the input.
# For such values cbor2.dumps writes exactly what `_encode_strict` writes (pinned by the
# differential tests), so the input is `_encode_strict(value)`, which `_decode_strict`
# accepts and decodes to `value`. Everything else goes to `_decode_strict`, whose answer
# (value or precise error) is the answer.


class _FastPathMiss(Exception):
    """The fast path is not sure; the reference implementation decides."""


class FastPathStats:
    """How often encode/decode fell back to the reference code (an ops metric, and what
    tests watch so a regression to always-slow is caught). Not protocol state."""

    __slots__ = ("decode_fallbacks", "encode_fallbacks")

    def __init__(self) -> None:
        self.encode_fallbacks = 0
        self.decode_fallbacks = 0


#: Process-wide fallback counters.
FAST_PATH_STATS: Final = FastPathStats()

_INT_MIN: Final = -(1 << 64)


def _refuse_tag(*_args: Any) -> Any:
    raise _FastPathMiss("tag")


#: Every tag cbor2 6.x gives a meaning (found by probing 0..70000 and a few large ones).
#: Each gets a decoder that refuses at once, so no tag is ever interpreted: no bigfloat
#: arithmetic, regex compilation, MIME parsing or shared references on hostile input. Any
#: other tag goes to `tag_hook`, which refuses too. A tag missing here would still be
#: caught by the walk and the byte comparison; this list only keeps the cost bounded.
_CBOR2_SEMANTIC_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
    43000, 55799,
)
_REFUSE_SEMANTIC_TAGS: Final = {tag: _refuse_tag for tag in _CBOR2_SEMANTIC_TAGS}

_cbor2_loads: Final = cbor2.loads
_cbor2_dumps: Final = cbor2.dumps


def _keys_in_order(d: dict[Any, Any]) -> bool:
    """True iff the keys are in strictly ascending RFC 8949 order; _FastPathMiss for a key
    outside the model.

    The order of encodings is compared without encoding: the major type first (unsigned
    0 < negative 1 < bytes 2 < text 3), then, within one major type, the integer's
    magnitude or the string's encoded length (heads are monotone in both), then the
    payload (UTF-8 bytewise order is code-point order, so text compares as str).
    """
    previous: tuple[Any, ...] | None = None
    in_order = True
    for k in d:
        tk = type(k)
        rank: tuple[Any, ...]
        if tk is str:
            rank = (3, len(k) if k.isascii() else len(k.encode("utf-8")), k)
        elif tk is int:
            if k >= 0:
                if k > _UINT64_MAX:
                    raise _FastPathMiss("key")
                rank = (0, k)
            else:
                if k < _INT_MIN:
                    raise _FastPathMiss("key")
                rank = (1, -1 - k)
        elif tk is bytes:
            rank = (2, len(k), k)
        else:
            raise _FastPathMiss("key")
        if previous is not None and rank <= previous:
            in_order = False
        previous = rank
    return in_order


def _key_rank(k: Any) -> tuple[Any, ...]:
    # Same order as `_keys_in_order`; keys were already checked there.
    if type(k) is str:
        return (3, len(k.encode("utf-8")), k)
    if type(k) is int:
        return (0, k) if k >= 0 else (1, -1 - k)
    return (2, len(k), k)


def _ascii_key_order(obj: dict[Any, Any]) -> bool | None:
    """The common case of `_keys_in_order`: None unless every key is ASCII text, else
    whether they are in canonical order, which for ASCII text is (length, str order): no
    tuple per key."""
    in_order = True
    previous_len = -1
    previous = ""
    for k in obj:
        if type(k) is not str or not k.isascii():
            return None
        n = len(k)
        if n < previous_len or (n == previous_len and k <= previous):
            in_order = False
        previous_len = n
        previous = k
    return in_order


def _canonical_form(obj: Any, depth: int) -> Any:
    """`obj` itself if it is in the data model with every map in canonical key order; a
    copy with the maps re-ordered (only along the paths that need it) if it is in the model
    otherwise; _FastPathMiss if it is not in the model. Exact types only: subclasses and
    other Mappings go to the reference encoder. Containers recurse; scalars are checked
    inline, without a call per item."""
    t = type(obj)
    if t is list or t is tuple:
        if depth >= MAX_DEPTH and obj:
            raise _FastPathMiss("depth")
        copy: list[Any] | None = None
        for i, x in enumerate(obj):
            tx = type(x)
            if tx is str or tx is bytes:
                continue
            if tx is int:
                if _INT_MIN <= x <= _UINT64_MAX:
                    continue
                raise _FastPathMiss("int")
            if tx is list or tx is dict or tx is tuple:
                y = _canonical_form(x, depth + 1)
                if y is not x:
                    if copy is None:
                        copy = list(obj)
                    copy[i] = y
                continue
            if tx is bool or x is None:
                continue
            raise _FastPathMiss("type")
        return obj if copy is None else copy
    if t is dict:
        if depth >= MAX_DEPTH and obj:
            raise _FastPathMiss("depth")
        ascii_order = _ascii_key_order(obj)
        ascii_keys = ascii_order is not None
        in_order = ascii_order if ascii_order is not None else _keys_in_order(obj)
        changed: dict[Any, Any] | None = None
        for k, x in obj.items():
            tx = type(x)
            if tx is str or tx is bytes:
                continue
            if tx is int:
                if _INT_MIN <= x <= _UINT64_MAX:
                    continue
                raise _FastPathMiss("int")
            if tx is list or tx is dict or tx is tuple:
                y = _canonical_form(x, depth + 1)
                if y is not x:
                    if changed is None:
                        changed = {}
                    changed[k] = y
                continue
            if tx is bool or x is None:
                continue
            raise _FastPathMiss("type")
        if in_order and changed is None:
            return obj
        if in_order:
            keys = list(obj)
        elif not ascii_keys:
            keys = sorted(obj, key=_key_rank)
        else:
            # ASCII text keys: (length, str) order, by two C-level sorts (the second is
            # stable) instead of a Python key function per key.
            keys = sorted(obj)
            keys.sort(key=len)
        if changed is None:
            return {k: obj[k] for k in keys}
        return {k: changed[k] if k in changed else obj[k] for k in keys}
    if t is str or t is bytes or t is bool or obj is None:
        return obj
    if t is int:
        if _INT_MIN <= obj <= _UINT64_MAX:
            return obj
        raise _FastPathMiss("int")
    raise _FastPathMiss("type")


def _is_decoded_model_value(obj: Any, depth: int) -> bool:
    """True iff a cbor2 result is in the data model as `_decode_strict` would return it:
    lists (not tuples), dicts in canonical key order, exact scalar types, 64-bit ints,
    nesting within MAX_DEPTH. Not shared with `_canonical_form` because the accepted types
    differ (no tuples) and an unsorted map is a refusal here, not something to re-order."""
    t = type(obj)
    if t is list:
        items: Any = obj
    elif t is dict:
        ascii_order = _ascii_key_order(obj)
        if not (ascii_order if ascii_order is not None else _keys_in_order(obj)):
            return False
        items = obj.values()
    elif t is str or t is bytes or t is bool or obj is None:
        return True
    elif t is int:
        return bool(_INT_MIN <= obj <= _UINT64_MAX)
    else:
        return False
    if depth >= MAX_DEPTH and items:
        return False
    for x in items:
        tx = type(x)
        if tx is str or tx is bytes:
            continue
        if tx is int:
            if _INT_MIN <= x <= _UINT64_MAX:
                continue
            return False
        if tx is list or tx is dict:
            if _is_decoded_model_value(x, depth + 1):
                continue
            return False
        if tx is bool or x is None:
            continue
        return False
    return True


def _is_rust_panic(exc: BaseException) -> bool:
    # pyo3 turns a Rust panic into PanicException, which derives from BaseException.
    return type(exc).__name__ == "PanicException"


def encode(obj: Any) -> bytes:
    """Encode `obj` deterministically. Raises LocalError for values outside the data model.

    Data model: int in [-2^64, 2^64-1], bytes (bytearray/memoryview too), str, list/tuple,
    Mapping with int/str/bytes keys (sorted here), bool, None; nesting within MAX_DEPTH.
    """
    try:
        return _cbor2_dumps(_canonical_form(obj, 0))  # type: ignore[no-any-return]
    except Exception:
        pass
    except BaseException as exc:
        if not _is_rust_panic(exc):
            raise
    FAST_PATH_STATS.encode_fallbacks += 1
    return _encode_strict(obj)


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """Decode exactly one deterministic CBOR item from `data`.

    Raises a subclass of EncodingError (a RemoteError: the bytes came from outside) naming
    the problem and the byte offset.
    """
    if len(data) > max_size:
        raise OversizeError(f"input of {len(data)} bytes exceeds the limit of {max_size}")
    t: type[object] = type(data)
    if t is bytes or t is bytearray or t is memoryview:
        try:
            raw = data if t is bytes else bytes(data)
            value = _cbor2_loads(
                raw,
                tag_hook=_refuse_tag,
                semantic_decoders=_REFUSE_SEMANTIC_TAGS,
                # cbor2's depth counts containers that hold items, which puts those items
                # at most MAX_DEPTH deep: the same bound as ours (the walk checks it too).
                max_depth=MAX_DEPTH,
                allow_indefinite=False,
                allow_duplicate_keys=False,
            )
            if _is_decoded_model_value(value, 0) and _cbor2_dumps(value) == raw:
                return value
        except Exception:
            pass
        except BaseException as exc:
            if not _is_rust_panic(exc):
                raise
    FAST_PATH_STATS.decode_fallbacks += 1
    return _decode_strict(data)
