"""Issue 20's bounds one by one: catalog bytes and reader records, receive-queue bytes,
send-queue bytes (per link and the anonymous readers' pool), one catalog reply in flight,
anonymous reader admission, the `[transport]` config section. Pure where the rule is pure;
real Noise links on loopback under MockClock where it is not."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
from node_harness import write_committee
from test_transport_catalog import NET, NOW, OWN, P, Q, catalog, rec
from test_transport_helpers import (
    committee,
    keys,
    metric,
    raw_client,
    start_nodes,
    wall_clock,
)

from coalitiond.config import load_config
from coalitiond.node.member import transport_config
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import ConfigError
from coalitiond.transport.catalog import CatalogError, Outcome
from coalitiond.transport.limits import KindLimit
from coalitiond.transport.link import LinkTiming
from coalitiond.transport.manager import TransportConfig
from coalitiond.transport.peer_record import Departure, PeerRecord
from coalitiond.transport.readers import Slot, admit_anonymous
from coalitiond.transport.router import Channel, Router
from coalitiond.transport.session import Session

pytestmark = pytest.mark.live

MiB = 1024 * 1024

# -- the catalog -----------------------------------------------------------------------------


def test_a_reader_relays_only_its_own_record_and_departure() -> None:
    c = catalog()
    with pytest.raises(CatalogError, match="relayed by reader") as e:
        c.upsert(rec(Q), NOW, sender=P.public)
    assert e.value.label == "not_admitted" and Q.public not in c
    assert c.upsert(rec(P), NOW, sender=P.public)[0] is Outcome.NEW
    assert c.upsert(rec(Q), NOW)[0] is Outcome.NEW  # from a member's link: accepted
    dep = Departure(Q.public, NET, 1, 1, NOW).sign(Q)
    with pytest.raises(CatalogError, match=r"departure of .* relayed by reader"):
        c.depart(dep, NOW, sender=P.public)
    assert Q.public in c


def test_a_members_record_may_come_from_anyone() -> None:
    own = PeerRecord(OWN.public, NET, 1, 1, NOW)
    from coalitiond.transport.catalog import Catalog
    c = Catalog(NET, own, own.sign(OWN), protected=frozenset({Q.public}))
    assert c.upsert(rec(Q), NOW, sender=P.public)[0] is Outcome.NEW


def test_a_readers_record_is_small() -> None:
    c = catalog(max_reader_record=1000)
    big = rec(P, tickets={"x": b"y" * 2000})
    with pytest.raises(CatalogError, match=r"is \d+ bytes \(limit 1000\)") as e:
        c.upsert(big, NOW, sender=P.public)
    assert e.value.label == "record_too_large" and P.public not in c


def test_the_catalog_is_bounded_in_bytes() -> None:
    c = catalog(max_bytes=20_000, max_reader_record=60_000)
    base = c.bytes_held
    first = rec(P, tickets={"x": b"a" * 9000})
    c.upsert(first, NOW)
    assert c.bytes_held == base + len(first)
    with pytest.raises(CatalogError, match="catalog holds") as e:
        c.upsert(rec(Q, tickets={"x": b"b" * 11_000}), NOW)
    assert e.value.label == "catalog_full" and c.bytes_held == base + len(first)
    # A newer, smaller version of P replaces the old one and its bytes.
    smaller = rec(P, counter=2)
    c.upsert(smaller, NOW)
    assert c.bytes_held == base + len(smaller)


# -- reader admission (pure) -----------------------------------------------------------------

def test_anonymous_pool_per_address_share_and_idle_eviction() -> None:
    def slots(*spec: tuple[int, str, float]) -> list[Slot]:
        return [Slot(bytes([i]) * 32, host, last) for i, host, last in spec]

    kw = {"max_readers": 3, "max_per_address": 2, "idle_timeout": 60.0}
    assert admit_anonymous(slots((1, "a", 0)), "a", 10, **kw).refusal is None
    full_a = admit_anonymous(slots((1, "a", 0), (2, "a", 5)), "a", 10, **kw)
    assert full_a.refusal == ("not a committee member and all 2 anonymous reader slots of "
                              "address a are taken")
    # Another address still gets in; a full pool refuses everyone…
    assert admit_anonymous(slots((1, "a", 0), (2, "a", 5)), "b", 10, **kw).refusal is None
    pool = slots((1, "a", 0), (2, "a", 5), (3, "b", 7))
    assert admit_anonymous(pool, "c", 59, **kw).refusal == (
        "not a committee member and all 3 anonymous reader slots are taken")
    # …until a slot has been idle for the timeout: the longest idle one makes room.
    assert admit_anonymous(pool, "c", 60, **kw).evict == bytes([1]) * 32
    assert admit_anonymous(pool, "c", 70, **kw).evict == bytes([1]) * 32  # the idlest
    # A full address share evicts among that address's readers only.
    share = slots((1, "b", 0), (2, "a", 5), (3, "a", 7))
    assert admit_anonymous(share, "a", 100, **kw).evict == bytes([2]) * 32
    assert admit_anonymous(share, "a", 64, **kw).refusal is not None


# -- receive queues --------------------------------------------------------------------------

async def test_a_channels_receive_queue_is_bounded_in_bytes() -> None:
    router = Router(dict, frozenset(), 10_000, recv_queue=100, recv_queue_bytes=1000)
    sender = b"s" * 32
    assert router.deliver(Channel.CLIENT, sender, b"a" * 400)
    assert router.deliver(Channel.CLIENT, sender, b"b" * 400)
    before = metric("transport_recv_dropped_total", channel="client")
    assert not router.deliver(Channel.CLIENT, sender, b"c" * 400)  # 1200 > 1000
    assert metric("transport_recv_dropped_total", channel="client") == before + 1
    assert router.queued_bytes() == 800
    rx = router.receive(Channel.CLIENT)
    assert await rx.receive() == (sender, b"a" * 400)  # taking it frees its bytes
    assert router.queued_bytes() == 400
    assert router.deliver(Channel.CLIENT, sender, b"d" * 400)
    assert [rx.receive_nowait()[1][:1] for _ in range(2)] == [b"b", b"d"]


# -- send queues -----------------------------------------------------------------------------

A, B = keys(2, salt=30)
SPEC = committee([A, B])


def reader(i: int) -> tuple[SigningKey, Session]:
    key = SigningKey(bytes([0xDD, i]) * 16)
    record = PeerRecord(key.public, SPEC.network_id, 1, 1, int(wall_clock())).sign(key)
    return key, Session(initiator=True, identity=key, network_id=SPEC.network_id,
                        signed_record=record)


async def test_send_queues_are_bounded_in_bytes_per_link_and_for_all_strangers(
        autojump_clock: object) -> None:
    """Two anonymous readers never read. The member queues 256 KiB replies to each: a
    reader's link stops at its own budget, and both together at the anonymous pool."""
    cfg = TransportConfig(reader_send_queue_bytes=3 * MiB, anonymous_send_bytes=4 * MiB,
                          timing=LinkTiming(read_timeout=10_000, write_timeout=10_000))
    async with trio.open_nursery() as n:
        (node,) = await start_nodes(n, [A], SPEC, config=cfg)
        streams = []
        for i in range(2):
            key, s = reader(i)
            stream, peer, _ = await raw_client(node.listen_port or 0, s)
            assert peer is not None
            streams.append(stream)
            await node.wait_until(lambda key=key: key.public in node.links)
        r0, r1 = (node.links[reader(i)[0].public] for i in range(2))
        reply = b"r" * (256 * 1024)
        sent0 = sum(node.router.send_nowait(Channel.CLIENT, r0.peer_id, reply)
                    for _ in range(100))
        assert r0.queued_bytes <= 3 * MiB and r0.dropped > 0
        sent1 = sum(node.router.send_nowait(Channel.CLIENT, r1.peer_id, reply)
                    for _ in range(100))
        assert r1.dropped > 0
        assert node.anonymous_pool.used == r0.queued_bytes + r1.queued_bytes <= 4 * MiB
        # What was refused was refused at once: the socket buffers took at most a few MiB.
        assert sent0 < 100 and sent1 < 100
        held = node.memory_held()
        assert held["send_queues"] == r0.queued_bytes + r1.queued_bytes + sum(
            link.queued_bytes for p, link in node.links.items() if p not in (r0.peer_id,
                                                                               r1.peer_id))
        for stream in streams:
            await stream.aclose()
        await node.wait_until(lambda: not node.reader_links())
        assert node.anonymous_pool.used == 0  # closed links gave their bytes back
        n.cancel_scope.cancel()


async def test_one_catalog_reply_per_peer_is_in_flight(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        (node,) = await start_nodes(n, [A], SPEC)
        key, s = reader(7)
        stream, _, _ = await raw_client(node.listen_port or 0, s)
        await node.wait_until(lambda: key.public in node.links)
        before = metric("transport_discovery_rejected_total", reason="catalog_reply_pending")
        for _ in range(5):  # one write: handled in one go, before the writer runs
            s.send_message(b"\x00" + encode(["catalog", [], True]))
        # Then a newer record of our own: once the member has it, it has handled the five.
        newer = PeerRecord(key.public, SPEC.network_id, 1, 2, int(wall_clock())).sign(key)
        s.send_message(b"\x00" + encode(["announce", newer]))
        await stream.send_all(s.data_to_send())
        await node.wait_until(lambda: node.catalog is not None and (
            (r := node.catalog.get(key.public)) is not None and r.counter == 2))
        assert metric("transport_discovery_rejected_total",
                      reason="catalog_reply_pending") >= before + 4
        assert key.public in node.links
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.aclose()
        n.cancel_scope.cancel()


# -- the [transport] config section ----------------------------------------------------------

def _with_transport(tmp_path: Path, text: str) -> Path:
    committee_dir = write_committee(tmp_path, 1)
    path = committee_dir.configs[0]
    path.write_text(path.read_text(encoding="utf-8") + "\n[transport]\n" + text,
                    encoding="utf-8")
    return path


def test_transport_section_sets_the_limits(tmp_path: Path) -> None:
    extra = "ab" * 32
    path = _with_transport(tmp_path, f'reserved_readers = ["{extra}"]\n'
                           "max_anonymous_readers = 4\nmax_readers_per_address = 2\n"
                           "reader_idle_timeout_s = 30\nsend_queue_bytes = 8388608\n"
                           "ping_per_s = 2\nping_burst = 4\n")
    config = load_config(path)
    t = transport_config(config)
    # The committee's ACL clients are reserved too (write_committee lists the operator).
    assert t.reserved_readers == frozenset({bytes.fromhex(extra), *config.committee.acl.clients})
    assert config.committee.acl.clients
    assert (t.max_readers, t.max_readers_per_address, t.reader_idle_timeout) == (4, 2, 30.0)
    assert t.timing.send_queue_bytes == 8 * MiB
    assert t.timing.rates.ping == KindLimit(2.0, 4.0)
    assert t.timing.rates.client == TransportConfig().timing.rates.client
    # Without the section: the transport's defaults, ACL clients reserved.
    plain = load_config(write_committee(tmp_path / "plain", 1).configs[0])
    d = transport_config(plain)
    assert (d.max_readers, d.timing.send_queue_bytes) == (16, 32 * MiB)


@pytest.mark.parametrize(("text", "message"), [
    ("send_queue_bytes = 1000\n",
     "transport.send_queue_bytes: must be at least 4194304, got 1000"),
    ("ping_per_s = 2\n", "transport.ping_burst: set together with ping_per_s / ping_burst"),
    ("max_readers = 3\n", "transport.max_readers: unknown key"),
    ('reserved_readers = ["ab"]\n', "transport.reserved_readers[0]: expected 64 hex"),
])
def test_transport_section_refusals_name_the_key(tmp_path: Path, text: str,
                                                 message: str) -> None:
    path = _with_transport(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)
