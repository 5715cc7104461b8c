"""The state-sync pair of the sync channel (docs/wire.md §6.2): bytes pinned, every bound
refused when decoded with one line."""

from __future__ import annotations

import pytest

from coalitiond.consensus.types import MalformedMessage
from coalitiond.node import wire
from coalitiond.primitives.encoding import encode

H = b"\x07" * 32


def test_the_pair_round_trips_and_its_bytes_are_pinned() -> None:
    req = wire.SnapshotRequest(5, 0, 0)
    assert wire.encode_message(req) == encode(["snapshot?", 1, 5, 0, 0])
    assert wire.decode_message(wire.encode_message(req)) == req
    page = wire.SnapshotChunk(5, 12, 3000, 1024, 6, (H, H), b"x" * 1976)
    assert wire.encode_message(page) == encode(["snapshot", 1, 5, 12, 3000, 1024, 6, [H, H],
                                                b"x" * 1976])
    assert wire.decode_message(wire.encode_message(page)) == page


@pytest.mark.parametrize(("fields", "message"), [
    ([12, 3 << 20, 0, 6, [H], b"\0" * (wire.MAX_SYNC_CHUNK + 1)],
     f"snapshot: a chunk of {wire.MAX_SYNC_CHUNK + 1} bytes exceeds {wire.MAX_SYNC_CHUNK}"),
    ([12, 100, 90, 6, [H], b"\0" * 20], "snapshot: bytes 90..110 of a 100-byte file"),
    ([12, wire.MAX_SYNC_TOTAL + 1, 0, 6, [H], b""],
     f"snapshot: bytes 0..0 of a {wire.MAX_SYNC_TOTAL + 1}-byte file"),
    ([12, 100, 0, 6, [H] * 65, b""], "snapshot: the frontier is not at most 64 hashes"),
    ([12, 100, 0, 6, [b"short"], b""], "snapshot: the frontier is not at most 64 hashes"),
    ([0, 100, 0, 6, [H], b""], "snapshot: height 0 holds no snapshot"),
    ([12, 100, 0, 6, [H]], "snapshot: malformed"),
    ([12, -1, 0, 6, [H], b""], "snapshot: malformed"),
])
def test_a_page_out_of_bounds_is_refused_when_decoded(fields: list[object], message: str
                                                       ) -> None:
    with pytest.raises(MalformedMessage, match=message.replace("(", r"\(").replace(")", r"\)")):
        wire.decode_message(encode(["snapshot", 1, 5, *fields]))


def test_a_request_with_a_negative_or_missing_field_is_refused() -> None:
    for obj in (["snapshot?", 1, 5, 0], ["snapshot?", 1, 5, -1, 0], ["snapshot?", 1, 5, 0, "0"]):
        with pytest.raises(MalformedMessage, match="snapshot\\?: malformed"):
            wire.decode_message(encode(obj))
