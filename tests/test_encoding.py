"""Deterministic CBOR (RFC 8949 §4.2.1): published examples, each decoder refusal with its
error class, the RFC 8949 vs cbor2-canonical map-order difference, and Hypothesis
round-trips.

Hypothesis runs derandomised (the examples are a function of the test), so CI is
reproducible; on failure it prints the falsifying input and a `@reproduce_failure` blob.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.primitives.encoding import (
    MAX_DEPTH,
    DuplicateKeyError,
    IndefiniteLengthError,
    NonCanonicalError,
    OversizeError,
    TooDeepError,
    TrailingBytesError,
    TruncatedError,
    UnsupportedTypeError,
    decode,
    encode,
)
from coalitiond.primitives.errors import EncodingError, LocalError, RemoteError

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, print_blob=True)

# RFC 8949 Appendix A, the part inside our data model.
RFC_EXAMPLES: list[tuple[Any, str]] = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
    (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
    (18446744073709551615, "1bffffffffffffffff"), (-18446744073709551616, "3bffffffffffffffff"),
    (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"), ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)),
     "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
     "a56161614161626142616361436164614461656145"),
]


@pytest.mark.parametrize(("value", "hex_"), RFC_EXAMPLES)
def test_rfc8949_examples(value: Any, hex_: str) -> None:
    assert encode(value).hex() == hex_
    assert decode(bytes.fromhex(hex_)) == value


def test_tuples_encode_as_arrays_and_bytes_like_as_byte_strings() -> None:
    assert encode((1, 2)) == encode([1, 2])
    assert encode(bytearray(b"ab")) == encode(memoryview(b"ab")) == encode(b"ab")


def test_map_order_is_rfc8949_not_cbor2_canonical() -> None:
    # RFC 8949 sorts keys by their encoded bytes: 1000 (19 03 e8) before "a" (61 61).
    # cbor2's canonical=True uses RFC 7049's length-first rule: "a" (2 bytes) first.
    value = {1000: 1, "a": 2}
    ours = encode(value)
    theirs = cbor2.dumps(value, canonical=True)
    assert ours.hex() == "a21903e8016161" + "02"
    assert theirs.hex() == "a2616102" + "1903e801"
    assert ours != theirs
    assert decode(ours) == value
    with pytest.raises(NonCanonicalError, match="map keys not in bytewise order at offset 4"):
        decode(theirs)
    # Same-type keys: both rules agree (so cbor2 is a fair cross-check for such maps).
    same = {"aa": 1, "b": 2, "c": 3}
    assert encode(same) == cbor2.dumps(same, canonical=True)


def test_map_key_order_by_encoded_bytes() -> None:
    value = {b"\x01": 0, -1: 1, 10: 2, "z": 3, 100: 4, "aa": 5}
    keys = list(cbor2.loads(encode(value)).keys())
    assert keys == [10, 100, -1, b"\x01", "z", "aa"]


# --- decoder refusals, one class each ---------------------------------------------------

REFUSALS: list[tuple[str, type[EncodingError], str]] = [
    ("1817", NonCanonicalError, "non-shortest integer or length encoding at offset 0"),
    ("190017", NonCanonicalError, "non-shortest integer or length encoding at offset 0"),
    ("1a000000ff", NonCanonicalError, "non-shortest integer or length encoding at offset 0"),
    ("1b00000000ffffffff", NonCanonicalError, "non-shortest integer or length encoding"),
    ("380a", NonCanonicalError, "non-shortest integer or length encoding at offset 0"),
    ("580161", NonCanonicalError, "non-shortest integer or length encoding at offset 0"),
    ("819800", NonCanonicalError, "non-shortest integer or length encoding at offset 1"),
    ("8198", TruncatedError, "truncated input: need 1 bytes at offset 2, have 0"),
    ("a202030102", NonCanonicalError, "map keys not in bytewise order at offset 3"),
    ("a201020103", DuplicateKeyError, "duplicate map key 1 at offset 3"),
    ("a2616101616102", DuplicateKeyError, "duplicate map key 'a' at offset 4"),
    ("9fff", IndefiniteLengthError, "indefinite-length item at offset 0"),
    ("5f4101ff", IndefiniteLengthError, "indefinite-length item at offset 0"),
    ("7f6161ff", IndefiniteLengthError, "indefinite-length item at offset 0"),
    ("bf0102ff", IndefiniteLengthError, "indefinite-length item at offset 0"),
    ("0000", TrailingBytesError, "1 trailing bytes after offset 1"),
    ("80f6f6", TrailingBytesError, "2 trailing bytes after offset 1"),
    ("c11a514b67b0", UnsupportedTypeError, "tag 1 at offset 0 is not used by this protocol"),
    ("c249010000000000000000", UnsupportedTypeError, "tag 2 at offset 0 is not used"),
    ("d9d9f700", UnsupportedTypeError, "tag 55799 at offset 0 is not used"),
    ("f93c00", UnsupportedTypeError, "floating-point value at offset 0 is not used"),
    ("fb3ff199999999999a", UnsupportedTypeError, "floating-point value at offset 0"),
    ("f7", UnsupportedTypeError, "simple value 23 at offset 0 is not used"),
    ("f0", UnsupportedTypeError, "simple value 16 at offset 0 is not used"),
    ("f814", UnsupportedTypeError, "simple value 20 at offset 0 is not used"),
    ("ff", UnsupportedTypeError, "break or indefinite marker at offset 0"),
    ("a18001", UnsupportedTypeError, "map key of type list at offset 1"),
    ("a1f501", UnsupportedTypeError, "map key of type bool at offset 1"),
    ("1a0000", TruncatedError, "truncated input: need 4 bytes at offset 1, have 2"),
    ("4301", TruncatedError, "truncated input: need 3 bytes at offset 1, have 1"),
    ("9affffffff", TruncatedError, "array of 4294967295 items cannot fit at offset 0"),
    ("bb0fffffffffffffff", TruncatedError, "map of 1152921504606846975 pairs cannot fit"),
    ("1c", EncodingError, "reserved additional information 28 at offset 0"),
    ("62c328", EncodingError, "invalid UTF-8 in text string at offset 0"),
]


@pytest.mark.parametrize(("hex_", "cls", "message"), REFUSALS)
def test_decoder_refusals(hex_: str, cls: type[EncodingError], message: str) -> None:
    with pytest.raises(cls, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")) as info:
        decode(bytes.fromhex(hex_))
    # Bad bytes are always the sender's fault.
    assert isinstance(info.value, RemoteError)


def test_empty_input() -> None:
    with pytest.raises(TruncatedError, match=r"^empty input$"):
        decode(b"")


def test_size_limit() -> None:
    data = encode(b"x" * 100)
    assert decode(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(OversizeError, match=rf"^input of {len(data)} bytes exceeds the limit of 101$"):
        decode(data, max_size=101)


def test_depth_limit_is_the_same_both_ways() -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert decode(encode(deep)) == deep
    too_deep = [deep]
    with pytest.raises(LocalError, match="nesting deeper than MAX_DEPTH"):
        encode(too_deep)
    raw = b"\x81" * (MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(TooDeepError, match=rf"^nesting deeper than {MAX_DEPTH} at offset 33$"):
        decode(raw)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "encode: unsupported type float"),
        ({1, 2}, "encode: unsupported type set"),
        (2**64, "encode: integer 18446744073709551616 does not fit 64 bits"),
        (-(2**64) - 1, "encode: integer -18446744073709551617 does not fit 64 bits"),
        ({True: 1}, "encode: unsupported map key type bool"),
        ({(1,): 1}, "encode: unsupported map key type tuple"),
    ],
)
def test_encoder_refuses_values_outside_the_model(value: Any, message: str) -> None:
    # Our own values: a LocalError (our bug), never a RemoteError.
    with pytest.raises(LocalError, match=r"^" + message.replace("(", r"\(") + "$"):
        encode(value)


# --- properties -------------------------------------------------------------------------

_keys = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1), st.text(max_size=8), st.binary(max_size=8)
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.binary(max_size=40), st.text(max_size=40),
)
values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(_keys, inner, max_size=6)
    ),
    max_leaves=40,
)


@PROPERTY
@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data
    # An independent decoder reads the same value.
    assert cbor2.loads(data) == value


@PROPERTY
@given(st.binary(max_size=64))
def test_any_accepted_input_is_the_canonical_encoding(data: bytes) -> None:
    try:
        value = decode(data)
    except EncodingError:
        return
    assert encode(value) == data


@settings(max_examples=100, deadline=None, derandomize=True, print_blob=True)
@given(values)
def test_every_truncation_is_refused(value: Any) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(EncodingError):
            decode(data[:cut])


@PROPERTY
@given(st.dictionaries(_keys, st.integers(min_value=-(2**63), max_value=2**63), min_size=2,
                       max_size=6))
def test_reordered_maps_are_refused(value: dict[Any, int]) -> None:
    # Re-encode the pairs in reverse canonical order: same map, not deterministic.
    canonical = encode(value)
    pairs = sorted(value.items(), key=lambda kv: encode(kv[0]), reverse=True)
    body = b"".join(encode(k) + encode(v) for k, v in pairs)
    reordered = canonical[: len(canonical) - len(body)] + body
    assert reordered != canonical
    with pytest.raises(NonCanonicalError):
        decode(reordered)
