"""Identifiers (DESIGN §2.2): the two mosaik rules and the structured-preimage rule."""

from __future__ import annotations

import blake3
import pytest

from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import LocalError
from coalitiond.primitives.identity import ID_LEN, derive, digest, hash_structure, make_id, short

HEX = "87d4e11436c7eedfc615636267e676f84cddb496455eaf69317e0222c6573120"


def test_make_id_hashes_names() -> None:
    assert make_id("lattice|ethereum.mainnet").hex() == HEX
    assert make_id("") == blake3.blake3(b"").digest()
    assert make_id("é") == blake3.blake3("é".encode()).digest()
    assert len(make_id("anything")) == ID_LEN


def test_make_id_decodes_64_hex_characters() -> None:
    assert make_id(HEX) == bytes.fromhex(HEX)
    assert make_id(HEX.upper()) == bytes.fromhex(HEX)


@pytest.mark.parametrize("almost", [HEX[:63], HEX + "0", "g" + HEX[1:], " " + HEX[1:], "0x" + HEX[2:]])
def test_make_id_hashes_anything_that_is_not_exactly_64_hex(almost: str) -> None:
    assert make_id(almost) == blake3.blake3(almost.encode()).digest()


def test_derive() -> None:
    parent = bytes.fromhex(HEX)
    assert derive(parent, "module") == blake3.blake3(parent + b"module").digest()
    assert derive(parent, "a") != derive(parent, "b")
    # Pinned: derive(id("lattice|ethereum.mainnet"), "tickets").
    assert derive(parent, "tickets") == blake3.blake3(parent + b"tickets").digest()
    with pytest.raises(LocalError, match=r"^derive: parent id must be 32 bytes, got 31$"):
        derive(parent[:31], "x")


def test_hash_structure_is_blake3_of_the_cbor_array() -> None:
    assert hash_structure("coalition", 1, "acme.coalition").hex() == (
        "661e272774fdd4d48a67dc58b1807e2091e2d075906e51b6c91938d45f698948"
    )
    assert hash_structure("t", 1, [b"a", b"b"]) == blake3.blake3(encode(["t", 1, [b"a", b"b"]])).digest()
    # Unambiguous where concatenation is not: ["ab"], ["a","b"] and ["a"],["b"] all differ.
    assert len({hash_structure("t", 1, ["ab"]), hash_structure("t", 1, ["a", "b"]),
                hash_structure("t", 1, ["a"], ["b"])}) == 3
    assert hash_structure("t", 1) != hash_structure("t", 2)


def test_digest_and_short() -> None:
    assert digest(b"abc") == blake3.blake3(b"abc").digest()
    assert short(bytes.fromhex(HEX)) == "87d4e114"
