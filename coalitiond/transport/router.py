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
* receive: each channel has one bounded queue of `recv_queue` messages and
  `recv_queue_bytes` bytes shared by all senders (a message's bytes count until the
  consumer takes it); when the consumer falls that far behind, new messages on that channel
  are dropped
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
#: Bytes one channel's receive queue holds: eight maximal (4 MiB) messages.
DEFAULT_RECV_QUEUE_BYTES: Final = 32 * 1024 * 1024
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


class ReceiveQueue:
    """One channel's receive side: what `Router.receive` hands the consumer. Taking a
    message gives its bytes back to the channel's byte budget."""

    def __init__(self, recv: trio.MemoryReceiveChannel[Received], held: list[int]) -> None:
        self._recv = recv
        self._held = held  # one cell, shared with the router's deliver side

    def _took(self, item: Received) -> Received:
        self._held[0] -= len(item[1])
        return item

    async def receive(self) -> Received:
        return self._took(await self._recv.receive())

    def receive_nowait(self) -> Received:
        return self._took(self._recv.receive_nowait())

    def __aiter__(self) -> ReceiveQueue:
        return self

    async def __anext__(self) -> Received:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Router:
    """Owned by a ConnectionManager, which calls `deliver` for every inbound message."""

    def __init__(
        self,
        links: Callable[[], dict[bytes, Link]],
        members: frozenset[bytes],
        max_payload: int,
        recv_queue: int = DEFAULT_RECV_QUEUE,
        recv_queue_bytes: int = DEFAULT_RECV_QUEUE_BYTES,
    ) -> None:
        self._links = links
        self._members = members
        self.max_payload = max_payload
        self.recv_queue_bytes = recv_queue_bytes
        self._queues: dict[Channel, tuple[trio.MemorySendChannel[Received],
                                          ReceiveQueue]] = {}
        #: Bytes waiting in each channel's queue (one-element lists shared with the
        #: ReceiveQueue, which gives them back as the consumer takes messages).
        self._held: dict[Channel, list[int]] = {}
        for c in USER_CHANNELS:
            send, recv = trio.open_memory_channel[Received](recv_queue)
            self._held[c] = [0]
            self._queues[c] = (send, ReceiveQueue(recv, self._held[c]))
        self.dropped: dict[Channel, int] = dict.fromkeys(USER_CHANNELS, 0)

    def queued_bytes(self) -> int:
        """Bytes waiting in every channel's receive queue."""
        return sum(h[0] for h in self._held.values())

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

    def receive(self, channel: Channel) -> ReceiveQueue:
        """The channel's receive stream of (sender peer id, payload)."""
        if channel is Channel.DISCOVERY:
            raise LocalError("channel 0 is internal to the transport")
        return self._queues[channel][1]

    def deliver(self, channel: Channel, sender: bytes, payload: bytes) -> bool:
        held = self._held[channel]
        try:
            if held[0] + len(payload) > self.recv_queue_bytes:
                raise trio.WouldBlock
            self._queues[channel][0].send_nowait((sender, payload))
            held[0] += len(payload)
        except trio.WouldBlock:
            self.dropped[channel] += 1
            RECV_DROPPED.labels(channel.label).inc()
            if self.dropped[channel] % DROP_LOG_EVERY == 1:  # the first, then every Nth
                log.warning("receive queue full, message dropped", channel=channel.label,
                            dropped=self.dropped[channel], sender=sender[:4].hex())
            return False
        return True
