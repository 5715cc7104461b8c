"""One committee member: the wiring of the trio shell around the sans-IO consensus core.

A member is four parts, each in its own module, plus the block journal they share:

    transport ─(consensus)─► Verifier: decode, verify (inline or worker thread) ──┐
    transport ─(client)────► Mempool: check submissions ──────────────────────────┤
    transport ─(gossip)────► Mempool: check relayed envelopes; observations ──────┤
    timers ───────────────────────────────────────────────────────────────────────┼─► inbox
    Resolver: fetcher ─► check_fetched (worker thread) ─► BlocksFetched ──────────┘     │
                                                                                        ▼
    Voter (the consensus loop, owns Core and Executor): each round steps every queued input,
       PersistSignerGuard + Finalized ─► store, one transaction (BlockJournal adds the votes)
       Broadcast / Send ───────────────► transport (and back to ourselves, as the simulator does)
       then executes what was finalised ─► BlockExecuted, outcomes to submitters
       FetchBlocks ─► Resolver.fetch_requests;  accepted envelopes ─► Mempool.relay_outbox
    transport ─(sync/client blocks?)─► Resolver: block servers ◄─ store (parked until the
       voter executes: `wake_parked`)

Before the parts are built the links come up, and a member whose log is empty and whose
`node.state_sync` is set fetches a peer's certified snapshot first (node/state_sync.py); every
member serves its own snapshots to syncing peers (the resolver hands it `snapshot?`).

Parts talk only through constructor arguments: the voter's inbox (node/inbox.py), bounded
memory channels, the shared `CheckedEnvelopes` and `SeenMessages` tables (node/verifier.py)
and the voter's `VoterStatus`. This module builds them, starts every task in the member's
nursery (cancelling it stops everything; a store write in progress finishes first, since
worker-thread calls are not abandoned on cancellation) and reports status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import trio

from ..attestation.collateral import CollateralCache
from ..attestation.gate import NoAttestationGate, TdxGate, make_gate, run_expiry_rechecks
from ..attestation.policy import AttestationPolicy
from ..commands.envelope import Acl
from ..components import base as component_base
from ..components.almanac.component import Almanac
from ..components.chronicle.anchors import make_sink
from ..components.chronicle.config import ChronicleConfig
from ..components.compute.component import Compute
from ..components.confluence.component import Confluence
from ..components.executor import Executor
from ..config import MemberConfig
from ..consensus.events import CoreConfig, DurableState
from ..consensus.voter import Core
from ..log.aio import AsyncStore
from ..log.guard_journal import GuardJournal, journal_path
from ..log.sqlite import store_path
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.errors import OperatorError
from ..primitives.logs import get_logger
from ..primitives.metrics import gauge
from ..transport.limits import KindLimit, RateLimits
from ..transport.manager import ConnectionManager, TransportConfig
from ..transport.router import Channel
from . import wire
from .almanac_ticker import AlmanacTicker
from .confluence import ConfluenceDriver, load_citizens
from .drivers import (
    AlmanacFollower,
    AnchorPublishing,
    Driver,
    Drivers,
    TicketFollower,
    load_almanac_spec,
    load_ticket_issuers,
)
from .inbox import open_inbox
from .journal import BlockJournal
from .mempool import Mempool
from .quote_driver import ProviderQuoteDriver
from .resolver import Resolver, SolicitedNullifications
from .snapshots import FOLLOW_DIR, SNAPSHOT_DIR, SnapshotStore, SnapshotWriter
from .state_sync import SnapshotServer, StateSync, needs_sync, write_synced
from .timers import TimerService
from .verifier import CheckedEnvelopes, SeenMessages, Verifier
from .voter import Voter, VoterStatus, recover

log = get_logger(__name__)

MEMBERS_CONNECTED = gauge("network_members_connected", "Committee members with a live link")


def build_component(config: MemberConfig) -> component_base.Component:
    kind = config.committee.component
    try:
        return component_base.build(kind, config.component.to_cbor())
    except KeyError:
        raise OperatorError(f"{config.path}: committee.component: no component {kind!r} in "
                            f"this build (known: {', '.join(component_base.known_kinds())})"
                            ) from None


class Member:
    """One committee member: its configuration, component, executor and drivers, and the
    parts `run` builds and runs (`voter`, `verifier`, `mempool`, `resolver`). What tests,
    the daemon and the read API read (height, core, store, diverged, ...) stays here, as
    properties over the parts."""

    def __init__(self, config: MemberConfig, key: SigningKey, *, guard_lost: bool = False,
                 transport_config: TransportConfig | None = None) -> None:
        self.config = config
        self.key = key
        self.committee: CommitteeSpec = config.committee_spec()
        me = self.committee.index_of(key.public)
        if me is None:
            raise OperatorError(f"{config.path}: this node's key is not a committee member")
        self.me = me
        self.component = build_component(config)
        self.component.bind(self.committee)
        self.executor = Executor(self.committee.committee_id,
                                 Acl.allow(config.committee.acl.clients,
                                           config.committee.acl.ticket_issuers),
                                 self.component,
                                 follow_almanac=getattr(config.component, "follow_almanac",
                                                        None))
        self.drivers = Drivers(self._build_drivers())
        t = config.committee.timing
        self.core_config = CoreConfig(leader_timeout_ms=t.leader_timeout_ms,
                                      view_timeout_ms=t.view_timeout_ms,
                                      batch_interval_ms=t.batch_interval_ms,
                                      max_batch_commands=t.batch_max_commands,
                                      max_block_bytes=config.committee.max_block_bytes)
        self.guard_lost = guard_lost
        self.transport_config = transport_config
        self.store: AsyncStore | None = None
        self.manager: ConnectionManager | None = None
        #: Certificates and votes of blocks on their way into the log (set up by `run`).
        self.journal = BlockJournal(self.committee.quorum, 0)
        #: Shared by the parts: envelopes already checked, and where every verified
        #: consensus message is shown (journal, finality latency).
        self.checked_envelopes = CheckedEnvelopes()
        self.seen = SeenMessages(self.journal)
        #: Written by the voter (and recovery); read by the resolver, status and waiters.
        self.voter_status = VoterStatus()
        #: The parts, built by `run` once the store and the transport exist.
        self.verifier: Verifier | None = None
        self.resolver: Resolver | None = None
        self.mempool: Mempool | None = None
        self.voter: Voter | None = None
        #: Opened at start, before recovery (log/guard_journal.py).
        self.guard_journal: GuardJournal | None = None
        self.snapshot_server: SnapshotServer | None = None
        self.started_at = time.time()
        self._ready = False
        #: State sync (node/state_sync.py): the snapshot height this member's log was synced
        #: from at this start (None: it was not), and the peers refused on the way.
        self.synced_from: int | None = None
        self.sync_refusals: list[str] = []

    # -- what the voter reports -----------------------------------------------------------

    @property
    def core(self) -> Core | None:
        return self.voter.core if self.voter is not None else None

    @property
    def height(self) -> int:
        return self.voter_status.height

    @property
    def log_size(self) -> int:
        return self.voter_status.log_size

    @property
    def state_root(self) -> bytes:
        return self.voter_status.state_root

    @property
    def finalized_commands(self) -> int:
        return self.voter_status.finalized_commands

    @property
    def diverged(self) -> str | None:
        return self.voter_status.diverged

    @diverged.setter
    def diverged(self, reason: str | None) -> None:
        self.voter_status.diverged = reason

    @property
    def accepting(self) -> bool:
        return self.voter_status.accepting

    @property
    def last_step_at(self) -> float | None:
        """trio time of the consensus loop's last step (the watchdog's liveness check)."""
        return self.voter_status.last_step_at

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready and self.diverged is None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        node = self.config.node
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = await AsyncStore.open(store_path(node.data_dir), self.committee,
                                           signing_key=self.key)
        store = self.store
        try:
            snapshots = SnapshotStore(node.data_dir / SNAPSHOT_DIR, node.snapshots_kept)
            addresses = {m.peer_id: (m.address.host, m.address.port)
                         for m in self.config.committee.members}
            gate, tickets = self._attestation()
            self.manager = manager = ConnectionManager(
                self.key, self.committee, addresses,
                listen=(node.listen.host, node.listen.port),
                advertise=[(node.advertise.host, node.advertise.port)],
                bootstrap=[(a.host, a.port) for a in self.config.network.bootstrap],
                roles=("member",), tickets=tickets, admission=gate,
                config=self.transport_config or transport_config(self.config))
            async with trio.open_nursery() as nursery:
                # The links come up first: state sync (before recovery) talks to the peers.
                try:
                    await nursery.start(manager.run)
                except OSError as e:
                    raise OperatorError(
                        f"{self.config.path}: node.listen {node.listen.host}:{node.listen.port}: "
                        f"cannot listen: {e.strerror or e}") from None
                if isinstance(gate, TdxGate):
                    nursery.start_soon(run_expiry_rechecks, gate,
                                       manager.recheck_admission, time.time)
                await self._state_sync(store, snapshots, manager)
                # Right before recovery: it puts the guard records of the last run into the
                # store (log/guard_journal.py).
                self.guard_journal = journal = await store.run(lambda s: GuardJournal.open(
                    journal_path(store_path(node.data_dir)), s, self.committee.epoch))
                if journal.damaged_slots:
                    log.warning("guard.journal_damaged", path=str(journal.path),
                                slots=journal.damaged_slots,
                                detail="a guard record may be lost: starting as guard-lost "
                                       "(signing nothing until a certificate moves past it)")
                durable = await store.run(lambda s: recover(
                    s, self.committee, self.executor, self.journal, self.voter_status,
                    self.guard_lost or journal.damaged_slots > 0, snapshots))
                self._start_parts(nursery, store, snapshots, durable)
                self._ready = True
                task_status.started()
        finally:
            self._ready = False
            if self.guard_journal is not None:
                self.guard_journal.close()
                self.guard_journal = None
            with trio.CancelScope(shield=True):
                await store.close()

    def _start_parts(self, nursery: trio.Nursery, store: AsyncStore, snapshots: SnapshotStore,
                     durable: DurableState) -> None:
        """Build the parts around the recovered state and start their tasks."""
        node = self.config.node
        manager = self.manager
        assert manager is not None
        router = manager.router
        snapshot_writer = SnapshotWriter(snapshots, self.committee.committee_id,
                                         node.snapshot_interval)
        status = self.voter_status
        inbox, inbox_recv = open_inbox()
        timers = TimerService(inbox.send)
        solicited = SolicitedNullifications()
        self.snapshot_server = snapshot_server = SnapshotServer(snapshots, store, router,
                                                                lambda: status.diverged)
        self.verifier = verifier = Verifier(self.committee, self.executor, router,
                                            self.checked_envelopes, self.seen, inbox,
                                            admit=solicited.admit)
        self.resolver = resolver = Resolver(
            self.committee, self.key.public, self.executor, store, router,
            manager.member_links, self.journal, self.checked_envelopes, inbox,
            height=lambda: status.height, diverged=lambda: status.diverged,
            snapshot_requests=snapshot_server.queue_request)
        self.mempool = mempool = Mempool(self.committee, self.executor, self.drivers,
                                         router, self.checked_envelopes, inbox,
                                         resolver.queue_block_request, self.status)
        self.voter = voter = Voter(
            self.committee, self.me, self.key, self.core_config, durable,
            executor=self.executor, drivers=self.drivers, store=store, router=router,
            journal=self.journal, checked=self.checked_envelopes, seen=self.seen,
            remember_verified=verifier.remember_verified, inbox=inbox_recv, timers=timers,
            relay_outbox=mempool.relay_outbox, fetch_requests=resolver.fetch_requests,
            wake_readers=resolver.wake_parked, status=status, asked=solicited.asked,
            snapshot_writer=snapshot_writer, guard_journal=self.guard_journal)
        nursery.start_soon(timers.run)
        nursery.start_soon(snapshot_writer.run)
        nursery.start_soon(voter.run)
        nursery.start_soon(verifier.run)
        nursery.start_soon(mempool.gossip_intake)
        nursery.start_soon(mempool.gossip_relay)
        nursery.start_soon(mempool.client_intake)
        nursery.start_soon(resolver.sync_intake)
        nursery.start_soon(resolver.block_server, Channel.SYNC)
        nursery.start_soon(resolver.block_server, Channel.CLIENT)
        nursery.start_soon(resolver.fetcher)
        nursery.start_soon(snapshot_server.run)
        nursery.start_soon(self.drivers.run)

    async def _state_sync(self, store: AsyncStore, snapshots: SnapshotStore,
                          manager: ConnectionManager) -> None:
        """With `node.state_sync` and an empty log: fetch, check and write a peer's certified
        snapshot (node/state_sync.py); recovery then starts from it. Without one that
        verifies, the member starts from genesis and catches up block by block."""
        if not self.config.node.state_sync:
            return
        if not await store.run(needs_sync):
            log.info("state_sync.skipped", reason="the log is not empty: restarting from it")
            return
        sync = StateSync(self.committee, self.key.public, self.executor, manager.router,
                         manager.member_links, links_changed=manager.wait_until)
        self.sync_refusals = sync.refusals
        synced = await sync.run()
        if synced is None:
            log.warning("state_sync.none", reason="no member served a snapshot that "
                        "verifies; starting from genesis")
            return
        await write_synced(store, snapshots, synced)
        self.synced_from = synced.snapshot.height
        log.info("state_sync.done", height=synced.snapshot.height, head=synced.head,
                 peer=synced.peer.hex()[:8])

    async def wait_until(self, predicate: Callable[[Member], bool]) -> None:
        """Return once `predicate(self)` holds; re-checked after every finalisation."""
        while not predicate(self):
            await self.voter_status.progress.wait()

    def _attestation(self) -> tuple[TdxGate | NoAttestationGate, dict[str, bytes]]:
        """The admission gate for peers, and this member's own ticket to publish.

        `mode = "none"` gives a gate that admits every member and is loud about it (a
        warning and a gauge). `mode = "tdx"` needs this member's ticket, written inside the
        TD by `coalitiond attest quote`, and collateral in the cache directory (refreshed
        by the collateral refresher, never fetched while verifying).
        """
        a = self.config.attestation
        policy = AttestationPolicy.from_mapping(a.table, str(self.config.path))
        cache_dir = a.collateral_cache or self.config.node.data_dir / "collateral"
        gate = make_gate(policy, network_id=self.committee.network_id,
                         committee_id=self.committee.committee_id, epoch=self.committee.epoch,
                         collateral=CollateralCache(cache_dir), members=self.committee.members)
        if policy.mode == "none":
            return gate, {}
        ticket_path = self.config.node.data_dir / "attestation" / "tdx.ticket"
        try:
            ticket = ticket_path.read_bytes()
        except FileNotFoundError:
            raise OperatorError(
                f"{ticket_path}: no attestation ticket; inside the TD run `coalitiond attest "
                f"quote --config {self.config.path}` first") from None
        return gate, {"tdx": ticket}

    def _build_drivers(self) -> list[Driver]:
        """The component's non-deterministic helpers (coalitiond/node/drivers.py)."""
        drivers: list[Driver] = []
        node = self.config.node

        def position(followed: CommitteeSpec) -> dict[str, Any]:
            # Each followed committee's replica keeps its position next to our snapshots.
            return {"position": SnapshotStore(node.data_dir / FOLLOW_DIR
                                              / followed.committee_id.hex(),
                                              node.snapshots_kept),
                    "position_interval": node.snapshot_interval}

        if self.executor.follow_almanac is not None:
            almanac_config, almanac = load_almanac_spec(self.config)
            drivers.append(AlmanacFollower(self.key, self.executor, almanac_config, almanac,
                                           **position(almanac)))
        for root, issuer_config, issuer in load_ticket_issuers(self.config):
            drivers.append(TicketFollower(self.key, self.executor, root, issuer_config, issuer,
                                          **position(issuer)))
        if isinstance(self.component, Confluence):
            def store(followed: CommitteeSpec) -> tuple[SnapshotStore, int]:
                p = position(followed)
                return p["position"], p["position_interval"]

            drivers.append(ConfluenceDriver(
                self.key, self.executor,
                load_citizens(self.config, self.component.citizens), store))
        if isinstance(self.component, Almanac):
            drivers.append(AlmanacTicker(self.committee, self.key, self.me, self.component,
                                         self.component.tick_interval_ms,
                                         self.broadcast_observation))
        if isinstance(self.component, Compute):
            # Provider quotes are checked at this member's clock against its collateral
            # cache (the same one member admission uses), before voting only.
            cache_dir = (self.config.attestation.collateral_cache
                         or self.config.node.data_dir / "collateral")
            drivers.append(ProviderQuoteDriver(CollateralCache(cache_dir), wall=time.time))
        if isinstance(self.config.component, ChronicleConfig):
            sink_config = self.config.component.anchor_sink
            drivers.append(AnchorPublishing(
                self.executor, make_sink(sink_config, member_index=self.me,
                                         quorum=self.committee.quorum,
                                         committee_size=self.committee.n),
                lag_alert_entries=sink_config.lag_alert_entries))
        return drivers

    async def broadcast_observation(self, data: bytes) -> None:
        """Gossip a driver's signed observation to the other members."""
        assert self.manager is not None
        await self.manager.router.broadcast(
            Channel.GOSSIP, wire.encode_message(wire.GossipObservation(data)))

    def stop_accepting(self) -> None:
        """SIGTERM, first step: refuse new client commands; consensus keeps running."""
        self.voter_status.accepting = False

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        core = self.core
        links = self.manager.member_links() if self.manager else []
        MEMBERS_CONNECTED.set(len(links))
        return {
            "member": self.me,
            "peer_id": self.key.public.hex(),
            "committee_id": self.committee.committee_id.hex(),
            "component": self.committee.component_kind,
            "n": self.committee.n,
            "q": self.committee.quorum,
            "view": core.view if core else 0,
            "leader": core.leader if core else 0,
            "abstaining": core.abstaining if core else False,
            "height": self.height,
            "log_size": self.log_size,
            "state_root": self.state_root.hex(),
            "finalized_commands": self.finalized_commands,
            "pending_commands": core.pending_commands if core else 0,
            "members_connected": len(links) + 1,
            "ready": self.ready,
            "accepting": self.accepting,
            "diverged": self.diverged,
            "uptime_ms": int((time.time() - self.started_at) * 1000),
            "component_head": self._component_head(),
            "stamp": _plain(self.executor.stamp.to_args()) if self.executor.stamp else None,
        }

    def _component_head(self) -> dict[str, Any] | None:
        """The component's `head` read, flattened to JSON-friendly values (bytes as hex)."""
        try:
            head = self.executor.query("head", {})
        except component_base.QueryError:
            return None
        return _plain(head) if isinstance(head, dict) else None


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in obj.items()
            if isinstance(v, bytes | int | str | bool | None)}

_T = TypeVar("_T")


def transport_config(config: MemberConfig) -> TransportConfig:
    """The member's links as its file says: `[transport]` over the transport's defaults;
    the committee's ACL clients get reserved reader slots too (docs/configuration.md)."""
    t = config.transport
    base = TransportConfig()
    timing = base.timing
    rates = RateLimits(**{kind: KindLimit(float(per_s), float(burst))
                          for kind, per_s, burst in t.rates})
    timing = replace(
        timing, rates=rates,
        send_queue=_or(t.send_queue_messages, timing.send_queue),
        send_queue_bytes=_or(t.send_queue_bytes, timing.send_queue_bytes))
    return replace(
        base, timing=timing,
        reserved_readers=frozenset(config.committee.acl.clients) | frozenset(t.reserved_readers),
        max_readers=_or(t.max_anonymous_readers, base.max_readers),
        max_readers_per_address=_or(t.max_readers_per_address, base.max_readers_per_address),
        reader_idle_timeout=float(_or(t.reader_idle_timeout_s, base.reader_idle_timeout)),
        reader_send_queue_bytes=_or(t.reader_send_queue_bytes, base.reader_send_queue_bytes),
        anonymous_send_bytes=_or(t.anonymous_send_bytes, base.anonymous_send_bytes),
        recv_queue_bytes=_or(t.recv_queue_bytes, base.recv_queue_bytes),
        max_catalog_bytes=_or(t.max_catalog_bytes, base.max_catalog_bytes),
        max_reader_record=_or(t.max_reader_record_bytes, base.max_reader_record))


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value
