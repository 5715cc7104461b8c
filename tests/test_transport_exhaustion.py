"""Issue 20's scenarios: a peer with throw-away keys — no membership, no ticket — cannot
exhaust a member. Real Noise links over loopback TCP; scenarios 2 and 3 and the unit cases
run under MockClock (autojump), scenario 1 against a live in-process committee (real
SQLite, real consensus), waiting on events only.

1. junk peer records + catalog requests from throw-away reader keys: the bytes the member
   holds for peers stay bounded (≤ 64 MiB, measured deterministically from its queues and
   catalog, not RSS) and the committee keeps finalising;
2. 32 throw-away keys that keep their links alive do not lock a configured client out;
3. a PING flood is rate-limited and the link closed with RATE_LIMITED (13).
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from node_harness import all_reach, in_process, write_committee
from test_transport_helpers import (
    committee,
    keys,
    metric,
    raw_client,
    read_until_closed,
    start_nodes,
    wait_close,
    wall_clock,
)

from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.transport.framing import CloseReason
from coalitiond.transport.limits import KindLimit, RateLimits
from coalitiond.transport.link import LinkTiming
from coalitiond.transport.manager import ConnectionManager, TransportConfig
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.router import Channel
from coalitiond.transport.session import Session

pytestmark = pytest.mark.live

MiB = 1024 * 1024
A, B = keys(2, salt=20)
SPEC = committee([A, B])
NET = SPEC.network_id


def throwaway(i: int, salt: int = 0) -> SigningKey:
    return SigningKey(bytes([0xEE, salt, i >> 8, i & 0xFF]) * 8)


def reader_session(key: SigningKey, net: bytes, *, ticket: int = 0,
                   issued_at: int | None = None) -> Session:
    tickets = {"junk": b"j" * ticket} if ticket else {}
    issued = int(wall_clock()) if issued_at is None else issued_at
    rec = PeerRecord(key.public, net, 1, 1, issued, tickets=tickets).sign(key)
    return Session(initiator=True, identity=key, network_id=net, signed_record=rec)


async def serve(nursery: trio.Nursery, config: TransportConfig | None = None
                ) -> ConnectionManager:
    (node,) = await start_nodes(nursery, [A], SPEC, config=config)
    return node


def held_bytes(node: ConnectionManager) -> int:
    """Bytes the transport holds for peers (queues and catalog). Falls back to reading the
    queues' items where `memory_held` does not exist (so the scenario can be run against
    the code before issue 20 and show what it held)."""
    if hasattr(node, "memory_held"):
        return sum(node.memory_held().values())
    total = sum(len(s) for s in node.catalog.snapshot()) if node.catalog else 0
    for link in node.links.values():
        for item in link._queue_recv._state.data:  # type: ignore[attr-defined]
            total += len(item) if isinstance(item, bytes) else 0
    return total


# -- scenario 1 ------------------------------------------------------------------------------

JUNK_RECORDS = 100
CATALOG_REQUESTS = 60
ATTACKERS = 3
BOUND = 64 * MiB


async def test_junk_records_and_catalog_requests_leave_the_member_bounded(
        tmp_path: Path) -> None:
    """Three throw-away reader keys each announce a 60 kB record of their own and 100 junk
    60 kB records of other throw-away keys, then send 60 catalog requests and never read.
    Before issue 20 the member catalogued the junk and queued ~6 MB of catalog pages per
    request (bounded only at 256 messages per link): hundreds of MiB. Now the junk is
    refused (not its signer's link), a reader's record is small, one catalog reply is in
    flight per peer, catalog requests are rate-limited, and every queue is bounded in
    bytes; the committee keeps finalising throughout."""
    committee_dir = write_committee(tmp_path, 3)
    with trio.fail_after(120):
        async with in_process(committee_dir) as running:
            members = running.members()
            await all_reach(members, 1)
            target = members[0].manager
            assert target is not None and target.listen_port is not None
            net = target.network_id
            junk = [PeerRecord(throwaway(j, 1).public, net, 1, 1, int(time.time()),
                               tickets={"junk": b"x" * 59_000}).sign(throwaway(j, 1))
                    for j in range(JUNK_RECORDS)]
            peak = [0]
            seen: dict[bytes, int] = {}
            original = target._on_message

            def measured(link: Any, message: bytes) -> None:
                original(link, message)
                seen[link.peer_id] = seen.get(link.peer_id, 0) + 1
                peak[0] = max(peak[0], held_bytes(target))
                target._notify()

            target._on_message = measured  # type: ignore[method-assign]
            attackers = [throwaway(i, 2) for i in range(ATTACKERS)]
            streams = []
            for key in attackers:
                s = reader_session(key, net, ticket=59_000, issued_at=int(time.time()))
                stream, peer, _ = await raw_client(target.listen_port, s)
                assert peer is not None
                for signed in junk:
                    s.send_message(b"\x00" + encode(["announce", signed]))
                for _ in range(CATALOG_REQUESTS):
                    s.send_message(b"\x00" + encode(["catalog", [], True]))
                await stream.send_all(s.data_to_send())
                streams.append(stream)  # kept open, never read

            def done(key: SigningKey) -> bool:
                return (seen.get(key.public, 0) >= JUNK_RECORDS + CATALOG_REQUESTS
                        or (key.public in seen and key.public not in target.links)
                        or peak[0] > BOUND)

            for key in attackers:
                await target.wait_until(lambda key=key: done(key))
            assert peak[0] <= BOUND, f"the member held {peak[0] / MiB:.0f} MiB for peers"
            # The committee kept finalising while (and after) it was attacked.
            height = max(m.height for m in members)
            await all_reach(members, height + 3)
            # How it was kept bounded: no junk record was catalogued, the flood of catalog
            # requests closed each attacker's link.
            assert target.catalog is not None
            assert not any(throwaway(j, 1).public in target.catalog for j in range(5))
            closes = {bytes(p): c.label for p, c in target.closes if p is not None}
            assert all(closes.get(k.public) == "rate_limited" for k in attackers), closes
            for stream in streams:
                await stream.aclose()


# -- scenario 2 ------------------------------------------------------------------------------

async def test_throwaway_readers_cannot_lock_a_configured_client_out(
        autojump_clock: object) -> None:
    """32 throw-away reader keys link to a member and keep their links alive (keepalive
    PINGs, catalog exchange). Before issue 20 they took all 32 reader slots and the
    operator's client was refused for as long as they stayed. Now the client's key is
    configured, so it has a reserved slot; the strangers share the anonymous pool (8 per
    address here, all being on 127.0.0.1)."""
    client_key = throwaway(999, 3)
    cfg = TransportConfig(reserved_readers=frozenset({client_key.public}))
    async with trio.open_nursery() as n:
        node = await serve(n, cfg)
        port = node.listen_port or 0
        refused_before = metric("transport_refused_total", reason="unknown_peer")
        strangers = []
        for i in range(32):
            m = ConnectionManager(throwaway(i, 3), SPEC, {}, bootstrap=[("127.0.0.1", port)],
                                  rng=random.Random(i), wall_clock=wall_clock)
            await n.start(m.run)
            strangers.append(m)
        # Every stranger has tried at least once: some hold slots, the rest were refused.
        await node.wait_until(lambda: len(node.reader_links()) + metric(
            "transport_refused_total", reason="unknown_peer") - refused_before >= 32)
        anonymous = node.reader_links()
        assert len(anonymous) == cfg.max_readers_per_address == 8
        refusal = next(c for _, c in reversed(node.closes) if c.label == "unknown_peer")
        assert refusal.detail == ("not a committee member and all 8 anonymous reader slots "
                                  "of address 127.0.0.1 are taken")
        client = ConnectionManager(client_key, SPEC, {}, bootstrap=[("127.0.0.1", port)],
                                   rng=random.Random(7), wall_clock=wall_clock)
        started = trio.current_time()
        await n.start(client.run)
        with trio.fail_after(5):  # virtual seconds: the first dial gets in
            await node.wait_until(lambda: client_key.public in node.links)
        assert trio.current_time() - started < 1
        # The strangers only ping and exchange catalogs: idle. After the idle timeout a
        # newcomer (a stranger redialling) takes the slot of the one idle the longest.
        with trio.fail_after(300):  # virtual seconds
            closed = await wait_close(node, "idle")
        assert closed.reason is CloseReason.IDLE
        assert closed.detail == "no request for 60s and a new reader needs the slot"
        assert client_key.public in node.links  # reserved: never evicted
        assert len([p for p in node.reader_links() if p != client_key.public
                    and node.links[p].closed is None]) <= 8
        n.cancel_scope.cancel()


async def test_a_reader_that_sends_requests_is_not_idle(autojump_clock: object) -> None:
    cfg = TransportConfig(max_readers=1, reader_idle_timeout=60.0)
    async with trio.open_nursery() as n:
        node = await serve(n, cfg)
        port = node.listen_port or 0
        busy = reader_session(throwaway(1, 4), NET)
        stream, peer, _ = await raw_client(port, busy)
        assert peer is not None
        await node.wait_until(lambda: throwaway(1, 4).public in node.links)
        for _ in range(3):  # a request every 25 s (and so traffic: no read timeout)
            await trio.sleep(25)
            busy.send_message(bytes([Channel.CLIENT]) + b"request")
            await stream.send_all(busy.data_to_send())
        newcomer = reader_session(throwaway(2, 4), NET)
        s2, _, events = await raw_client(port, newcomer)
        _, closed = await read_until_closed(s2, newcomer, events)
        assert closed.reason is CloseReason.UNKNOWN_PEER
        assert closed.detail == "not a committee member and all 1 anonymous reader slots are taken"
        assert throwaway(1, 4).public in node.links
        n.cancel_scope.cancel()


# -- scenario 3 ------------------------------------------------------------------------------

async def test_a_ping_flood_is_rate_limited_then_closed(autojump_clock: object) -> None:
    """20,000 PINGs at once (the issue measured all accepted in 0.1 s): over the PING bucket
    (1/s, burst 10) they are dropped and counted; past another burst's worth the link is
    closed with RATE_LIMITED and its documented detail."""
    async with trio.open_nursery() as n:
        node = await serve(n)
        key = throwaway(5, 5)
        s = reader_session(key, NET)
        stream, peer, _ = await raw_client(node.listen_port or 0, s)
        assert peer is not None
        await node.wait_until(lambda: key.public in node.links)
        before = metric("transport_rate_limited_total", kind="ping")
        for _ in range(20_000):
            s.send_ping()
        flood = s.data_to_send()

        async def send_flood() -> None:
            # The member hangs up mid-flood: the rest of the write fails, as it should.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(flood)

        n.start_soon(send_flood)
        with trio.fail_after(20):  # virtual seconds; before issue 20 no close ever came
            closed = await wait_close(node, "rate_limited")
        assert closed.reason is CloseReason.RATE_LIMITED and not closed.by_peer
        assert closed.detail == "ping messages above 1/s (burst 10)"
        over = metric("transport_rate_limited_total", kind="ping") - before
        assert 11 <= over < 100  # dropped ones and the one that closed; not 20,000
        assert key.public not in node.links
        n.cancel_scope.cancel()


async def test_each_channel_has_its_own_rate_limit(autojump_clock: object) -> None:
    """A configured per-kind limit: within it messages arrive; over it they are dropped
    and counted; past twice the burst the link closes."""
    rates = RateLimits(client=KindLimit(1.0, 2.0))
    cfg = TransportConfig(timing=LinkTiming(rates=rates))
    async with trio.open_nursery() as n:
        node = await serve(n, cfg)
        key = throwaway(6, 6)
        s = reader_session(key, NET)
        stream, _, events = await raw_client(node.listen_port or 0, s)
        await node.wait_until(lambda: key.public in node.links)
        before = metric("transport_rate_limited_total", kind="client")
        # One write, so all five arrive at the same (virtual) instant: two within the
        # bucket, two dropped, the fifth closes.
        for i in range(5):
            s.send_message(bytes([Channel.CLIENT]) + bytes([i]))
        await stream.send_all(s.data_to_send())
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.RATE_LIMITED
        assert closed.detail == "client messages above 1/s (burst 2)"
        assert metric("transport_rate_limited_total", kind="client") == before + 3
        rx = node.router.receive(Channel.CLIENT)
        assert [rx.receive_nowait() for _ in range(2)] == [(key.public, b"\x00"),
                                                           (key.public, b"\x01")]
        with pytest.raises(trio.WouldBlock):
            rx.receive_nowait()
        n.cancel_scope.cancel()
