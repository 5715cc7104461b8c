"""Shared helpers for the transport tests (this module holds no tests itself).

Nodes run on 127.0.0.1 with ephemeral ports. Tests run under trio's MockClock with
autojump, so timeouts, keepalives and backoff happen in virtual time; peer-record
timestamps come from `wall_clock`, derived from the same virtual clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.metrics import sample_value
from coalitiond.transport.link import handshake
from coalitiond.transport.manager import ConnectionManager, TransportConfig
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.session import Closed, Event, MessageReceived, Session

pytestmark = pytest.mark.live

NETWORK = "transport-test-net"
EPOCH_UNIX = 1_700_000_000


def wall_clock() -> float:
    return EPOCH_UNIX + trio.current_time()


def keys(n: int, salt: int = 0) -> list[SigningKey]:
    return [SigningKey(bytes([salt, i + 1]) * 16) for i in range(n)]


def committee(members: Sequence[SigningKey], network: str = NETWORK) -> CommitteeSpec:
    return CommitteeSpec(network, "feed", "transport-test", tuple(k.public for k in members),
                         fault_bound=(len(members) + 1) // 2 - 1)


def signed_record(key: SigningKey, network_id: bytes, *, counter: int = 1,
                  issued_at: int | None = None, start_id: int = 1, **kw: Any) -> bytes:
    issued = int(wall_clock()) if issued_at is None else issued_at
    return PeerRecord(key.public, network_id, start_id, counter, issued, **kw).sign(key)


async def start_nodes(
    nursery: trio.Nursery, node_keys: Sequence[SigningKey], spec: CommitteeSpec,
    *, seed: int = 0, config: TransportConfig | None = None, **kw: Any,
) -> list[ConnectionManager]:
    """Start one manager per key and tell every node every member's address."""
    nodes = []
    for i, k in enumerate(node_keys):
        m = ConnectionManager(k, spec, {}, config=config, rng=random.Random(seed * 1000 + i),
                              wall_clock=wall_clock, **kw)
        await nursery.start(m.run)
        nodes.append(m)
    for m in nodes:
        for other in nodes:
            if other.peer_id in spec.members and other is not m:
                assert other.listen_port is not None
                m.set_member_address(other.peer_id, ("127.0.0.1", other.listen_port))
    return nodes


async def wait_all(nodes: Sequence[ConnectionManager], pred: Any) -> None:
    """Wait (in virtual time, on change notifications) until pred(node) holds for all."""
    for n in nodes:
        await n.wait_until(lambda n=n: pred(n))


def metric(name: str, **labels: str) -> float:
    return sample_value("coalitiond_" + name, labels) or 0.0


async def raw_client(port: int, session: Session, timeout: float = 10.0) -> tuple[
        trio.SocketStream, Any, list[Event]]:
    """Connect and run the client half of the handshake with a hand-made Session."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer, events = await handshake(stream, session, timeout)
    return stream, peer, events


async def read_until_closed(stream: trio.SocketStream, session: Session,
                            events: Sequence[Event] = ()) -> tuple[list[bytes], Closed]:
    """Read until the session reports a close; returns the messages seen on the way."""
    messages = [e.payload for e in events if isinstance(e, MessageReceived)]
    for e in events:
        if isinstance(e, Closed):
            return messages, e
    while True:
        data = await stream.receive_some(65539)
        if not data:
            return messages, session.connection_lost("eof")
        for e in session.receive_data(bytes(data)):
            if isinstance(e, MessageReceived):
                messages.append(e.payload)
            elif isinstance(e, Closed):
                return messages, e


async def wait_close(node: ConnectionManager, label: str) -> Closed:
    """Wait until `node` has recorded a close with this label; return it."""
    def find() -> Closed | None:
        return next((c for _, c in reversed(node.closes) if c.label == label), None)

    await node.wait_until(lambda: find() is not None)
    found = find()
    assert found is not None
    return found
