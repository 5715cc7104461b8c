"""The preimages docs/formats.md §5 states, rebuilt from the text alone and compared with the
code's: committee id, genesis block, vote and certificate layouts. An outside implementer
works from the docs; these tests fail when the code and the page part ways."""

from __future__ import annotations

import hashlib

import blake3
import nacl.signing

from coalitiond.consensus.types import (
    Certificate,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.log.records import committee_from_record, committee_record
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]


def _spec(network: str = "test-net", epoch: int = 0) -> CommitteeSpec:
    return CommitteeSpec(network, "feed", "test-feed", tuple(k.public for k in KEYS), 1, epoch,
                         bytes(range(32)))


def _b3(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def test_committee_id_is_the_documented_preimage_with_the_network_id_and_no_epoch() -> None:
    spec = _spec()
    network_id = _b3(b"test-net")   # docs/encoding.md: a name that is not 64 hex is hashed
    preimage = ["committee", 1, network_id, "feed", "test-feed", [k.public for k in KEYS], 1,
                bytes(range(32))]
    assert spec.committee_id == _b3(encode(preimage))
    # Not the network name, not the epoch: every epoch of a committee has one id.
    assert spec.committee_id != _b3(encode(["committee", 1, "test-net", *preimage[3:]]))
    assert _spec(epoch=7).committee_id == spec.committee_id
    # A 64-hex network name is its id.
    hex_name = "ab" * 32
    assert _spec(hex_name).committee_id == _b3(encode(["committee", 1, bytes.fromhex(hex_name),
                                                       *preimage[3:]]))
    # The record carries the name and the epoch; the id is recomputed from it.
    record = committee_record(_spec(epoch=7))
    assert record == ["committee", 1, "test-net", "feed", "test-feed",
                      [k.public for k in KEYS], 1, 7, bytes(range(32))]
    assert committee_from_record(record).committee_id == spec.committee_id
    assert spec.quorum == (4 + 1 + 2) // 2 == 3


def test_genesis_block_is_the_documented_one() -> None:
    spec = _spec(epoch=3)
    empty = _b3(b"\x80")
    assert empty.hex().startswith("bbe6a9f5") and empty.hex().endswith("36b5f46")
    sha_empty = hashlib.sha256(b"").digest()
    header = ["block-header", 2, 3, 0, 0, spec.committee_id, 0, empty, 0, bytes(32), 0,
              sha_empty, empty]
    g = genesis_block(spec)
    assert g.header.to_wire() == header
    assert g.digest == _b3(encode(header))
    assert g.to_wire() == ["block", 2, 3, 0, 0, spec.committee_id, 0, [], 0, bytes(32), 0,
                           sha_empty, []]


def test_vote_and_certificate_layouts_are_the_documented_ones() -> None:
    spec = _spec()
    digest = bytes(range(32, 64))
    votes = [Vote.sign(k, spec, i, VoteKind.FINALIZE, 9, digest) for i, k in enumerate(KEYS)]
    v = votes[2]
    assert v.to_wire() == ["vote", 1, 1, 0, 9, digest, 2, v.signature]
    payload = encode(["vote", 1, 1, spec.committee_id, 0, 9, digest])
    nacl.signing.VerifyKey(KEYS[2].public).verify(b"coalitiond/finalize/v1\x00" + payload,
                                                   v.signature)
    cert = Certificate.from_votes(votes[:3])
    assert cert.to_wire() == ["certificate", 1, 1, 0, 9, digest,
                              [[i, votes[i].signature] for i in range(3)]]
    cert.verify(spec)
