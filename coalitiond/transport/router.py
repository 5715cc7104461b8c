"""Typed channels over links: what the consensus shell and the servers use.

    await router.send(Channel.CONSENSUS, peer_id, payload)   # -> bool (queued or dropped)
    await router.broadcast(Channel.CONSENSUS, payload)       # -> members it was queued for
    async for sender, payload in router.receive(Channel.CONSENSUS): ...

Every application message on a link is `channel: u8 ‖ payload`; payloads are opaque bytes
(each layer encodes its own messages). Channel 0 is the transport's own discovery traffic
and never reaches the router's users.

Queue policies:
* send: each peer's link has a bounded send queue; when it is full the message is dropped
  (newest first) and counted — senders never block on a slow peer (see link.py).
* receive: each channel has one bounded queue of `recv_queue` messages shared by all
  senders; when the consumer falls that far behind, new messages on that channel are dropped
  and counted (`transport_recv_dropped_total{channel}`) rather than stalling the links, which
  also carry the other channels and keepalives. Consensus retransmits and catches up by
  sync, so a drop costs latency, never safety.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from ..primitives import metrics
from ..primitives.errors import LocalError
from ..primitives.logs import get_logger

if TYPE_CHECKING:
    from .link import Link

DEFAULT_RECV_QUEUE: Final = 1024
#: Drops are counted in metrics; the log gets the first one and then every Nth.
DROP_LOG_EVERY: Final = 1000

log = get_logger(__name__)

RECV_DROPPED = metrics.counter(
    "transport_recv_dropped_total",
    "Messages dropped because a channel's receive queue was full", ("channel",),
)


class Channel(enum.IntEnum):
    DISCOVERY = 0  # internal: peer records, departures, catalog exchange
    CONSENSUS = 1
    SYNC = 2
    GOSSIP = 3
    CLIENT = 4

    @property
    def label(self) -> str:
        return self.name.lower()


#: Channels only committee members may send on; a reader that tries is disconnected.
MEMBER_ONLY: Final = frozenset({Channel.CONSENSUS, Channel.SYNC})
USER_CHANNELS: Final = tuple(c for c in Channel if c is not Channel.DISCOVERY)

Received = tuple[bytes, bytes]


class Router:
    """Owned by a ConnectionManager, which calls `deliver` for every inbound message."""

    def __init__(
        self,
        links: Callable[[], dict[bytes, Link]],
        members: frozenset[bytes],
        max_payload: int,
        recv_queue: int = DEFAULT_RECV_QUEUE,
    ) -> None:
        self._links = links
        self._members = members
        self.max_payload = max_payload
        self._queues: dict[Channel, tuple[trio.MemorySendChannel[Received],
                                          trio.MemoryReceiveChannel[Received]]] = {
            c: trio.open_memory_channel[Received](recv_queue) for c in USER_CHANNELS
        }
        self.dropped: dict[Channel, int] = dict.fromkeys(USER_CHANNELS, 0)

    def _frame(self, channel: Channel, payload: bytes) -> bytes:
        if channel is Channel.DISCOVERY:
            raise LocalError("channel 0 is reserved for the transport itself")
        if len(payload) > self.max_payload:
            raise LocalError(f"payload of {len(payload)} bytes exceeds {self.max_payload}")
        return bytes((int(channel),)) + payload

    async def send(self, channel: Channel, peer_id: bytes, payload: bytes) -> bool:
        """Queue `payload` for `peer_id`. False if not connected or its queue is full."""
        frame = self._frame(channel, payload)
        await trio.lowlevel.checkpoint()
        link = self._links().get(peer_id)
        return link is not None and link.enqueue(frame)

    async def broadcast(self, channel: Channel, payload: bytes) -> int:
        """Queue `payload` for every connected committee member; returns how many took it."""
        self._frame(channel, payload)  # checks before yielding, as `send` does
        await trio.lowlevel.checkpoint()
        return self.broadcast_nowait(channel, payload)

    def send_nowait(self, channel: Channel, peer_id: bytes, payload: bytes) -> bool:
        """`send` without yielding to other tasks: a caller queueing several messages in a
        row lets each link's writer take them all in one socket write (one syscall, one
        wake-up of the peer) instead of one per message."""
        frame = self._frame(channel, payload)
        link = self._links().get(peer_id)
        return link is not None and link.enqueue(frame)

    def broadcast_nowait(self, channel: Channel, payload: bytes) -> int:
        """`broadcast` without yielding (see `send_nowait`)."""
        frame = self._frame(channel, payload)
        return sum(
            1 for pid, link in list(self._links().items())
            if pid in self._members and link.enqueue(frame)
        )

    def receive(self, channel: Channel) -> trio.MemoryReceiveChannel[Received]:
        """The channel's receive stream of (sender peer id, payload)."""
        if channel is Channel.DISCOVERY:
            raise LocalError("channel 0 is internal to the transport")
        return self._queues[channel][1]

    def deliver(self, channel: Channel, sender: bytes, payload: bytes) -> bool:
        try:
            self._queues[channel][0].send_nowait((sender, payload))
        except trio.WouldBlock:
            self.dropped[channel] += 1
            RECV_DROPPED.labels(channel.label).inc()
            if self.dropped[channel] % DROP_LOG_EVERY == 1:  # the first, then every Nth
                log.warning("receive queue full, message dropped", channel=channel.label,
                            dropped=self.dropped[channel], sender=sender[:4].hex())
            return False
        return True
