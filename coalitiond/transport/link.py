"""The trio shell around one `Session`: a TCP stream, timeouts, a bounded send queue, a
writer task, keepalives and a per-peer rate limit. All protocol decisions are the session's.

Tasks per link: one reader (socket → session → `on_message`), one writer (send queue →
session → socket) and one keepalive ticker. Only code holding `_write_lock` writes to the
socket, so a close frame never interleaves with a half-written message.

Overflow policy of the send queue (`send_queue` messages and `send_queue_bytes` bytes per
peer, the bytes counted until the socket took them; a reader's link also draws on one byte
budget shared by every reader link): **drop the newest** message and count it
(`transport_send_dropped_total`). The sender never blocks, so one slow peer cannot stall a
broadcast to the others; a peer whose socket does not drain for `write_timeout` seconds is
disconnected with TOO_SLOW (it reconnects and catches up through the sync channel).

Rate limits: a link-wide bucket for messages and one for bytes (exceeding either closes
with RATE_LIMITED), and per-kind buckets (`limits.py`: PING here; the channels and the
discovery kinds are checked by the manager through `admit_kind`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from ..primitives import metrics
from ..primitives.logs import get_logger
from .framing import CloseReason
from .limits import Kind, KindLimiter, RateLimits, TokenBucket, Verdict
from .session import (
    Closed,
    Event,
    HandshakeDone,
    MessageReceived,
    PingReceived,
    RemotePeer,
    Session,
    State,
)

log = get_logger(__name__)

#: Bytes asked of the socket per read: one maximal frame plus its header.
READ_SIZE: Final = 65536 + 3
#: How long we try to deliver a close frame before hanging up regardless.
CLOSE_FLUSH_TIMEOUT: Final = 1.0
#: Drops are counted in metrics; the log gets the first one and then every Nth.
DROP_LOG_EVERY: Final = 1000
#: The writer coalesces queued messages into one socket write up to about this many bytes.
WRITE_BATCH_BYTES: Final = 256 * 1024
#: Default count and byte bounds of one link's send queue. The bytes cover what is queued
#: and what the writer holds until the socket took it; 32 MiB is eight maximal (4 MiB)
#: messages to a member (blocks for catch-up), far above what consensus keeps in flight.
DEFAULT_SEND_QUEUE: Final = 256
DEFAULT_SEND_QUEUE_BYTES: Final = 32 * 1024 * 1024

BYTES_SENT = metrics.counter("transport_bytes_sent_total", "Bytes written to transport links")
BYTES_RECEIVED = metrics.counter("transport_bytes_received_total", "Bytes read from transport links")
MESSAGES_SENT = metrics.counter("transport_messages_sent_total", "Application messages sent")
MESSAGES_RECEIVED = metrics.counter("transport_messages_received_total", "Application messages received")
SEND_DROPPED = metrics.counter(
    "transport_send_dropped_total", "Messages dropped because a peer's send queue was full"
)
REKEYS = metrics.counter("transport_rekeys_total", "Noise cipher rekeys (both directions)")
LINKS_CLOSED = metrics.counter(
    "transport_links_closed_total", "Links closed, by reason and by which side closed",
    ("reason", "by"),
)


@dataclass(frozen=True, slots=True)
class LinkTiming:
    handshake_timeout: float = 10.0
    read_timeout: float = 30.0
    keepalive_interval: float = 10.0
    write_timeout: float = 10.0
    send_queue: int = DEFAULT_SEND_QUEUE
    send_queue_bytes: int = DEFAULT_SEND_QUEUE_BYTES
    #: Token bucket per peer: sustained messages/s and bytes/s, with bursts of `*_burst`.
    rate_messages: float = 5000.0
    rate_messages_burst: float = 10000.0
    rate_bytes: float = 64 * 1024 * 1024
    rate_bytes_burst: float = 128 * 1024 * 1024
    #: Per-kind buckets (PING, discovery, catalog, each channel).
    rates: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True, slots=True)
class _CloseAfter:
    reason: CloseReason
    detail: str


@dataclass(frozen=True, slots=True)
class _Tagged:
    """A message whose presence in the queue the owner asks about (`Link.queued(tag)`)."""

    payload: bytes
    tag: str


_QueueItem = bytes | None | _CloseAfter | _Tagged


class ByteBudget:
    """Bytes held against a limit; shared by several links when it is a pool."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, amount: int) -> bool:
        return self.used + amount <= self.limit


__all__ = ["ByteBudget", "Link", "LinkTiming", "TokenBucket", "handshake"]


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    await stream.send_all(data)
    BYTES_SENT.inc(len(data))


async def handshake(
    stream: trio.abc.Stream, session: Session, timeout: float
) -> tuple[RemotePeer | None, list[Event]]:
    """Run the handshake. Returns (peer, events that arrived right after it) or
    (None, [Closed]) when it failed; the close frame has been sent (best effort)."""
    closed: Closed | None = None
    events: list[Event] = []
    with trio.move_on_after(timeout):
        try:
            if session.initiator:
                session.initiate()
                await _send_all(stream, session.data_to_send())
            while session.state is State.HANDSHAKE:
                data = bytes(await stream.receive_some(READ_SIZE))
                if not data:
                    closed = session.connection_lost("connection closed during handshake")
                    break
                BYTES_RECEIVED.inc(len(data))
                events = session.receive_data(data)
                out = session.data_to_send()
                if out:
                    await _send_all(stream, out)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            closed = session.connection_lost(f"connection lost during handshake: {e}")
    if session.state is State.HANDSHAKE:
        closed = session.close(CloseReason.HANDSHAKE_TIMEOUT, f"no handshake within {timeout}s")
    if closed is None:
        closed = next((e for e in events if isinstance(e, Closed)), None)
    if closed is not None or session.peer is None:
        assert session.closed is not None
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            try:
                out = session.data_to_send()
                if out:
                    await _send_all(stream, out)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        return None, [session.closed]
    rest: list[Event] = [e for e in events if not isinstance(e, HandshakeDone)]
    return session.peer, rest


class Link:
    """An authenticated link to `peer`, running until either side closes it."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        session: Session,
        peer: RemotePeer,
        timing: LinkTiming,
        pending: list[Event] | None = None,
        *,
        send_budget: int | None = None,
        pool: ByteBudget | None = None,
        remote_host: str = "",
    ) -> None:
        self.stream = stream
        self.session = session
        self.peer = peer
        self.peer_id = peer.peer_id
        self.initiator = session.initiator
        self.timing = timing
        self._pending = pending or []
        # Items: a message (bytes), a keepalive (None) or a graceful close (_CloseAfter).
        self._queue_send, self._queue_recv = trio.open_memory_channel[_QueueItem](
            timing.send_queue)
        self._write_lock = trio.Lock()
        self._corrupt = False  # a write was interrupted mid-frame: no further frames
        self._done = trio.Event()
        self.finished = trio.Event()  # set after the socket is closed
        self._rekeys_seen = 0
        self.dropped = 0
        #: Bytes queued or held by the writer until the socket took them, against this
        #: link's budget and, for a reader, the pool all reader links share.
        self.budget = ByteBudget(timing.send_queue_bytes if send_budget is None
                                 else send_budget)
        self._pool = pool
        self.remote_host = remote_host
        self._tags: dict[str, int] = {}
        now = trio.current_time()
        self._kinds = KindLimiter(timing.rates, now)
        #: trio time of the last application message on a user channel (not discovery,
        #: not PING): what makes an anonymous reader "not idle".
        self.last_request = now

    @property
    def queued_bytes(self) -> int:
        return self.budget.used

    def queued(self, tag: str) -> int:
        """How many messages enqueued with `tag` the socket has not taken yet."""
        return self._tags.get(tag, 0)

    @property
    def closed(self) -> Closed | None:
        return self.session.closed

    def enqueue(self, payload: bytes, tag: str | None = None) -> bool:
        """Queue one message; False (and counted) if the queue is full — in messages, in
        this link's bytes or in the shared pool's — or the link closed."""
        if self.session.state is not State.OPEN:
            return False
        size = len(payload)
        if not self.budget.fits(size) or (self._pool is not None
                                          and not self._pool.fits(size)):
            return self._drop("send queue bytes full")
        try:
            self._queue_send.send_nowait(payload if tag is None else _Tagged(payload, tag))
        except trio.WouldBlock:
            return self._drop("send queue full")
        self._hold(size)
        if tag is not None:
            self._tags[tag] = self._tags.get(tag, 0) + 1
        return True

    def _drop(self, why: str) -> bool:
        self.dropped += 1
        SEND_DROPPED.inc()
        if self.dropped % DROP_LOG_EVERY == 1:  # the first, then every Nth
            log.warning(f"{why}, message dropped", peer=self.peer_id[:4].hex(),
                        dropped=self.dropped, queued_bytes=self.budget.used)
        return False

    def _hold(self, size: int) -> None:
        self.budget.used += size
        if self._pool is not None:
            self._pool.used += size

    def _release(self, size: int) -> None:
        self.budget.used -= size
        if self._pool is not None:
            self._pool.used -= size

    def admit_kind(self, kind: Kind) -> bool:
        """The per-kind rate limit: True to handle the message; False if it is dropped
        (counted), or the link is being closed with RATE_LIMITED (it persisted)."""
        verdict = self._kinds.check(kind, trio.current_time())
        if verdict is Verdict.ALLOW:
            return True
        if verdict is Verdict.CLOSE:
            lim = self.timing.rates.of(kind)
            self.close(CloseReason.RATE_LIMITED,
                       f"{kind.value} messages above {lim.rate:g}/s (burst {lim.burst:g})")
        return False

    def close_after_queued(self, reason: CloseReason, detail: str = "") -> None:
        """Close once the messages already queued are written (e.g. a departure notice);
        at once if the queue is full."""
        try:
            self._queue_send.send_nowait(_CloseAfter(reason, detail))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.close(reason, detail)

    def close(self, reason: CloseReason, detail: str = "", label: str | None = None) -> None:
        """Ask the link to close; `run` flushes the close frame and returns."""
        self.session.close(reason, detail, label)
        self._done.set()

    async def _flush(self) -> None:
        async with self._write_lock:
            if self._corrupt:
                return
            data = self.session.data_to_send()
            if not data:
                return
            self._corrupt = True  # until send_all returns: a cancel leaves half a frame
            await _send_all(self.stream, data)
            self._corrupt = False
        rekeys = self.session.rekeys - self._rekeys_seen
        if rekeys:
            REKEYS.inc(rekeys)
            self._rekeys_seen = self.session.rekeys

    async def run(self, on_message: Callable[[bytes], None]) -> Closed:
        try:
            async with trio.open_nursery() as nursery:
                if self.session.state is State.OPEN:
                    nursery.start_soon(self._reader, on_message)
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._keepalive)
                    await self._done.wait()
                # Deliver the close frame after whatever the writer is writing right now
                # (taking the lock waits for it, so frames never interleave), but give up
                # after CLOSE_FLUSH_TIMEOUT: a peer that does not read gets no goodbye.
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(CLOSE_FLUSH_TIMEOUT),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
                ):
                    await self._flush()
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(self.stream)
            if self.session.closed is None:  # cancelled from outside (shutdown)
                self.session.close(CloseReason.SHUTDOWN, "node stopping")
            # Whatever was still queued is gone with the link: give its bytes back.
            self._release(self.budget.used)
            self._tags.clear()
            self.finished.set()
        closed = self.session.closed
        assert closed is not None
        LINKS_CLOSED.labels(closed.label, "peer" if closed.by_peer else "local").inc()
        return closed

    def _handle(self, ev: Event, on_message: Callable[[bytes], None]) -> None:
        if isinstance(ev, MessageReceived):
            MESSAGES_RECEIVED.inc()
            on_message(ev.payload)
        elif isinstance(ev, PingReceived):
            self.admit_kind(Kind.PING)
        elif isinstance(ev, Closed):
            self._done.set()

    async def _reader(self, on_message: Callable[[bytes], None]) -> None:
        t = self.timing
        now = trio.current_time()
        msgs = TokenBucket(t.rate_messages, t.rate_messages_burst, now)
        volume = TokenBucket(t.rate_bytes, t.rate_bytes_burst, now)
        # Events that arrived in the same read as the last handshake message count too.
        events, self._pending = self._pending, []
        if not self._deliver(events, msgs, now, on_message):
            return
        while self.session.state is State.OPEN:
            data = b""
            with trio.move_on_after(t.read_timeout):
                try:
                    data = bytes(await self.stream.receive_some(READ_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    self._lost(f"read failed: {e}")
                    return
                if not data:
                    self._lost("peer closed the connection without a close frame")
                    return
            if not data:
                self.close(CloseReason.READ_TIMEOUT, f"nothing received for {t.read_timeout}s")
                return
            BYTES_RECEIVED.inc(len(data))
            now = trio.current_time()
            if not volume.take(len(data), now):
                self.close(CloseReason.RATE_LIMITED, f"more than {t.rate_bytes:.0f} bytes/s")
                return
            if not self._deliver(self.session.receive_data(data), msgs, now, on_message):
                return
        self._done.set()

    def _deliver(self, events: list[Event], msgs: TokenBucket, now: float,
                 on_message: Callable[[bytes], None]) -> bool:
        for ev in events:
            if isinstance(ev, MessageReceived) and not msgs.take(1, now):
                self.close(CloseReason.RATE_LIMITED,
                           f"more than {self.timing.rate_messages:.0f} messages/s")
                return False
            self._handle(ev, on_message)
            if self.session.state is not State.OPEN:
                self._done.set()
                return False
        return True

    def _lost(self, detail: str) -> None:
        # No close frame can reach a dead socket; record the loss as the peer's doing.
        self.session.connection_lost(detail)
        self._corrupt = True
        self._done.set()

    async def _writer(self) -> None:
        t = self.timing
        async for first in self._queue_recv:
            # Encrypt everything already queued (up to WRITE_BATCH_BYTES) and write it with
            # one send_all: one syscall and one wake-up per batch instead of per message.
            item: _QueueItem = first
            batched = 0
            tags: list[str] = []
            while True:
                if self.session.state is not State.OPEN:
                    return
                if isinstance(item, _CloseAfter):
                    self.close(item.reason, item.detail)
                    return
                if item is None:
                    self.session.send_ping()
                else:
                    if isinstance(item, _Tagged):
                        tags.append(item.tag)
                        item = item.payload
                    self.session.send_message(item)
                    MESSAGES_SENT.inc()
                    batched += len(item)
                if batched >= WRITE_BATCH_BYTES:
                    break
                try:
                    item = self._queue_recv.receive_nowait()
                except trio.WouldBlock:
                    break
            with trio.move_on_after(t.write_timeout) as cs:
                try:
                    await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    self._lost(f"write failed: {e}")
                    return
            # The socket took the batch: its bytes (held since enqueue) are free again.
            if not cs.cancelled_caught:
                self._release(batched)
                for tag in tags:
                    self._tags[tag] -= 1
            if cs.cancelled_caught:
                self.close(CloseReason.TOO_SLOW, f"peer did not read for {t.write_timeout}s")
                return

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(self.timing.keepalive_interval)
            # A full queue means traffic is pending anyway; the ping is not needed then.
            with contextlib.suppress(trio.WouldBlock):
                self._queue_send.send_nowait(None)
