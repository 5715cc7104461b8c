"""The cbor2 fast path of `encode`/`decode` against the pure-Python reference code.

The contract is the reference code's: for every input, `encode`/`decode` and
`_encode_strict`/`_decode_strict` give the same bytes or value (same types, same key
order) or raise the same exception class. Differential Hypothesis tests (derandomised)
over data-model values, random bytes, mutated encodings and a generator of near-valid
hostile CBOR; a hand-written table for every class of input the fast path could accept but
the reference decoder refuses; and a guard that the fast path is actually taken.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.primitives import encoding
from coalitiond.primitives.encoding import (
    _CBOR2_SEMANTIC_TAGS,
    FAST_PATH_STATS,
    MAX_DEPTH,
    DuplicateKeyError,
    IndefiniteLengthError,
    NonCanonicalError,
    TooDeepError,
    TrailingBytesError,
    TruncatedError,
    UnsupportedTypeError,
    _decode_strict,
    _encode_strict,
    decode,
    encode,
)
from coalitiond.primitives.errors import EncodingError, LocalError

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, print_blob=True)

_U64 = 2**64 - 1


def _outcome(fn: Callable[..., Any], arg: Any) -> tuple[str, Any]:
    try:
        return ("value", fn(arg))
    except Exception as exc:
        return ("error", type(exc))


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    # repr tells 1 from True, list from tuple, and shows dict key order; == checks content.
    return a[0] == b[0] and type(a[1]) is type(b[1]) and repr(a[1]) == repr(b[1]) and a[1] == b[1]


def assert_decoders_agree(data: Any) -> tuple[str, Any]:
    fast = _outcome(decode, data)
    strict = _outcome(_decode_strict, data)
    assert _same(fast, strict), (bytes(data).hex() if isinstance(data, bytes) else data, fast, strict)
    return fast


def assert_encoders_agree(value: Any) -> tuple[str, Any]:
    fast = _outcome(encode, value)
    strict = _outcome(_encode_strict, value)
    assert _same(fast, strict), (value, fast, strict)
    return fast


@contextmanager
def reference_forbidden() -> Iterator[None]:
    """Fail if encode/decode reach the reference code (the fast path must answer)."""
    before = (FAST_PATH_STATS.encode_fallbacks, FAST_PATH_STATS.decode_fallbacks)
    with pytest.MonkeyPatch.context() as mp:
        def forbidden(*_args: Any) -> Any:
            raise AssertionError("fell back to the reference code")
        mp.setattr(encoding, "_encode_strict", forbidden)
        mp.setattr(encoding, "_decode_strict", forbidden)
        yield
    assert (FAST_PATH_STATS.encode_fallbacks, FAST_PATH_STATS.decode_fallbacks) == before


# --- strategies -------------------------------------------------------------------------

_ints = st.one_of(
    st.integers(min_value=-(2**64), max_value=_U64),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, _U64, -1, -24, -25,
                     -256, -257, -(2**32), -(2**32) - 1, -(2**64)]),
)
_keys = st.one_of(_ints, st.text(max_size=30), st.binary(max_size=30))
_scalars = st.one_of(st.none(), st.booleans(), _ints, st.binary(max_size=40), st.text(max_size=40))
model_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(_keys, inner, max_size=6),  # arbitrary (mostly unsorted) key order
        st.dictionaries(st.text(max_size=8), inner, max_size=6),
        st.dictionaries(st.text(alphabet="abz", max_size=4), inner, max_size=6),  # ASCII
    ),
    max_leaves=40,
)


def _head(major: int, value: int, width: int) -> bytes:
    # width 0: shortest; 1/2/4/8: that many argument bytes (possibly non-shortest).
    if width == 0:
        return encoding._head(major, value)
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes(((major << 5) | info,)) + (value % (1 << (8 * width))).to_bytes(width, "big")


_width = st.sampled_from([0, 0, 0, 0, 1, 2, 4, 8])
_small = st.integers(min_value=0, max_value=40)


@st.composite
def _hostile_leaf(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(min_value=0, max_value=7))
    if kind <= 1:  # integers, sometimes non-shortest
        return _head(kind, draw(st.integers(min_value=0, max_value=_U64)), draw(_width))
    if kind in (2, 3):  # strings, sometimes non-shortest, text sometimes invalid UTF-8
        if kind == 3 and draw(st.booleans()):
            payload = draw(st.text(max_size=6)).encode("utf-8")
        else:
            payload = draw(st.binary(max_size=6))
        return _head(kind, len(payload), draw(_width)) + payload
    if kind == 4:  # simple values, floats, false/true/null/undefined
        return draw(st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x14",
                                     b"\xf8\xff", b"\xf9\x3c\x00",
                                     b"\xfa\x3f\xc0\x00\x00", b"\xfb" + b"\x3f\xf8" + bytes(6)]))
    if kind == 5:  # indefinite strings
        major = draw(st.sampled_from([2, 3]))
        chunk = draw(st.binary(max_size=3)) if major == 2 else draw(st.text(max_size=3)).encode()
        return bytes(((major << 5) | 31,)) + _head(major, len(chunk), 0) + chunk + b"\xff"
    if kind == 6:  # a random byte or two
        return draw(st.binary(min_size=1, max_size=2))
    return b""


def _hostile_container(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        kind = draw(st.integers(min_value=0, max_value=4))
        items = draw(st.lists(inner, max_size=5))
        if kind == 0:  # array, definite (maybe non-shortest) or indefinite
            if draw(st.booleans()):
                return b"\x9f" + b"".join(items) + b"\xff"
            return _head(4, len(items), draw(_width)) + b"".join(items)
        if kind == 1:  # map of arbitrary pairs: unsorted, duplicate, mixed keys, odd keys
            pairs = items[: len(items) // 2 * 2]
            if draw(st.booleans()):
                return b"\xbf" + b"".join(pairs) + b"\xff"
            return _head(5, len(pairs) // 2, draw(_width)) + b"".join(pairs)
        if kind == 2:  # map with keys drawn from the model, in random order
            keys = draw(st.lists(_keys, max_size=4, unique_by=encode))
            order = draw(st.permutations(range(len(keys))))
            body = b"".join(encode(keys[i]) + (items[i] if i < len(items) else b"\x00")
                            for i in order)
            return _head(5, len(keys), 0) + body
        if kind == 3:  # a tag, including the ones cbor2 interprets
            tag = draw(st.one_of(st.sampled_from(_CBOR2_SEMANTIC_TAGS),
                                 st.integers(min_value=0, max_value=2**64 - 1)))
            return _head(6, tag, draw(_width)) + (items[0] if items else b"\x00")
        return b"".join(items)  # concatenation: trailing bytes
    return build()


hostile = st.recursive(_hostile_leaf(), _hostile_container, max_leaves=12)


# --- encode -----------------------------------------------------------------------------

@PROPERTY
@given(model_values)
def test_fast_encoder_writes_the_reference_bytes_and_decode_round_trips(value: Any) -> None:
    before = repr(value)
    with reference_forbidden():
        data = encode(value)
        decoded = decode(data)
    assert repr(value) == before  # the caller's maps were not re-ordered in place
    assert data == _encode_strict(value)
    assert _same(("value", decoded), ("value", _decode_strict(data)))
    assert encode(decoded) == data


class _Colour(enum.IntEnum):
    RED = 1


class _Name(str):
    pass


_cycle: list[Any] = []
_cycle.append(_cycle)
_deep: Any = 0
for _ in range(MAX_DEPTH + 1):
    _deep = [_deep]

ENCODER_FALLBACKS: list[Any] = [
    _Colour.RED, [_Colour.RED], {_Colour.RED: 1}, _Name("x"), {_Name("b"): 1, "a": 2},
    bytearray(b"ab"), [memoryview(b"ab")], types.MappingProxyType({"b": 1, "a": 2}),
    2**64, [-(2**64) - 1], {2**64: 1}, 1.5, [float("nan")], {1, 2}, frozenset(), {True: 1},
    {None: 1}, {(1,): 1}, {1.0: 1}, ["\ud800"], {"\ud800": 1, "a": 2}, _cycle, _deep,
    {"a": _deep}, object(), cbor2.CBORTag(1, 2), cbor2.undefined, b"x".decode,
]


@pytest.mark.parametrize("value", ENCODER_FALLBACKS, ids=lambda v: type(v).__name__)
def test_values_outside_the_fast_path_get_the_reference_result(value: Any) -> None:
    before = FAST_PATH_STATS.encode_fallbacks
    assert_encoders_agree(value)
    assert FAST_PATH_STATS.encode_fallbacks == before + 1


def test_depth_bound_is_exact_on_the_fast_path() -> None:
    deepest: Any = 0
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    deepest_map: Any = {}  # an empty map at depth MAX_DEPTH, like the scalar above
    for _ in range(MAX_DEPTH):
        deepest_map = {"k": deepest_map}
    with reference_forbidden():
        assert decode(encode(deepest)) == deepest
        assert decode(encode(deepest_map)) == deepest_map
    with pytest.raises(LocalError):
        encode([deepest])
    with pytest.raises(LocalError):
        encode({"k": deepest_map})


# --- decode -----------------------------------------------------------------------------

@PROPERTY
@given(st.binary(max_size=80))
def test_random_bytes(data: bytes) -> None:
    assert_decoders_agree(data)


@settings(max_examples=200, deadline=None, derandomize=True, print_blob=True)
@given(model_values, st.data())
def test_valid_encodings_with_one_byte_mutated_inserted_or_deleted(value: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    pos = data.draw(st.integers(min_value=0, max_value=len(raw)))
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    if op == "insert":
        raw.insert(pos, byte)
    elif pos < len(raw):
        if op == "replace":
            raw[pos] = byte
        else:
            del raw[pos]
    assert_decoders_agree(bytes(raw))


@settings(max_examples=600, deadline=None, derandomize=True, print_blob=True)
@given(hostile)
def test_near_valid_hostile_cbor(data: bytes) -> None:
    assert_decoders_agree(data)


@settings(max_examples=60, deadline=None, derandomize=True, print_blob=True)
@given(model_values, st.sampled_from([bytes, bytearray, memoryview]))
def test_bytes_like_inputs(value: Any, kind: type[Any]) -> None:
    data = kind(encode(value))
    with reference_forbidden():
        got = decode(data)
    assert _same(("value", got), ("value", _decode_strict(data)))


# Every class of input cbor2 reads (often back to the same bytes) that the reference decoder
# refuses, with the class the caller must see.
H = bytes.fromhex
HOSTILE: list[tuple[str, bytes, type[Exception]]] = [
    ("half float cbor2 re-encodes identically", H("f93c00"), UnsupportedTypeError),
    ("single float", H("fa47c35000"), UnsupportedTypeError),
    ("double float", H("fb3ff199999999999a"), UnsupportedTypeError),
    ("float in an array", H("8201f97e00"), UnsupportedTypeError),
    ("bignum 2**64 (tag 2) cbor2 re-encodes identically", H("c249010000000000000000"), UnsupportedTypeError),
    ("bignum -2**64-1 (tag 3)", H("c349010000000000000000"), UnsupportedTypeError),
    ("bignum 1 (tag 2)", H("c24101"), UnsupportedTypeError),
    ("datetime string (tag 0)", H("c074323031332d30332d32315432303a30343a30305a"), UnsupportedTypeError),
    ("epoch datetime (tag 1)", H("c11a514b67b0"), UnsupportedTypeError),
    ("decimal fraction (tag 4)", H("c48221196ab3"), UnsupportedTypeError),
    ("bigfloat with huge exponent (tag 5)", H("c5821b7fffffffffffffff01"), UnsupportedTypeError),
    ("tag 24 embedded CBOR", H("d8184100"), UnsupportedTypeError),
    ("shared reference cycle (tags 28/29)", H("d81c81d81d00"), UnsupportedTypeError),
    ("rational (tag 30)", H("d81e820102"), UnsupportedTypeError),
    ("regex (tag 35)", H("d8236161"), UnsupportedTypeError),
    ("set (tag 258)", H("d9010283010203"), UnsupportedTypeError),
    ("self-describe tag 55799 that cbor2 strips", H("d9d9f700"), UnsupportedTypeError),
    ("unknown tag", H("d90fff00"), UnsupportedTypeError),
    ("simple value 16", H("f0"), UnsupportedTypeError),
    ("simple value 255", H("f8ff"), UnsupportedTypeError),
    ("false in two bytes", H("f814"), UnsupportedTypeError),
    ("undefined", H("f7"), UnsupportedTypeError),
    ("bool key cbor2 re-encodes identically", H("a1f501"), UnsupportedTypeError),
    ("null key", H("a1f601"), UnsupportedTypeError),
    ("array key (tuple in cbor2)", H("a18001"), UnsupportedTypeError),
    ("map key", H("a1a00001"), UnsupportedTypeError),
    ("float key", H("a1f93c0001"), UnsupportedTypeError),
    ("unsorted int keys cbor2 re-encodes identically", H("a202030102"), NonCanonicalError),
    ("unsorted text keys", H("a2616201616102"), NonCanonicalError),
    ("length-first (RFC 7049) mixed keys", H("a26161021903e801"), NonCanonicalError),
    ("negative before unsigned", H("a220010002"), NonCanonicalError),
    ("text before bytes", H("a2616101416102"), NonCanonicalError),
    ("duplicate int key (cbor2 collapses)", H("a201020103"), DuplicateKeyError),
    ("duplicate text key", H("a2616101616102"), DuplicateKeyError),
    ("non-shortest int", H("1817"), NonCanonicalError),
    ("non-shortest length", H("580161"), NonCanonicalError),
    ("non-shortest array count", H("98020102"), NonCanonicalError),
    ("non-shortest map count", H("b8010102"), NonCanonicalError),
    ("non-shortest negative", H("3900ff"), NonCanonicalError),
    ("indefinite bytes", H("5f4101ff"), IndefiniteLengthError),
    ("indefinite text", H("7f6161ff"), IndefiniteLengthError),
    ("indefinite array", H("9f01ff"), IndefiniteLengthError),
    ("indefinite map", H("bf0102ff"), IndefiniteLengthError),
    ("trailing bytes cbor2 ignores", H("6161ff"), TrailingBytesError),
    ("trailing item", H("0000"), TrailingBytesError),
    ("invalid UTF-8", H("62c328"), EncodingError),
    ("UTF-8-encoded surrogate", H("63eda080"), EncodingError),
    ("overlong UTF-8", H("62c0af"), EncodingError),
    ("truncated argument", H("1a0000"), TruncatedError),
    ("truncated string", H("4301"), TruncatedError),
    ("truncated array", H("8301"), TruncatedError),
    ("huge array count", H("9bffffffffffffffff"), TruncatedError),
    ("huge byte string length", H("5bffffffffffffffff"), TruncatedError),
    ("huge map count", H("bbffffffffffffffff"), TruncatedError),
    ("33 arrays around a scalar", b"\x81" * (MAX_DEPTH + 1) + b"\x00", TooDeepError),
    ("33 maps around a scalar", b"\xa1\x00" * (MAX_DEPTH + 1) + b"\x00", TooDeepError),
    ("34 empty arrays", b"\x81" * (MAX_DEPTH + 1) + b"\x80", TooDeepError),
    ("very deep nesting", b"\x81" * 100_000 + b"\x00", TooDeepError),
    ("break", H("ff"), UnsupportedTypeError),
    ("reserved info", H("1c"), EncodingError),
    ("empty", b"", TruncatedError),
]


@pytest.mark.parametrize(("what", "data", "cls"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_inputs_get_the_reference_error(what: str, data: bytes, cls: type[Exception]) -> None:
    kind, got = assert_decoders_agree(data)
    assert kind == "error" and issubclass(got, cls), what


def test_boundaries_inside_the_model_take_the_fast_path() -> None:
    accepted = [
        b"\x81" * MAX_DEPTH + b"\x00",  # scalar at depth MAX_DEPTH
        b"\x81" * MAX_DEPTH + b"\x80",  # empty array at depth MAX_DEPTH
        H("a21903e8016161" + "02"),  # RFC 8949 mixed-key order
        H("a3" + "0a00" + "2001" + "616102"),  # unsigned < negative < text
        H("1bffffffffffffffff"), H("3bffffffffffffffff"),
        H("62c3bc"), H("a2616201626161" + "02"),  # "b" before "aa": shorter first
    ]
    for data in accepted:
        strict = _decode_strict(data)
        with reference_forbidden():
            got = decode(data)
        assert _same(("value", got), ("value", strict)), data.hex()


def test_other_input_types_behave_as_before() -> None:
    # Not bytes-like: the fast path stays out and the reference code answers as it always
    # did (len() and bytes() decide what is accepted).
    with pytest.raises(TypeError):
        decode("text is not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode(None)  # type: ignore[arg-type]
    assert decode([1]) == 1  # type: ignore[arg-type]


def test_every_tag_cbor2_interprets_is_refused_unread() -> None:
    # Guards a cbor2 upgrade that adds a semantic tag: it must be in _CBOR2_SEMANTIC_TAGS.
    for tag in [*range(0, 1100), 43000, 55799, 2**32 - 1, 2**64 - 1]:
        data = encoding._head(6, tag) + b"\x00"
        with pytest.raises(UnsupportedTypeError):
            decode(data)
        seen: list[int] = []
        with suppress(cbor2.CBORDecodeError):  # cbor2 interpreted the tag, disliked 0
            cbor2.loads(data, tag_hook=lambda t, _immutable, seen=seen: seen.append(t.tag))
        assert seen == [tag] or tag in _CBOR2_SEMANTIC_TAGS, tag


# --- the fast path is taken -------------------------------------------------------------

B32 = bytes(range(32))
ENVELOPE = ["envelope", 1, B32, B32, b"\x07" * 16,
            [["publish", {"kind": "bench", "body": "x" * 128}]] * 16, b"\x05" * 64]
VOTE = ["vote", 1, 1, B32, 5, 100, B32]


@pytest.mark.parametrize("value", [ENVELOPE, VOTE], ids=["envelope", "vote"])
def test_ordinary_values_never_reach_the_reference_code(value: Any) -> None:
    expected = _encode_strict(value)
    with reference_forbidden():
        data = encode(value)
        decoded = decode(data)
    assert data == expected
    assert decoded == value


def test_an_unsorted_map_is_sorted_on_the_fast_path_without_touching_the_caller() -> None:
    value = ["publish", {"kind": "bench", "body": "x"}, {"b": 1, "aa": 2, 10: 3, "é": 4}]
    with reference_forbidden():
        data = encode(value)
    assert data == _encode_strict(value)
    assert data.index(b"dbody") < data.index(b"dkind")
    assert data.endswith(bytes.fromhex("a4" "0a03" "616201" "62616102" "62c3a904"))
    assert list(value[1]) == ["kind", "body"]  # type: ignore[call-overload]
    assert list(value[2]) == ["b", "aa", 10, "é"]  # type: ignore[call-overload]
