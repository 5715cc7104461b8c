"""Peer records and the catalog: pure, no sockets. Each refusal asserts its exact error."""

from __future__ import annotations

import random

import pytest
from test_transport_helpers import keys

from coalitiond.primitives.committee import network_id
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import SignatureError
from coalitiond.transport.catalog import Catalog, CatalogError, Outcome
from coalitiond.transport.manager import backoff_delay
from coalitiond.transport.peer_record import (
    Departure,
    PeerRecord,
    PeerRecordError,
    parse_departure,
    parse_record,
)

NET = network_id("catalog-test")
OWN, P, Q = keys(3, salt=7)
NOW = 1_700_000_000


def rec(key: SigningKey, start: int = 1, counter: int = 1, issued: int = NOW, **kw: object) -> bytes:
    return PeerRecord(key.public, NET, start, counter, issued, **kw).sign(key)  # type: ignore[arg-type]


def catalog(**kw: int) -> Catalog:
    own = PeerRecord(OWN.public, NET, 1, 1, NOW)
    return Catalog(NET, own, own.sign(OWN), **kw)


def test_record_roundtrip_and_golden_shape() -> None:
    r = PeerRecord(P.public, NET, 5, 9, NOW, addresses=(("127.0.0.1", 4000),), roles=("member",),
                   committees=(b"\x01" * 32,), tickets={"tdx": b"quote"})
    signed = r.sign(P)
    assert parse_record(signed) == r
    body, sig = decode(signed)
    assert decode(body)[:2] == ["peer-record", 1] and len(sig) == 64


def test_tampered_record_signature_is_refused() -> None:
    body, _sig = decode(rec(P))
    forged = encode([body, bytes(64)])
    with pytest.raises(SignatureError, match="bad coalitiond/peer-record/v1 signature"):
        parse_record(forged)
    # P's body signed by Q: the record names P, so Q's signature does not verify.
    with pytest.raises(SignatureError):
        parse_record(encode([body, Q.sign(b"coalitiond/peer-record/v1", body)]))


def test_malformed_record_is_refused() -> None:
    with pytest.raises(PeerRecordError, match="signed form must be"):
        parse_record(encode([b"x"]))
    body = encode(["peer-record", 1, P.public])
    with pytest.raises(PeerRecordError, match="11-element array"):
        parse_record(encode([body, P.sign(b"coalitiond/peer-record/v1", body)]))


def test_newest_version_wins() -> None:
    c = catalog()
    assert c.upsert(rec(P, 1, 1), NOW)[0] is Outcome.NEW
    assert c.upsert(rec(P, 1, 3), NOW)[0] is Outcome.UPDATED
    assert c.upsert(rec(P, 1, 2), NOW)[0] is Outcome.UNCHANGED
    assert c.upsert(rec(P, 1, 3), NOW)[0] is Outcome.UNCHANGED
    # A new run (larger start id) beats any counter of the old run.
    assert c.upsert(rec(P, 2, 1), NOW)[0] is Outcome.UPDATED
    got = c.get(P.public)
    assert got is not None and got.version == (2, 1)


def test_future_clock_is_refused() -> None:
    c = catalog(max_future_skew=30)
    assert c.upsert(rec(P, issued=NOW + 30), NOW)[0] is Outcome.NEW
    with pytest.raises(CatalogError) as e:
        c.upsert(rec(Q, issued=NOW + 31), NOW)
    assert e.value.label == "future_clock"
    assert str(e.value) == (f"record of {Q.public.hex()[:16]}… is dated 31s in the future "
                            "(limit 30s)")


def test_stale_ignored_and_expired() -> None:
    c = catalog(ttl=300)
    assert c.upsert(rec(P, issued=NOW - 301), NOW)[0] is Outcome.STALE
    assert c.upsert(rec(P, issued=NOW - 100), NOW)[0] is Outcome.NEW
    assert c.expire(NOW + 200) == []
    assert c.expire(NOW + 201) == [P.public]
    assert P.public not in c and OWN.public in c  # never expires itself


def test_wrong_network_and_full_catalog() -> None:
    c = catalog(max_entries=2)
    other = PeerRecord(P.public, network_id("x"), 1, 1, NOW).sign(P)
    with pytest.raises(CatalogError, match="record names another network"):
        c.upsert(other, NOW)
    c.upsert(rec(P), NOW)
    with pytest.raises(CatalogError, match="catalog holds 2 peers"):
        c.upsert(rec(Q), NOW)


def test_full_catalog_makes_room_for_a_member_only() -> None:
    own = PeerRecord(OWN.public, NET, 1, 1, NOW)
    c = Catalog(NET, own, own.sign(OWN), max_entries=3, protected=frozenset({Q.public}))
    stranger, other = keys(2, salt=8)
    c.upsert(rec(stranger, issued=NOW - 10), NOW)
    c.upsert(rec(other), NOW)
    with pytest.raises(CatalogError, match="catalog holds 3 peers"):
        c.upsert(rec(P), NOW)  # not protected: refused
    assert c.upsert(rec(Q), NOW)[0] is Outcome.NEW  # a member evicts the oldest stranger
    assert stranger.public not in c and other.public in c and Q.public in c


def test_signed_departure_removes_and_tombstone_blocks_old_gossip() -> None:
    c = catalog()
    c.upsert(rec(P, 1, 4), NOW)
    dep = Departure(P.public, NET, 1, 4, NOW).sign(P)
    assert c.depart(dep, NOW)[0] is True
    assert P.public not in c
    # Old gossip still in flight cannot bring the record back...
    assert c.upsert(rec(P, 1, 4), NOW)[0] is Outcome.UNCHANGED
    assert P.public not in c
    # ...but a rejoin with a newer run does.
    assert c.upsert(rec(P, 2, 1), NOW + 5)[0] is Outcome.NEW


def test_departure_older_than_the_record_is_ignored_and_forgery_refused() -> None:
    c = catalog()
    c.upsert(rec(P, 2, 1), NOW)
    assert c.depart(Departure(P.public, NET, 1, 9, NOW).sign(P), NOW)[0] is False
    assert P.public in c
    body, _ = decode(Departure(P.public, NET, 2, 1, NOW).sign(P))
    with pytest.raises(SignatureError, match="bad coalitiond/peer-departure/v1 signature"):
        parse_departure(encode([body, Q.sign(b"coalitiond/peer-departure/v1", body)]))


def test_backoff_is_exponential_jittered_and_capped() -> None:
    seed = 1234
    print("seed", seed)
    rng = random.Random(seed)
    delays = [backoff_delay(a, 0.25, 30.0, rng) for a in range(12)]
    for a, d in enumerate(delays):
        ceiling = min(30.0, 0.25 * 2**a)
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 30.0
    # Same seed, same schedule: a failure can be replayed.
    rng2 = random.Random(seed)
    assert delays == [backoff_delay(a, 0.25, 30.0, rng2) for a in range(12)]
