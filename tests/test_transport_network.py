"""Many in-process nodes on loopback: catalog convergence, churn, a slow reader.

Seeded (the seed is printed; replay with `--sim-seed S`); time is MockClock virtual time, so
TTL expiry and backoff take no real time.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
from test_transport_helpers import (
    committee,
    keys,
    raw_client,
    start_nodes,
    wait_all,
    wall_clock,
)

from coalitiond.primitives.crypto import SigningKey
from coalitiond.transport.link import LinkTiming
from coalitiond.transport.manager import ConnectionManager, TransportConfig
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.router import Channel
from coalitiond.transport.session import Session

pytestmark = pytest.mark.live


async def _runner(m: ConnectionManager, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    with trio.CancelScope() as cs:
        async with trio.open_nursery() as inner:
            await inner.start(m.run)
            task_status.started(cs)


class Net:
    """A committee plus readers; nodes can be stopped, crashed and restarted."""

    def __init__(self, nursery: trio.Nursery, members: list[SigningKey],
                 readers: list[SigningKey], seed: int) -> None:
        self.nursery = nursery
        self.spec = committee(members)
        self.members, self.readers = members, readers
        self.rng = random.Random(seed)
        self.nodes: dict[bytes, ConnectionManager] = {}
        self.scopes: dict[bytes, trio.CancelScope] = {}

    async def start(self, key: SigningKey) -> ConnectionManager:
        bootstrap = []
        if key not in self.members:
            live = [m for m in self.members if m.public in self.nodes]
            target = self.nodes[self.rng.choice(live).public]
            bootstrap = [("127.0.0.1", target.listen_port or 0)]
        m = ConnectionManager(key, self.spec, {}, bootstrap=bootstrap,
                              rng=random.Random(self.rng.random()), wall_clock=wall_clock)
        self.scopes[key.public] = await self.nursery.start(_runner, m)
        self.nodes[key.public] = m
        for other in self.nodes.values():
            if other is not m and other.peer_id in self.spec.members:
                m.set_member_address(other.peer_id, ("127.0.0.1", other.listen_port or 0))
            if m.peer_id in self.spec.members and other is not m:
                other.set_member_address(m.peer_id, ("127.0.0.1", m.listen_port or 0))
        return m

    async def stop(self, key: SigningKey) -> None:
        await self.nodes.pop(key.public).stop()

    def crash(self, key: SigningKey) -> None:
        del self.nodes[key.public]
        self.scopes.pop(key.public).cancel()

    async def converged(self) -> None:
        want = set(self.nodes)
        await wait_all(list(self.nodes.values()),
                       lambda n: n.catalog is not None and set(n.catalog.peer_ids()) == want)


def campaign(request: pytest.FixtureRequest, sim_seeds: list[int], default: int) -> list[int]:
    """A few seeds by default; every seed when `--sim-seeds N` asks for a long campaign."""
    return sim_seeds if request.config.getoption("--sim-seeds") else sim_seeds[:default]


async def test_ten_nodes_converge_on_a_full_catalog(
        autojump_clock: object, sim_seeds: list[int], request: pytest.FixtureRequest) -> None:
    for seed in campaign(request, sim_seeds, 3):
        print("seed", seed)
        ks = keys(10, salt=seed % 200)
        async with trio.open_nursery() as n:
            net = Net(n, ks[:4], ks[4:], seed)
            for k in ks:
                await net.start(k)
            await net.converged()
            for node in net.nodes.values():
                assert node.catalog is not None and len(node.catalog) == 10
            # Members form a full mesh; each reader holds exactly one link.
            for k in ks[:4]:
                member = net.nodes[k.public]
                await member.wait_until(lambda m=member: len(m.member_links()) == 3)
            for k in ks[4:]:
                assert len(net.nodes[k.public].links) == 1
            n.cancel_scope.cancel()


async def test_churn_converges(autojump_clock: object, sim_seeds: list[int],
                               request: pytest.FixtureRequest) -> None:
    for seed in campaign(request, sim_seeds, 2):
        print("seed", seed)
        await _churn(seed)


async def _churn(seed: int) -> None:
    ks = keys(7, salt=100 + seed % 100)
    members, readers = ks[:4], ks[4:]
    async with trio.open_nursery() as n:
        net = Net(n, members, readers, seed)
        for k in ks:
            await net.start(k)
        await net.converged()
        start = trio.current_time()
        # A reader leaves politely (signed departure), a member and a reader crash.
        await net.stop(readers[0])
        net.crash(members[3])
        net.crash(readers[1])
        await net.converged()  # departure at once; crashed records after their TTL
        assert trio.current_time() - start >= 250  # the crashed ones had to expire
        for node in net.nodes.values():
            assert members[3].public not in node.links
        # Everyone comes back (new runs: new start ids, new ports) and converges again.
        for k in (members[3], readers[0], readers[1]):
            await net.start(k)
        await net.converged()
        back = net.nodes[members[3].public]
        await back.wait_until(lambda: len(back.member_links()) == 3)
        n.cancel_scope.cancel()


async def test_one_slow_reader_does_not_stall_the_others(autojump_clock: object) -> None:
    """Member D finishes the handshake and then never reads. A broadcasts 400 × 64 KiB:
    B and C get every message in order; D's queue overflows (dropped, counted) and D is
    disconnected as too slow."""
    A, B, C, D = keys(4, salt=42)
    spec = committee([A, B, C, D])
    cfg = TransportConfig(timing=LinkTiming(read_timeout=10_000, send_queue=32))
    async with trio.open_nursery() as n:
        a, b, c = await start_nodes(n, [A, B, C], spec, config=cfg)
        rec = PeerRecord(D.public, spec.network_id, 1, 1, int(wall_clock())).sign(D)
        slow = Session(initiator=True, identity=D, network_id=spec.network_id,
                       signed_record=rec)
        _stream, peer, _ = await raw_client(a.listen_port or 0, slow)  # kept open, never read
        assert peer is not None
        await a.wait_until(lambda: {B.public, C.public, D.public} <= set(a.links))
        d_link = a.links[D.public]
        rx_b, rx_c = b.router.receive(Channel.CONSENSUS), c.router.receive(Channel.CONSENSUS)
        for i in range(400):
            payload = i.to_bytes(4, "big") * 16384
            await a.router.broadcast(Channel.CONSENSUS, payload)
            assert await rx_b.receive() == (A.public, payload)
            assert await rx_c.receive() == (A.public, payload)
        assert d_link.dropped > 0
        await a.wait_until(lambda: D.public not in a.links)
        assert d_link.closed is not None and d_link.closed.label == "too_slow"
        assert {B.public, C.public} <= set(a.links)
        n.cancel_scope.cancel()


async def test_graceful_departure_removes_the_record_before_its_ttl(
        autojump_clock: object) -> None:
    ks = keys(4, salt=77)
    async with trio.open_nursery() as n:
        net = Net(n, ks[:3], ks[3:], seed=1)
        for k in ks:
            await net.start(k)
        await net.converged()
        start = trio.current_time()
        await net.stop(ks[3])
        await net.converged()
        # Removed by the signed departure, long before the 300 s TTL would have.
        assert trio.current_time() - start < 10
        await net.stop(ks[2])  # a member leaves too
        await net.converged()
        assert trio.current_time() - start < 20
        n.cancel_scope.cancel()


async def test_reader_whose_bootstrap_member_died_finds_another(autojump_clock: object) -> None:
    ks = keys(4, salt=91)
    members, reader = ks[:3], ks[3]
    async with trio.open_nursery() as n:
        net = Net(n, members, [reader], seed=5)
        for k in ks:
            await net.start(k)
        await net.converged()
        r = net.nodes[reader.public]
        (first,) = r.member_links()
        net.crash(next(k for k in members if k.public == first))
        # It dials a member at the address from that member's signed record.
        await r.wait_until(lambda: bool(r.member_links()) and first not in r.links)
        await net.converged()
        n.cancel_scope.cancel()
