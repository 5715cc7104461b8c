"""The connection manager: listener, dialers, one link per peer, readers, discovery.

Why this module is long: it is the one place where links meet each other — admission
against the links already up, the one-link-per-pair tie-break, gossip to every other link,
the catalog that every link feeds — and splitting those would spread one set of shared
tables (`links`, `catalog`) over several modules. The pure parts are elsewhere: reader
admission (`readers.py`), rate limits (`limits.py`), the catalog (`catalog.py`).

* Dials every committee member (addresses from configuration) and keeps one link per pair.
  When both sides dial, the link *initiated by the smaller PeerId* survives on both ends
  (the rule only needs the two ids, so both ends agree without talking); two links with the
  same initiator: the newer wins (the old one belongs to a dead run).
* Reconnects with jittered exponential backoff (`backoff_delay`, rng injectable).
* Readers (non-members): reserved slots for configured keys, a small anonymous pool with
  a per-address share and idle eviction (`readers.py`); at most `max_pending_handshakes`
  concurrent inbound handshakes; beyond that, new connections are refused.
* Memory: every link's send queue is bounded in messages and bytes, anonymous readers'
  links share one byte pool, each channel's receive queue is bounded in messages and bytes,
  the catalog in peers and bytes (`memory_held()` sums them); one catalog reply per peer is
  in flight at a time; every message kind has a per-peer rate limit (`limits.py`).
* Admission: committee membership (configuration only) or a free reader slot, then the
  optional `admission(peer_id, record, now_unix) -> None | reason` hook (TDX tickets).
  `recheck_admission()` re-runs the hook over live links and drops those that now fail.
* Discovery on channel 0: our signed record is re-announced (version bumped) every
  `announce_interval`; new or updated records are gossiped to every other link; every
  `exchange_interval` we swap full catalogs with one random neighbour (anti-entropy);
  stale records expire; on stop we gossip a signed departure.

Time: trio's clock for every timeout; `wall_clock()` only for peer-record timestamps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from ..primitives import metrics
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError, RemoteError, SignatureError
from ..primitives.identity import short
from ..primitives.logs import get_logger
from .catalog import DEFAULT_MAX_BYTES, DEFAULT_MAX_READER_RECORD, Catalog, CatalogError, Outcome
from .framing import CloseReason
from .limits import Kind
from .link import ByteBudget, Link, LinkTiming, handshake
from .peer_record import Departure, PeerRecord
from .readers import (
    DEFAULT_MAX_ANONYMOUS_READERS,
    DEFAULT_MAX_READERS_PER_ADDRESS,
    DEFAULT_READER_IDLE_TIMEOUT,
    Slot,
    admit_anonymous,
)
from .router import DEFAULT_RECV_QUEUE_BYTES, MEMBER_ONLY, Channel, Router
from .session import Closed, Limits, Refusal, RemotePeer, Session

log = get_logger(__name__)

Admission = Callable[[bytes, PeerRecord, int], str | None]
Address = tuple[str, int]

#: Largest batch of signed records in one catalog-exchange message.
MAX_CATALOG_PAGE_BYTES: Final = 1024 * 1024
#: Send-queue bytes of one reader's link, and of the pool every anonymous reader's link
#: draws on as well: what all strangers together can make a member hold for them.
DEFAULT_READER_SEND_QUEUE_BYTES: Final = 5 * 1024 * 1024
DEFAULT_ANONYMOUS_SEND_BYTES: Final = 32 * 1024 * 1024
#: The send-queue tag of catalog pages: one catalog reply per peer is in flight at a time.
CATALOG_TAG: Final = "catalog"
#: Channels whose messages make a reader "not idle" (requests, submissions).
REQUEST_CHANNELS: Final = frozenset({Channel.GOSSIP, Channel.CLIENT})
_CHANNEL_KIND: Final = {Channel.CONSENSUS: Kind.CONSENSUS, Channel.SYNC: Kind.SYNC,
                        Channel.GOSSIP: Kind.GOSSIP, Channel.CLIENT: Kind.CLIENT}
#: How long `stop()` waits for links to deliver their last messages and close frames.
STOP_GRACE: Final = 2.0
#: A link that lived this long (seconds) resets the redial backoff.
STABLE_LINK: Final = 5.0
#: Pause after a failed accept() (e.g. EMFILE) before trying again.
ACCEPT_ERROR_BACKOFF: Final = 0.1

REFUSED = metrics.counter(
    "transport_refused_total", "Links this node refused or closed for cause, by reason",
    ("reason",),
)
HANDSHAKES = metrics.counter("transport_handshakes_total", "Completed handshakes", ("role",))
LINKS = metrics.gauge("transport_links", "Open links by kind", ("kind",))
DISCOVERY_REJECTED = metrics.counter(
    "transport_discovery_rejected_total", "Gossiped records or departures refused", ("reason",)
)


@dataclass(frozen=True, slots=True)
class TransportConfig:
    timing: LinkTiming = field(default_factory=LinkTiming)
    limits: Limits = field(default_factory=Limits)
    #: Anonymous reader slots (readers not in `reserved_readers`).
    max_readers: int = DEFAULT_MAX_ANONYMOUS_READERS
    max_readers_per_address: int = DEFAULT_MAX_READERS_PER_ADDRESS
    reader_idle_timeout: float = DEFAULT_READER_IDLE_TIMEOUT
    #: Reader keys with a reserved slot each (configuration: ACL clients and
    #: `transport.reserved_readers`).
    reserved_readers: frozenset[bytes] = frozenset()
    reader_send_queue_bytes: int = DEFAULT_READER_SEND_QUEUE_BYTES
    anonymous_send_bytes: int = DEFAULT_ANONYMOUS_SEND_BYTES
    max_pending_handshakes: int = 64
    recv_queue: int = 1024
    recv_queue_bytes: int = DEFAULT_RECV_QUEUE_BYTES
    backoff_base: float = 0.25
    backoff_max: float = 30.0
    announce_interval: float = 45.0
    exchange_interval: float = 60.0
    expire_interval: float = 15.0
    record_ttl: int = 300
    max_future_skew: int = 30
    max_catalog: int = 1024
    max_catalog_bytes: int = DEFAULT_MAX_BYTES
    max_reader_record: int = DEFAULT_MAX_READER_RECORD


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half uniform, so retries from
    many nodes spread out but never collapse to zero."""
    ceiling = min(cap, base * (2.0 ** min(attempt, 32)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _jitter(interval: float, rng: random.Random) -> float:
    return interval * (0.5 + rng.random())


class ConnectionManager:
    def __init__(
        self,
        key: SigningKey,
        committee: CommitteeSpec,
        member_addresses: Mapping[bytes, Address],
        *,
        listen: Address = ("127.0.0.1", 0),
        advertise: Sequence[Address] | None = None,
        bootstrap: Sequence[Address] = (),
        roles: Sequence[str] = (),
        tickets: Mapping[str, bytes] | None = None,
        admission: Admission | None = None,
        config: TransportConfig | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.peer_id = key.public
        self.committee = committee
        self.network_id = committee.network_id
        self.members = frozenset(committee.members)
        self.member_addresses = dict(member_addresses)
        self.listen = listen
        self._advertise = list(advertise) if advertise is not None else None
        self.bootstrap = list(bootstrap)
        self.roles = tuple(roles)
        self.tickets = dict(tickets or {})
        self.admission = admission
        self.config = config or TransportConfig()
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.links: dict[bytes, Link] = {}
        self.router = Router(lambda: self.links, self.members,
                             self.config.limits.max_message - 1, self.config.recv_queue,
                             self.config.recv_queue_bytes)
        #: The send-queue bytes every anonymous reader's link draws on.
        self.anonymous_pool = ByteBudget(self.config.anonymous_send_bytes)
        self.listen_port: int | None = None
        self._start_id = int(self.now_unix() * 1000)
        self._counter = 0
        self._own: PeerRecord | None = None
        self._own_signed = b""
        self.catalog: Catalog | None = None
        self._pending = trio.CapacityLimiter(self.config.max_pending_handshakes)
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.closes: list[tuple[bytes | None, Closed]] = []  # recent closes, for status/tests

    # -- time and own record ---------------------------------------------------------------

    def now_unix(self) -> int:
        return int(self.wall_clock())

    def _sign_own(self) -> None:
        self._counter += 1
        addrs = self._advertise
        if addrs is None:
            addrs = [(self.listen[0], self.listen_port)] if self.listen_port else []
        self._own = PeerRecord(
            peer_id=self.peer_id, network_id=self.network_id, start_id=self._start_id,
            counter=self._counter, issued_at=self.now_unix(), addresses=tuple(addrs),
            roles=self.roles,
            committees=(self.committee.committee_id,) if self.peer_id in self.members else (),
            tickets=self.tickets,
        )
        self._own_signed = self._own.sign(self.key)
        if self.catalog is None:
            c = self.config
            self.catalog = Catalog(self.network_id, self._own, self._own_signed,
                                   ttl=c.record_ttl, max_future_skew=c.max_future_skew,
                                   max_entries=c.max_catalog, max_bytes=c.max_catalog_bytes,
                                   max_reader_record=c.max_reader_record,
                                   protected=self.members)
        else:
            self.catalog.set_own(self._own, self._own_signed)

    def set_tickets(self, tickets: Mapping[str, bytes]) -> None:
        """Replace our tickets (e.g. a fresh TDX attestation) and announce the new record."""
        self.tickets = dict(tickets)
        self._sign_own()
        self._announce_own()

    # -- change notification (tests and status wait on it instead of sleeping) -------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def member_links(self) -> list[bytes]:
        return sorted(p for p in self.links if p in self.members)

    def reader_links(self) -> list[bytes]:
        return sorted(p for p in self.links if p not in self.members)

    def is_anonymous(self, peer_id: bytes) -> bool:
        return peer_id not in self.members and peer_id not in self.config.reserved_readers

    def memory_held(self) -> dict[str, int]:
        """Bytes the transport holds for peers right now, by where (deterministic, unlike
        RSS): send queues (with what writers hold until the socket takes it), receive
        queues, and the catalog's signed records."""
        return {
            "send_queues": sum(link.queued_bytes for link in self.links.values()),
            "recv_queues": self.router.queued_bytes(),
            "catalog": self.catalog.bytes_held if self.catalog is not None else 0,
        }

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.listen[1], host=self.listen[0])
        self.listen_port = listeners[0].socket.getsockname()[1]
        self._sign_own()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener)
                # Members dial every other member; a reader (non-member) dials only its
                # bootstrap addresses and learns the rest through gossip.
                if self.peer_id in self.members:
                    for pid in sorted(self.members - {self.peer_id}):
                        nursery.start_soon(self._dial_loop, None, pid)
                # A bootstrap address that is a configured member's already has its own
                # dial loop; a second loop would only make duplicate links to tie-break.
                known = set(self.member_addresses.values())
                for host, port in self.bootstrap:
                    if (host, port) not in known:
                        nursery.start_soon(self._dial_loop, (host, port), None)
                if self.peer_id not in self.members:
                    nursery.start_soon(self._reader_fallback_loop)
                nursery.start_soon(self._announce_loop)
                nursery.start_soon(self._exchange_loop)
                nursery.start_soon(self._expire_loop)
                task_status.started(self.listen_port)
        finally:
            self._nursery = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def stop(self) -> None:
        """Graceful: gossip a signed departure, close every link with SHUTDOWN once what is
        queued (the departure included) is written, then stop. Bounded by STOP_GRACE."""
        dep = Departure(self.peer_id, self.network_id, self._start_id, self._counter,
                        self.now_unix())
        self._gossip(encode(["depart", dep.sign(self.key)]), exclude=None)
        links = list(self.links.values())
        for link in links:
            link.close_after_queued(CloseReason.SHUTDOWN, "node stopping")
        with trio.move_on_after(STOP_GRACE):
            for link in links:
                await link.finished.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as e:
                    # Out of file descriptors or similar: back off instead of spinning or
                    # dying; established links keep working meanwhile.
                    log.warning("accept failed", error=str(e))
                    await trio.sleep(ACCEPT_ERROR_BACKOFF)
                    continue
                try:
                    self._pending.acquire_on_behalf_of_nowait(stream)
                except trio.WouldBlock:
                    # Too many half-open handshakes: hang up before spending any crypto.
                    REFUSED.labels("busy").inc()
                    await trio.aclose_forcefully(stream)
                    continue
                nursery.start_soon(self._serve_inbound, stream)

    async def _serve_inbound(self, stream: trio.SocketStream) -> None:
        await self._run_link(stream, initiator=False, expected=None, pending_token=stream)

    def set_member_address(self, peer_id: bytes, addr: Address) -> None:
        """Set or change where a member is dialed (configuration, never gossip)."""
        if peer_id not in self.members:
            raise LocalError(f"{short(peer_id)} is not a committee member")
        self.member_addresses[peer_id] = addr
        self._notify()

    async def _dial_loop(self, fixed: Address | None, expected: bytes | None) -> None:
        attempt = 0
        while True:
            if expected is not None and expected in self.links:
                await self.links[expected].finished.wait()
                attempt = 0
                continue
            if fixed is None:
                assert expected is not None
                await self.wait_until(lambda: expected in self.member_addresses)
                addr = self.member_addresses[expected]
            else:
                addr = fixed
            connected = False
            try:
                with trio.fail_after(self.config.timing.handshake_timeout):
                    stream = await trio.open_tcp_stream(*addr)
                connected = True
            except (OSError, trio.TooSlowError) as e:
                log.debug("dial failed", addr=f"{addr[0]}:{addr[1]}", error=str(e))
            if connected:
                started = trio.current_time()
                peer_id = await self._run_link(stream, initiator=True, expected=expected)
                # Reset the backoff only for a link that lasted: a peer that completes the
                # handshake and then refuses us must not be redialed at the base rate.
                if peer_id is not None and trio.current_time() - started >= STABLE_LINK:
                    attempt = 0
                if expected is None and peer_id is not None and peer_id in self.links:
                    await self.links[peer_id].finished.wait()
            c = self.config
            await trio.sleep(backoff_delay(attempt, c.backoff_base, c.backoff_max, self.rng))
            attempt += 1

    async def _reader_fallback_loop(self) -> None:
        """A reader whose bootstrap members are gone dials another member at an address
        from that member's signed record. Safe: the dial expects that member's PeerId, which
        only configuration makes a member, so a forged address cannot impersonate it."""
        attempt = 0
        while True:
            await self.wait_until(lambda: not self.member_links())
            c = self.config
            # Let the bootstrap dialers try first; they hold the operator's chosen peers.
            await trio.sleep(backoff_delay(attempt, c.backoff_base * 8, c.backoff_max,
                                           self.rng))
            attempt += 1
            if self.member_links() or self.catalog is None:
                attempt = 0
                continue
            candidates = []
            for pid in self.catalog.peer_ids():
                record = self.catalog.get(pid)
                if pid in self.members and record is not None and record.addresses:
                    candidates.append((pid, record.addresses[0]))
            if not candidates:
                continue
            pid, addr = self.rng.choice(candidates)
            try:
                with trio.fail_after(c.timing.handshake_timeout):
                    stream = await trio.open_tcp_stream(*addr)
            except (OSError, trio.TooSlowError) as e:
                log.debug("fallback dial failed", addr=f"{addr[0]}:{addr[1]}", error=str(e))
                continue
            if await self._run_link(stream, initiator=True, expected=pid) is not None:
                attempt = 0

    # -- one link --------------------------------------------------------------------------

    def _anonymous_refusal(self, pid: bytes, host: str) -> str | None:
        """Room for anonymous reader `pid` from `host`: None (admit, after evicting an idle
        reader if the pool was full) or the refusal's detail."""
        if not self.is_anonymous(pid):
            return None
        c = self.config
        slots = [Slot(p, link.remote_host, link.last_request)
                 for p, link in self.links.items()
                 if p != pid and self.is_anonymous(p) and link.closed is None]
        decision = admit_anonymous(slots, host, trio.current_time(), max_readers=c.max_readers,
                                   max_per_address=c.max_readers_per_address,
                                   idle_timeout=c.reader_idle_timeout)
        if decision.evict is not None:
            self.links[decision.evict].close(
                CloseReason.IDLE, f"no request for {c.reader_idle_timeout:g}s and a new "
                "reader needs the slot")
        return decision.refusal

    def _authorize(self, peer: RemotePeer, expected: bytes | None,
                   host: str = "") -> Refusal | None:
        pid = peer.peer_id
        if expected is not None and pid != expected:
            return Refusal(CloseReason.UNKNOWN_PEER,
                           f"dialed {short(expected)}, answered by {short(pid)}")
        if pid == self.peer_id:
            return Refusal(CloseReason.UNKNOWN_PEER, "connected to ourselves")
        if pid not in self.members:
            if self.peer_id not in self.members:
                # Two readers have nothing to say to each other.
                return Refusal(CloseReason.UNKNOWN_PEER, "neither side is a committee member")
            refusal = self._anonymous_refusal(pid, host)
            if refusal is not None:
                return Refusal(CloseReason.UNKNOWN_PEER, refusal)
        if self.admission is not None:
            reason = self.admission(pid, peer.record, self.now_unix())
            if reason is not None:
                return Refusal(CloseReason.UNAUTHORISED, f"admission refused: {reason}", reason)
        return None

    async def _run_link(self, stream: trio.SocketStream, *, initiator: bool,
                        expected: bytes | None, pending_token: object = None) -> bytes | None:
        host = _remote_host(stream)
        session = Session(
            initiator=initiator, identity=self.key, network_id=self.network_id,
            signed_record=self._own_signed, limits=self.config.limits,
            authorize=lambda p: self._authorize(p, expected, host),
        )
        try:
            peer, events = await handshake(stream, session, self.config.timing.handshake_timeout)
        finally:
            if pending_token is not None:
                self._pending.release_on_behalf_of(pending_token)
        if peer is None:
            closed = events[0]
            assert isinstance(closed, Closed)
            await trio.aclose_forcefully(stream)
            self._record_close(expected, closed)
            return None
        HANDSHAKES.labels("initiator" if initiator else "responder").inc()
        pid = peer.peer_id
        reader = pid not in self.members
        link = Link(stream, session, peer, self.config.timing, events,
                    send_budget=self.config.reader_send_queue_bytes if reader else None,
                    pool=self.anonymous_pool if self.is_anonymous(pid) else None,
                    remote_host=host)
        if not self._register(link):
            closed = await link.run(lambda _m: None)
            self._record_close(peer.peer_id, closed)
            return peer.peer_id
        try:
            self._merge_record(peer.signed_record, source=link)
        except CatalogError as e:
            # The link is authenticated and admitted; only its record is not catalogued.
            DISCOVERY_REJECTED.labels(e.label).inc()
            log.info("handshake record refused", peer=short(peer.peer_id), reason=e.label,
                     detail=str(e))
        # A fresh neighbour gets our whole catalog at once (it sends us its own likewise).
        self._send_catalog(link, want_reply=False)
        try:
            closed = await link.run(lambda m: self._on_message(link, m))
        finally:
            if self.links.get(peer.peer_id) is link:
                del self.links[peer.peer_id]
                self._update_gauges()
            self._notify()
        self._record_close(peer.peer_id, closed)
        return peer.peer_id

    def _register(self, link: Link) -> bool:
        pid = link.peer_id
        # Re-check reader slots: several handshakes may have raced past _authorize.
        if pid not in self.links:
            refusal = self._anonymous_refusal(pid, link.remote_host)
            if refusal is not None:
                link.close(CloseReason.UNKNOWN_PEER, refusal)
                return False
        old = self.links.get(pid)
        if old is not None:
            if self._prefer(link, old):
                old.close(CloseReason.DUPLICATE_LINK, "a preferred link to this peer exists")
            else:
                link.close(CloseReason.DUPLICATE_LINK, "a preferred link to this peer exists")
                return False
        self.links[pid] = link
        self._update_gauges()
        self._notify()
        log.info("link up", peer=short(pid), initiator=link.initiator,
                 member=pid in self.members)
        return True

    def _prefer(self, new: Link, old: Link) -> bool:
        """Tie-break, computed identically by both ends."""
        def initiated_by(link: Link) -> bytes:
            return self.peer_id if link.initiator else link.peer_id

        if initiated_by(new) == initiated_by(old):
            return True
        return initiated_by(new) == min(self.peer_id, new.peer_id)

    def _record_close(self, peer_id: bytes | None, closed: Closed) -> None:
        if not closed.by_peer and closed.reason not in (CloseReason.NORMAL, CloseReason.SHUTDOWN,
                                                        CloseReason.DUPLICATE_LINK):
            REFUSED.labels(closed.label).inc()
            log.warning("link refused", peer=short(peer_id) if peer_id else None,
                        reason=closed.label, detail=closed.detail)
        else:
            log.info("link closed", peer=short(peer_id) if peer_id else None, reason=closed.label,
                     by="peer" if closed.by_peer else "local",
                     authenticated=closed.authenticated, detail=closed.detail)
        self.closes.append((peer_id, closed))
        del self.closes[:-64]  # bounded history
        self._notify()

    def _update_gauges(self) -> None:
        LINKS.labels("member").set(len(self.member_links()))
        LINKS.labels("reader").set(len(self.reader_links()))

    def recheck_admission(self) -> list[bytes]:
        """Re-run the admission hook on every live link (e.g. when a ticket expires) and
        close those that now fail. Returns the dropped peer ids."""
        dropped: list[bytes] = []
        if self.admission is None:
            return dropped
        now = self.now_unix()
        for pid, link in list(self.links.items()):
            record = self.catalog.get(pid) if self.catalog else None
            reason = self.admission(pid, record or link.peer.record, now)
            if reason is not None:
                link.close(CloseReason.UNAUTHORISED, f"admission refused: {reason}", reason)
                dropped.append(pid)
        return dropped

    # -- messages --------------------------------------------------------------------------

    def _on_message(self, link: Link, message: bytes) -> None:
        if not message:
            link.close(CloseReason.MALFORMED, "empty message (no channel byte)")
            return
        try:
            channel = Channel(message[0])
        except ValueError:
            link.close(CloseReason.MALFORMED, f"unknown channel {message[0]}")
            return
        if channel is Channel.DISCOVERY:
            self._on_discovery(link, message[1:])
            return
        if channel in MEMBER_ONLY and link.peer_id not in self.members:
            link.close(CloseReason.UNAUTHORISED, f"channel {channel.label} is for members only")
            return
        if not link.admit_kind(_CHANNEL_KIND[channel]):
            return
        if channel in REQUEST_CHANNELS:
            link.last_request = trio.current_time()
        self.router.deliver(channel, link.peer_id, message[1:])

    def _on_discovery(self, link: Link, body: bytes) -> None:
        try:
            msg = decode(body, max_size=self.config.limits.max_message)
        except EncodingError as e:
            link.close(CloseReason.MALFORMED, f"discovery message: {e}")
            return
        if not (isinstance(msg, list) and msg and isinstance(msg[0], str)):
            link.close(CloseReason.MALFORMED, "discovery message must be [kind, ...]")
            return
        kind = msg[0]
        if not link.admit_kind(Kind.CATALOG if kind == "catalog" else Kind.DISCOVERY):
            return
        try:
            if kind == "announce" and len(msg) == 2 and isinstance(msg[1], bytes):
                self._merge_record(msg[1], source=link)
            elif kind == "depart" and len(msg) == 2 and isinstance(msg[1], bytes):
                assert self.catalog is not None
                removed, _ = self.catalog.depart(msg[1], self.now_unix(),
                                                 sender=self._reader_sender(link))
                if removed:
                    self._gossip(encode(["depart", msg[1]]), exclude=link.peer_id)
                    self._notify()
            elif (kind == "catalog" and len(msg) == 3 and isinstance(msg[1], list)
                  and isinstance(msg[2], bool)
                  and all(isinstance(r, bytes) for r in msg[1])):
                for signed in msg[1]:
                    try:
                        self._merge_record(signed, source=link)
                    except CatalogError as e:  # policy, not misbehaviour: skip this one
                        DISCOVERY_REJECTED.labels(e.label).inc()
                if msg[2]:
                    self._reply_catalog(link)
            else:
                link.close(CloseReason.MALFORMED, f"unknown discovery message {kind!r}")
        except SignatureError as e:
            # Neighbours forward only records they verified: a bad one is their fault.
            link.close(CloseReason.BAD_SIGNATURE, f"gossiped record: {e}")
        except CatalogError as e:
            DISCOVERY_REJECTED.labels(e.label).inc()
            log.info("gossiped record refused", peer=short(link.peer_id), reason=e.label,
                     detail=str(e))
        except RemoteError as e:
            link.close(CloseReason.MALFORMED, f"gossiped record: {e}")

    def _reader_sender(self, link: Link | None) -> bytes | None:
        """The reader whose link brought a record (None for a member's link)."""
        if link is None or link.peer_id in self.members:
            return None
        return link.peer_id

    def _merge_record(self, signed: bytes, source: Link | None) -> None:
        assert self.catalog is not None
        outcome, record = self.catalog.upsert(signed, self.now_unix(),
                                              sender=self._reader_sender(source))
        if outcome in (Outcome.NEW, Outcome.UPDATED):
            self._gossip(encode(["announce", signed]),
                         exclude=source.peer_id if source else record.peer_id)
            self._notify()

    def _gossip(self, body: bytes, exclude: bytes | None) -> None:
        frame = bytes((int(Channel.DISCOVERY),)) + body
        for pid, link in list(self.links.items()):
            if pid != exclude:
                link.enqueue(frame)

    def _announce_own(self) -> None:
        self._gossip(encode(["announce", self._own_signed]), exclude=None)

    def _reply_catalog(self, link: Link) -> None:
        """Answer a catalog request — unless our previous catalog to this peer is still
        queued: one catalog reply per peer in flight, so requests cannot pile up pages."""
        if link.queued(CATALOG_TAG):
            DISCOVERY_REJECTED.labels("catalog_reply_pending").inc()
            return
        self._send_catalog(link, want_reply=False)

    def _send_catalog(self, link: Link, want_reply: bool) -> None:
        assert self.catalog is not None
        page: list[bytes] = []
        size = 0
        first = True
        for signed in self.catalog.snapshot():
            if page and size + len(signed) > MAX_CATALOG_PAGE_BYTES:
                link.enqueue(bytes((0,)) + encode(["catalog", page, want_reply and first]),
                             CATALOG_TAG)
                page, size, first = [], 0, False
            page.append(signed)
            size += len(signed)
        link.enqueue(bytes((0,)) + encode(["catalog", page, want_reply and first]),
                     CATALOG_TAG)

    async def _announce_loop(self) -> None:
        while True:
            await trio.sleep(_jitter(self.config.announce_interval, self.rng))
            self._sign_own()
            self._announce_own()

    async def _exchange_loop(self) -> None:
        while True:
            await trio.sleep(_jitter(self.config.exchange_interval, self.rng))
            peers = sorted(self.links)
            if peers:
                self._send_catalog(self.links[self.rng.choice(peers)], want_reply=True)

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval)
            assert self.catalog is not None
            if self.catalog.expire(self.now_unix()):
                self._notify()


def _remote_host(stream: trio.SocketStream) -> str:
    """The peer's IP address (what the per-address reader share counts); "" if unknown."""
    try:
        return str(stream.socket.getpeername()[0])
    except (OSError, AttributeError, IndexError):
        return ""
