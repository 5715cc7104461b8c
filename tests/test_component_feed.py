"""The `feed` component: parameters, every refusal, entries, reads with proofs, snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from coalitiond.commands.client import publish
from coalitiond.commands.envelope import Command, Envelope, InvalidCommand
from coalitiond.components.base import Applied, BlockContext, MalformedSnapshot, QueryError, Refused
from coalitiond.components.feed import component as feed_module
from coalitiond.components.feed.component import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BODY_BYTES,
    MAX_KIND_LEN,
    MAX_PUBLISHERS,
    MAX_QUERY_ENTRIES,
    Feed,
)
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import OperatorError
from coalitiond.primitives.identity import hash_structure
from coalitiond.verify import verify_inclusion

OPERATOR = SigningKey(b"\x01" * 32)
STRANGER = SigningKey(b"\x02" * 32)
COMMITTEE = b"\x33" * 32


class Chain:
    """Feeds a component envelopes block by block, as the executor would."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.height = 0
        self.nonce = 0

    def envelope(self, commands: list[Command], key: SigningKey = OPERATOR) -> Envelope:
        self.nonce += 1
        return Envelope.sign(key, COMMITTEE, self.nonce, commands)

    def block(self, *envelopes: Envelope) -> list[Any]:
        self.height += 1
        return self.feed.apply(BlockContext(self.height, bytes([self.height]) * 32),
                               list(envelopes))


def make_feed(**params: Any) -> Feed:
    return Feed.from_params({"publishers": [OPERATOR.public], **params})


# -- parameters -------------------------------------------------------------------------------


def test_params_from_config_table() -> None:
    feed = Feed.from_params({"publishers": [OPERATOR.public.hex()], "max_body_bytes": 100,
                             "follow_almanac": None})
    assert feed.publishers == (OPERATOR.public,)
    assert feed.max_body_bytes == 100
    assert make_feed().max_body_bytes == DEFAULT_MAX_BODY_BYTES


@pytest.mark.parametrize(("params", "message"), [
    ({"publishers": [], "colour": 1}, "component.colour: unknown key for a feed"),
    ({"publishers": [b"\x01" * 32], "follow_almanac": b"\x00" * 32},
     "component.follow_almanac: not supported by feed/1 yet"),
    ({}, "component.publishers: required, a list of client keys"),
    ({"publishers": ["xyz"]}, "component.publishers: 'xyz' is not hex"),
    ({"publishers": []}, f"component.publishers: list 1..{MAX_PUBLISHERS} client keys"),
    ({"publishers": [b"\x01" * 32, b"\x01" * 32]}, "component.publishers: a key is listed twice"),
    ({"publishers": [b"\x01" * 31]},
     "component.publishers: keys must be 32 bytes (64 hex chars)"),
    ({"publishers": [b"\x01" * 32], "max_body_bytes": 0},
     f"component.max_body_bytes: must be 1..{MAX_BODY_BYTES}"),
    ({"publishers": [b"\x01" * 32], "max_body_bytes": MAX_BODY_BYTES + 1},
     f"component.max_body_bytes: must be 1..{MAX_BODY_BYTES}"),
])
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError) as info:
        Feed.from_params(params)
    assert str(info.value) == message


def test_config_digest() -> None:
    a, b = SigningKey(b"\x0a" * 32).public, SigningKey(b"\x0b" * 32).public
    assert Feed([a, b]).config_digest() == Feed([b, a]).config_digest()
    assert Feed([a]).config_digest() != Feed([a], 100).config_digest()


# -- stateless check ------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "reason", "message"), [
    (Command("append", {"kind": "k", "body": 1}), "unknown_op",
     "unknown op 'append' (a feed accepts: publish)"),
    (Command("publish", {"kind": "k"}), "bad_args", "publish: args must be exactly {kind, body}"),
    (Command("publish", {"kind": "k", "body": 1, "x": 2}), "bad_args",
     "publish: args must be exactly {kind, body}"),
    (publish("Price", 1), "bad_args",
     f"publish: kind must match [a-z0-9][a-z0-9._:-]* and be at most {MAX_KIND_LEN} chars"),
    (publish("k" * (MAX_KIND_LEN + 1), 1), "bad_args",
     f"publish: kind must match [a-z0-9][a-z0-9._:-]* and be at most {MAX_KIND_LEN} chars"),
    (Command("publish", {"kind": 7, "body": 1}), "bad_args",
     f"publish: kind must match [a-z0-9][a-z0-9._:-]* and be at most {MAX_KIND_LEN} chars"),
    (publish("k", b"\x00" * 100), "too_large", "publish: body of 102 bytes exceeds 64"),
])
def test_check_refusals(command: Command, reason: str, message: str) -> None:
    feed = make_feed(max_body_bytes=64)
    with pytest.raises(InvalidCommand) as info:
        feed.check(OPERATOR.public, command)
    assert info.value.reason == reason
    assert str(info.value) == message


def test_only_publishers_publish() -> None:
    feed = make_feed()
    with pytest.raises(InvalidCommand) as info:
        feed.check(STRANGER.public, publish("k", 1))
    assert info.value.reason == "not_publisher"
    assert str(info.value) == f"client {STRANGER.public.hex()} is not a publisher of this feed"


# -- apply ------------------------------------------------------------------------------------


def test_publish_assigns_sequence_numbers() -> None:
    chain = Chain(make_feed())
    results = chain.block(chain.envelope([publish("a", 1), publish("b", {"x": [1, 2]})]))
    assert [r.entry_index for r in results] == [0, 1]
    results = chain.block(chain.envelope([publish("c", None)]))
    assert results == [Applied(2, (results[0].entries[0],))]
    entry = decode(results[0].entries[0])
    assert entry[:4] == ["feed-entry", 1, 2, 2]
    assert entry[6:] == [OPERATOR.public, "c", None]
    assert len(chain.feed) == 3


def test_refused_command_changes_nothing() -> None:
    chain = Chain(make_feed(max_body_bytes=64))
    chain.block(chain.envelope([publish("a", 1)]))
    root, snapshot = chain.feed.state_root(), chain.feed.snapshot()
    results = chain.block(chain.envelope([publish("k", b"\x00" * 100), Command("nope", {})]),
                          chain.envelope([publish("k", 1)], key=STRANGER))
    assert [type(r) for r in results] == [Refused, Refused, Refused]
    assert [r.reason for r in results if isinstance(r, Refused)] == [
        "too_large", "unknown_op", "not_publisher"]
    assert chain.feed.state_root() == root
    assert chain.feed.snapshot() == snapshot


def test_mixed_envelope_applies_each_command_on_its_own() -> None:
    chain = Chain(make_feed())
    results = chain.block(chain.envelope([publish("a", 1), Command("bad", {}), publish("b", 2)]))
    assert [r.entry_index if isinstance(r, Applied) else r.reason for r in results] == [
        0, "unknown_op", 1]


def test_feed_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "MAX_FEED_ENTRIES", 2)
    chain = Chain(make_feed())
    results = chain.block(chain.envelope([publish("a", i) for i in range(3)]))
    assert results[2] == Refused("feed_full", "the feed holds its maximum of 2 entries")


# -- reads --------------------------------------------------------------------------------------


def filled(n: int) -> Feed:
    chain = Chain(make_feed())
    for i in range(n):
        chain.block(chain.envelope([publish("tick", i)]))
    return chain.feed


def test_entry_read_comes_with_a_proof() -> None:
    feed = filled(13)
    head = feed.query("head", {})
    assert head["count"] == 13
    assert head["state_root"] == hash_structure("feed-state", 1, 13, head["tree_root"])
    for index in range(13):
        read = feed.query("entry", {"index": index})
        assert read["entry"]["seq"] == index and read["entry"]["body"] == index
        assert read["encoded"] == encode(["feed-entry", 1, index, index + 1,
                                          read["entry"]["envelope_id"], 0, OPERATOR.public,
                                          "tick", index])
        assert verify_inclusion(read["encoded"], index, read["tree_size"], read["proof"],
                                head["tree_root"])


def test_latest_and_since() -> None:
    assert make_feed().query("latest", {}) is None
    feed = filled(5)
    assert feed.query("latest", {})["seq"] == 4
    page = feed.query("since", {"index": 1, "limit": 3})
    assert [e["seq"] for e in page["entries"]] == [1, 2, 3]
    assert page["next"] == 4 and page["count"] == 5
    page = feed.query("since", {"index": 4})
    assert [e["seq"] for e in page["entries"]] == [4] and page["next"] == 5
    assert feed.query("since", {"index": 9})["entries"] == []


@pytest.mark.parametrize(("name", "args", "message"), [
    ("entries", {}, "unknown feed query 'entries' (known: entry, head, latest, since)"),
    ("entry", {}, "entry: arguments must be ['index'], got []"),
    ("entry", {"index": -1}, "entry: index must be an unsigned integer"),
    ("entry", {"index": 3}, "entry: no entry 3 (the feed has 3)"),
    ("head", {"x": 1}, "head: arguments must be [], got ['x']"),
    ("since", {"index": "0"}, "since: index must be an unsigned integer"),
    ("since", {"index": 0, "limit": 0}, f"since: limit must be 1..{MAX_QUERY_ENTRIES}"),
    ("since", {"index": 0, "limit": MAX_QUERY_ENTRIES + 1},
     f"since: limit must be 1..{MAX_QUERY_ENTRIES}"),
])
def test_query_errors(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError) as info:
        filled(3).query(name, args)
    assert str(info.value) == message


# -- snapshots ----------------------------------------------------------------------------------


def test_reads_do_not_alias_state() -> None:
    feed = filled(1)
    chain = Chain(feed)
    chain.block(chain.envelope([publish("m", {"a": [1]})]))
    feed.query("latest", {})["body"]["a"].append(2)
    assert feed.query("latest", {})["body"] == {"a": [1]}


def test_snapshot_round_trip() -> None:
    feed = filled(6)
    other = make_feed()
    other.restore(feed.snapshot())
    assert other.state_root() == feed.state_root()
    assert other.query("entry", {"index": 5}) == feed.query("entry", {"index": 5})
    assert other.snapshot() == feed.snapshot()


def _snapshot_with(rows: list[Any]) -> bytes:
    return encode(["feed-snapshot", 1, [encode(r) if isinstance(r, list) else r for r in rows]])


def _row(seq: int = 0, height: int = 1, **over: Any) -> list[Any]:
    fields = {"tag": "feed-entry", "schema": 1, "seq": seq, "height": height,
              "envelope_id": b"\x00" * 32, "command_index": 0, "publisher": OPERATOR.public,
              "kind": "k", "body": 1}
    fields.update(over)
    return list(fields.values())


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff", "feed snapshot: break or indefinite marker at offset 0"),
    (encode(["feed-snapshot", 2, []]),
     'feed snapshot: expected ["feed-snapshot", 1, [entry bytes]]'),
    (_snapshot_with([7]), "feed snapshot: entry 0: expected a byte string"),
    (_snapshot_with([b"\x18\x01"]),
     "feed snapshot: entry 0: non-shortest integer or length encoding at offset 0"),
    (_snapshot_with([_row()[:8]]), "feed snapshot: entry 0: expected a 9-item array"),
    (_snapshot_with([_row(tag="x")]), "feed snapshot: entry 0: wrong type tag or schema"),
    (_snapshot_with([_row(seq=1)]), "feed snapshot: entry 0: sequence number 1, expected 0"),
    (_snapshot_with([_row(height=0)]),
     "feed snapshot: entry 0: height must be >= 1 and command index unsigned"),
    (_snapshot_with([_row(envelope_id=b"")]), "feed snapshot: entry 0: envelope id must be 32 bytes"),
    (_snapshot_with([_row(publisher=[1])]), "feed snapshot: entry 0: publisher must be a 32-byte key"),
    (_snapshot_with([_row(publisher=STRANGER.public)]),
     f"feed snapshot: entry 0: client {STRANGER.public.hex()} is not a publisher of this feed"),
    (_snapshot_with([_row(height=2), _row(seq=1, height=1)]),
     "feed snapshot: entry 1: height goes backwards"),
])
def test_malformed_snapshot_leaves_state_alone(data: bytes, message: str) -> None:
    feed = filled(2)
    root = feed.state_root()
    with pytest.raises(MalformedSnapshot) as info:
        feed.restore(data)
    assert str(info.value) == message
    assert feed.state_root() == root and len(feed) == 2
