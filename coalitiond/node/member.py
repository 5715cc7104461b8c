"""One committee member: the thin trio shell around the sans-IO consensus core.

Data flow (DESIGN §1):

    transport ──(consensus)──► decode + verify (worker thread) ─┐
    transport ──(gossip/client)► envelope check (worker thread) ├─► events ─► Core.step ─► actions
    timers ─────────────────────────────────────────────────────┘                       │
       PersistSignerGuard ─► store (durable before anything after it runs) ◄─────────────┤
       Broadcast / Send ───► transport (and back to ourselves, as the simulator does) ◄──┤
       Finalized ──────────► store (one transaction) ─► executor ─► BlockExecuted, outcomes
       FetchBlocks ────────► catch-up task ─► verify_fetched (worker thread) ─► BlocksFetched

One task (`_consensus_loop`) owns the core and the executor; every other task talks to it
through one bounded channel. Every task lives in the member's nursery; cancelling it stops
everything, and a store write in progress finishes first (worker-thread calls are not
abandoned on cancellation).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from ..attestation.collateral import CollateralCache
from ..attestation.gate import NoAttestationGate, TdxGate, make_gate, run_expiry_rechecks
from ..attestation.policy import AttestationPolicy
from ..commands.envelope import Acl, CommandRefused, Envelope
from ..commands.member import MemberCommand, is_member_command
from ..components import base as component_base
from ..components.almanac.component import Almanac
from ..components.chronicle.anchors import make_sink
from ..components.chronicle.config import ChronicleConfig
from ..components.compute.component import Compute
from ..components.executor import BlockResult, Executor
from ..config import MemberConfig
from ..consensus.core import (
    Action,
    BlockExecuted,
    BlocksFetched,
    Broadcast,
    CommandSubmitted,
    Core,
    CoreConfig,
    DurableState,
    Event,
    EvidenceFound,
    FetchBlocks,
    Finalized,
    GuardRecord,
    MessageReceived,
    PersistSignerGuard,
    Refused,
    Send,
    SetTimer,
    Start,
    StateDivergence,
    TimerFired,
)
from ..consensus.messages import (
    EvidenceMessage,
    Finalization,
    Message,
    Notarization,
    Nullification,
    Proposal,
    ProposalHeader,
    VerifiedVotes,
    decode_message,
    encode_message,
    verify_fetched,
    verify_message,
)
from ..consensus.statements import SignedKind
from ..consensus.types import Block, Certificate, Vote, VoteKind
from ..log.aio import AsyncStore
from ..log.records import FinalizedBlock
from ..log.sqlite import BlockToAppend, EvidenceRecord, Store, store_path
from ..log.sqlite import GuardRecord as StoreGuardRecord
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import encode
from ..primitives.errors import LocalError, OperatorError, RemoteError
from ..primitives.identity import digest as blake3_digest
from ..primitives.identity import short
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge, histogram
from ..transport.manager import ConnectionManager, TransportConfig
from ..transport.router import Channel
from . import wire
from .almanac_ticker import AlmanacTicker
from .drivers import (
    AlmanacFollower,
    AnchorPublishing,
    Driver,
    Drivers,
    TicketFollower,
    load_almanac_spec,
    load_ticket_issuers,
)
from .journal import BlockJournal
from .quote_driver import ProviderQuoteDriver
from .timers import TimerService

log = get_logger(__name__)

#: Inputs waiting for the consensus loop. Producers block when it is full (backpressure
#: onto the transport's own bounded queues, whose overflow policy then applies).
MAX_QUEUED_INPUTS: Final = 4096
#: Inputs the consensus loop takes in one round; their actions share one store commit.
MAX_INPUTS_PER_ROUND: Final = 64
#: Incoming consensus messages verified per worker-thread call.
VERIFY_BATCH: Final = 256
#: A batch of consensus messages that needs at most this many signature checks (~80 µs
#: each) is verified on the event loop: cheaper than a worker-thread hand-off (~300 µs of
#: context switches on a busy machine).
INLINE_VERIFY_SIGNATURES: Final = 12
#: Submitted or relayed envelopes are checked on the event loop when a batch has at most
#: INLINE_CHECK_ENVELOPES of them and INLINE_CHECK_BYTES in all; else in one worker call.
INLINE_CHECK_ENVELOPES: Final = 16
INLINE_CHECK_BYTES: Final = 64 * 1024
#: Finalised blocks holding at most this many commands in all are appended on the event
#: loop when the store is idle; larger appends go to the store's worker thread.
INLINE_APPEND_COMMANDS: Final = 64
#: Consensus batches of at most this many bytes are decoded on the event loop; larger
#: ones (blocks with many commands) are decoded and verified on a worker thread.
INLINE_DECODE_BYTES: Final = 64 * 1024
#: Vote signatures remembered as verified (consensus.messages.VerifiedVotes): a few
#: hundred views' worth at n = 7.
MAX_VERIFIED_SIGNATURES: Final = 8192
#: Envelopes whose signature and stateless checks passed, by blake3 of their bytes, so a
#: block's validation and execution do not verify them again on the event loop.
MAX_CHECKED_ENVELOPES: Final = 65_536
#: Messages queued without yielding (Router.send_nowait) between two yields to the links'
#: writers: well below a link's send queue (transport.link.LinkTiming.send_queue), so a
#: long step (catch-up finalising many blocks) never overflows it.
SENDS_PER_YIELD: Final = 64
#: Proposals whose first-seen time is kept for the finality-latency histogram.
MAX_TRACKED_PROPOSALS: Final = 1024
#: Submitters waiting for outcomes.
MAX_WAITING_SUBMITTERS: Final = 65_536
#: Pending block-range requests (tail, catch-up service) and parked "wait" requests.
MAX_BLOCK_REQUESTS: Final = 256
MAX_PARKED_REQUESTS: Final = 256
#: Envelopes waiting to be relayed to the other members; when full, relaying is skipped
#: (the envelope stays in our own batcher and we propose it when we lead).
MAX_GOSSIP_OUTBOX: Final = 4096
#: Bytes kept free in a "blocks" reply for its own header and the transport's framing.
REPLY_HEADROOM: Final = 64 * 1024
#: Bytes of envelopes relayed in one gossip message.
MAX_GOSSIP_BYTES: Final = 1024 * 1024
#: How long catch-up waits for one peer before asking the next.
FETCH_TIMEOUT_S: Final = 5.0

CONSENSUS_REJECTED = counter("consensus_messages_rejected_total",
                             "Consensus messages refused before the core, by reason", ("reason",))
CORE_REFUSED = counter("consensus_refused_total", "Inputs the consensus core refused",
                       ("reason",))
FINALIZED_HEIGHT = gauge("consensus_finalized_height", "Height of the last finalised block")
VIEW = gauge("consensus_view", "Current view")
FINALIZED_BLOCKS = counter("consensus_finalized_blocks_total", "Blocks finalised")
FINALIZED_COMMANDS = counter("consensus_finalized_commands_total",
                             "Client envelopes in finalised blocks")
FINALITY_LATENCY = histogram("consensus_finality_seconds",
                             "From first seeing a proposal to its finalisation",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
EVIDENCE = counter("consensus_evidence_total", "Equivocation evidence found", ("kind",))
SUBMISSIONS = counter("client_submissions_total", "Client envelopes submitted to this member",
                      ("result",))
CATCHUP = counter("sync_fetches_total", "Catch-up fetches, by result", ("result",))
BLOCK_REQUESTS_DROPPED = counter("blocks_requests_dropped_total",
                                 "blocks? requests dropped because their queue was full",
                                 ("channel",))
DIVERGED = gauge("state_diverged", "1 when this member's executed state disagrees with a block")
VOTE_CHECK_REFUSED = counter("vote_checks_refused_total",
                             "Proposals not voted for because a driver's check refused them")
LATE_VOTES = counter("log_late_votes_total",
                     "Votes that arrived after their block was handed to the log: stored with a "
                     "later commit, or dropped because too many were waiting", ("result",))
MEMBERS_CONNECTED = gauge("network_members_connected", "Committee members with a live link")


@dataclass(frozen=True, slots=True)
class _Submission:
    """An envelope for the mempool; `reply_to` is (peer, request id) for a local submitter."""

    envelope: bytes
    checked: Envelope
    reply_to: tuple[bytes, int] | None


@dataclass(frozen=True, slots=True)
class _BlockRequest:
    channel: Channel
    peer: bytes
    request: wire.BlocksRequest
    received_at: float


_Input = Event | _Submission


def build_component(config: MemberConfig) -> component_base.Component:
    kind = config.committee.component
    try:
        return component_base.build(kind, config.component.to_cbor())
    except KeyError:
        raise OperatorError(f"{config.path}: committee.component: no component {kind!r} in "
                            f"this build (known: {', '.join(component_base.known_kinds())})"
                            ) from None


def _guard_kind(kind: SignedKind) -> Any:
    # The store's guard keeps the kind as an integer; VoteKind for the three vote kinds and
    # the proposal's own value otherwise (docs/protocol.md §8 numbers them alike).
    return VoteKind(int(kind)) if int(kind) <= 2 else kind


class Member:
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
                                      max_batch_commands=t.batch_max_commands)
        self.guard_lost = guard_lost
        self.transport_config = transport_config
        self.core: Core | None = None
        self.store: AsyncStore | None = None
        self.manager: ConnectionManager | None = None
        self._inputs_send, self._inputs_recv = trio.open_memory_channel[_Input](MAX_QUEUED_INPUTS)
        self._checked: OrderedDict[bytes, Envelope | MemberCommand] = OrderedDict()
        #: Certificates and votes of blocks on their way into the log (set up by `run`).
        self.journal = BlockJournal(self.committee.quorum, 0)
        self._first_seen: OrderedDict[bytes, float] = OrderedDict()
        #: Written only on the event loop; the verifying worker thread only reads it.
        self._verified_votes = VerifiedVotes(MAX_VERIFIED_SIGNATURES)
        self._waiting: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        #: Commands a driver's vote-time check refused during the current step.
        self._refused_by_drivers: list[bytes] = []
        self._block_requests = {
            c: trio.open_memory_channel[_BlockRequest | None](MAX_BLOCK_REQUESTS)
            for c in (Channel.SYNC, Channel.CLIENT)}
        self._fetch_send, self._fetch_recv = trio.open_memory_channel[FetchBlocks](1)
        self._gossip_send, self._gossip_recv = trio.open_memory_channel[bytes](MAX_GOSSIP_OUTBOX)
        self._fetch_replies: dict[tuple[bytes, int],
                                  trio.MemorySendChannel[wire.Blocks]] = {}
        self._next_request_id = 1
        self._sends_since_yield = 0
        self.accepting = True
        self.diverged: str | None = None
        self.height = 0
        self.log_size = 0
        self.state_root = b"\x00" * 32
        self.started_at = time.time()
        self.finalized_commands = 0
        self._ready = False
        self._progress = trio.Event()
        #: trio time of the consensus loop's last step; the core's view timer guarantees
        #: one at least every view timeout, so a stale value means the loop is stuck.
        self.last_step_at: float | None = None

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
        try:
            durable = await self.store.run(self._recover)
            self.core = Core(self.committee, self.key, self.core_config, durable,
                             validate_block_commands=self._validate_block_commands,
                             member_commands=self.drivers.member_commands)
            addresses = {m.peer_id: (m.address.host, m.address.port)
                         for m in self.config.committee.members}
            gate, tickets = self._attestation()
            self.manager = ConnectionManager(
                self.key, self.committee, addresses,
                listen=(node.listen.host, node.listen.port),
                advertise=[(node.advertise.host, node.advertise.port)],
                bootstrap=[(a.host, a.port) for a in self.config.network.bootstrap],
                roles=("member",), tickets=tickets, admission=gate,
                config=self.transport_config)
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(self.manager.run)
                except OSError as e:
                    raise OperatorError(
                        f"{self.config.path}: node.listen {node.listen.host}:{node.listen.port}: "
                        f"cannot listen: {e.strerror or e}") from None
                if isinstance(gate, TdxGate):
                    nursery.start_soon(run_expiry_rechecks, gate,
                                       self.manager.recheck_admission, time.time)
                timers = TimerService(self._fire_timer)
                self._timers = timers
                nursery.start_soon(timers.run)
                nursery.start_soon(self._consensus_loop)
                nursery.start_soon(self._consensus_intake)
                nursery.start_soon(self._gossip_intake)
                nursery.start_soon(self._gossip_relay)
                nursery.start_soon(self._client_intake)
                nursery.start_soon(self._sync_intake)
                nursery.start_soon(self._block_server, Channel.SYNC)
                nursery.start_soon(self._block_server, Channel.CLIENT)
                nursery.start_soon(self._fetcher)
                nursery.start_soon(self.drivers.run)
                self._ready = True
                task_status.started()
        finally:
            self._ready = False
            with trio.CancelScope(shield=True):
                await self.store.close()

    async def wait_until(self, predicate: Callable[[Member], bool]) -> None:
        """Return once `predicate(self)` holds; re-checked after every finalisation."""
        while not predicate(self):
            await self._progress.wait()

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
        if self.executor.follow_almanac is not None:
            almanac_config, almanac = load_almanac_spec(self.config)
            drivers.append(AlmanacFollower(self.key, self.executor, almanac_config, almanac))
        for root, issuer_config, issuer in load_ticket_issuers(self.config):
            drivers.append(TicketFollower(self.key, self.executor, root, issuer_config, issuer))
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
            drivers.append(AnchorPublishing(self.executor,
                                            make_sink(self.config.component.anchor_sink)))
        return drivers

    async def broadcast_observation(self, data: bytes) -> None:
        """Gossip a driver's signed observation to the other members."""
        assert self.manager is not None
        await self.manager.router.broadcast(
            Channel.GOSSIP, wire.encode_message(wire.GossipObservation(data)))

    def stop_accepting(self) -> None:
        """SIGTERM, first step: refuse new client commands; consensus keeps running."""
        self.accepting = False

    def _recover(self, s: Store) -> DurableState:
        """Rebuild the executor by replaying the log, and the core's durable state."""
        tip: FinalizedBlock | None = None
        for fb in s.iter_finalized():
            # Our own store holds only blocks whose envelopes were verified before they were
            # certified and stored: replay without checking every client signature again
            # (restart time would grow with the log). Admission is still decided afresh.
            self.executor.apply_block(fb.height, fb.block.digest, fb.block.commands,
                                      checked=[_decoded_unverified(c) for c in fb.block.commands])
            tip = fb
        self.height = s.height
        self.journal.durable_height = s.height
        self.log_size = s.size
        self.state_root = self.executor.state_root()
        guard = tuple(GuardRecord(epoch, view, SignedKind(kind), digest)
                      for epoch, view, kind, digest in s.guard_records(self.committee.epoch))
        guard_lost = self.guard_lost or (tip is not None and not guard)
        tip_cert: Certificate | None = None
        if tip is not None:
            tip_cert = tip.finalization or tip.notarization
        FINALIZED_HEIGHT.set(self.height)
        log.info("member.recovered", height=self.height, log_size=self.log_size,
                 guard_records=len(guard), guard_lost=guard_lost,
                 state_root=self.state_root.hex()[:16])
        return DurableState(
            guard=guard,
            tip=None if tip is None else tip.block,
            tip_certificate=tip_cert,
            executed=(self.height, self.state_root) if self.height else None,
            guard_lost=guard_lost,
        )

    # -- the consensus loop -------------------------------------------------------------

    async def _enqueue(self, item: _Input) -> None:
        """Hand `item` to the consensus loop without yielding unless its queue is full: the
        producer yields at its own next receive, and the loop then takes everything queued
        in one round (one commit) instead of one round per message."""
        try:
            self._inputs_send.send_nowait(item)
        except trio.WouldBlock:
            await self._inputs_send.send(item)

    async def _fire_timer(self, event: TimerFired) -> None:
        await self._inputs_send.send(event)

    async def _consensus_loop(self) -> None:
        await self._round([Start()])
        while True:
            batch = [await self._inputs_recv.receive()]
            while len(batch) < MAX_INPUTS_PER_ROUND:
                try:
                    batch.append(self._inputs_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._round(batch)

    async def _round(self, inputs: Sequence[_Input]) -> None:
        """Step the core on every input that is waiting (and on every message it sends
        itself), then make all of it durable in one store transaction, send, and apply what
        was finalised. Inputs that arrived together share one fsync: a view's finalise votes
        and the next view's proposal usually do."""
        assert self.core is not None
        self._sends_since_yield = 0  # the receive that gave us `inputs` let the writers run
        self.last_step_at = trio.current_time()
        actions: list[Action] = []
        for item in inputs:
            if isinstance(item, _Submission):
                actions.extend(await self._on_submission(item))
            else:
                actions.extend(self._step_core(item)[0])
        while actions:
            executed = await self._execute(actions)
            actions = [a for event in executed for a in self._step_core(event)[0]]
        VIEW.set(self.core.view)

    def _step_core(self, event: Event) -> tuple[list[Action], int]:
        """Step the core on `event`, then on every message it sent itself, in order.

        Returns all their actions and how many of them the first step (on `event`) gave.
        What we send is noted here, before anything is committed, so a block finalised
        within the same round finds our votes and our notarization for the log."""
        assert self.core is not None
        out: list[Action] = []
        pending: deque[Event] = deque([event])
        first = -1
        while pending:
            actions = self.core.step(pending.popleft())
            if self._refused_by_drivers:
                # Never propose what we would not vote for (or one bad command stalls us).
                self.core.discard_pending(self._refused_by_drivers)
                self._refused_by_drivers = []
            for action in actions:
                if isinstance(action, Broadcast | Send):
                    self._remember_verified(action.message)
                    self._observe(action.message)
                    if isinstance(action, Broadcast) or action.to == self.me:
                        pending.append(MessageReceived(self.me, action.message))
            out.extend(actions)
            if first < 0:
                first = len(out)
        return out, first

    async def _on_submission(self, sub: _Submission) -> list[Action]:
        if not self.accepting and sub.reply_to is not None:
            await self._reply_submitted(sub, False, "member is shutting down")
            return []
        if self.drivers.checks_envelopes:
            # The checks this member runs before voting, run before queueing too: a command
            # no honest member would vote for must never reach a proposal.
            reason = self.drivers.vote_check(sub.checked)
            if reason is not None:
                VOTE_CHECK_REFUSED.inc()
                if sub.reply_to is not None:
                    await self._reply_submitted(sub, False, reason)
                return []
        if sub.reply_to is not None:
            # Registered before stepping: with a full batch the block can finalise (and its
            # outcome go out) in this very round.
            self._bounded_put(self._waiting, sub.checked.envelope_id, sub.reply_to,
                              MAX_WAITING_SUBMITTERS)
        actions, first = self._step_core(CommandSubmitted(sub.envelope))
        if sub.reply_to is None:
            return actions
        refused = next((a.reason for a in actions[:first]
                        if isinstance(a, Refused) and a.sender is None), None)
        if refused is not None:
            self._waiting.pop(sub.checked.envelope_id, None)
        # Queued now, so it leaves before the outcome of a block finalised in this round.
        await self._reply_submitted(sub, refused is None, refused)
        if refused is None:
            with contextlib.suppress(trio.WouldBlock):
                self._gossip_send.send_nowait(sub.envelope)
        return actions

    async def _reply_submitted(self, sub: _Submission, accepted: bool, reason: str | None
                               ) -> None:
        assert self.manager is not None and sub.reply_to is not None
        SUBMISSIONS.labels("accepted" if accepted else "refused").inc()
        peer, rid = sub.reply_to
        # Without yielding: acks of one batch of submissions leave in one write.
        self.manager.router.send_nowait(Channel.CLIENT, peer, wire.encode_message(
            wire.Submitted(rid, sub.checked.envelope_id, accepted, reason)))
        await self._sent_nowait()

    async def _sent_nowait(self) -> None:
        """Count a message queued with send_nowait; every SENDS_PER_YIELD, let the links'
        writers drain their queues."""
        self._sends_since_yield += 1
        if self._sends_since_yield >= SENDS_PER_YIELD:
            self._sends_since_yield = 0
            await trio.lowlevel.checkpoint()

    async def _execute(self, actions: Sequence[Action]) -> list[Event]:
        """Run a round's actions: first one store transaction holding *every* guard record
        and finalised block among them (a signature never leaves before its guard record is
        durable, and a round costs one fsync), then the sends and the rest in order, then the
        execution of what was finalised (after the sends: our votes do not wait for it).
        Returns the BlockExecuted events for the core."""
        assert self.store is not None and self.manager is not None
        guard = [StoreGuardRecord(a.epoch, a.view, _guard_kind(a.kind), a.digest)
                 for a in actions if isinstance(a, PersistSignerGuard)]
        finalized = [a for a in actions if isinstance(a, Finalized)]
        appended = await self._persist(guard, finalized) if guard or finalized else []
        for action in actions:
            # Queued without yielding: the links' writers run after the round and send
            # everything it produced for a peer in one write.
            if isinstance(action, Broadcast):
                self.manager.router.broadcast_nowait(
                    Channel.CONSENSUS, encode_message(self.committee, action.message))
                await self._sent_nowait()
            elif isinstance(action, Send):
                if action.to != self.me:
                    self.manager.router.send_nowait(
                        Channel.CONSENSUS, self.committee.members[action.to],
                        encode_message(self.committee, action.message))
                    await self._sent_nowait()
            elif isinstance(action, SetTimer):
                self._timers.set(action.kind, action.view, action.delay_ms)
            elif isinstance(action, EvidenceFound):
                ev = action.evidence
                EVIDENCE.labels(ev.kind.value).inc()
                log.warning("consensus.evidence", member=ev.member, view=ev.view,
                            kind=ev.kind.value)
                await self.store.record_event(evidence=[EvidenceRecord(
                    ev.member, self.committee.epoch, ev.view, ev.kind.value, ev.encode())])
            elif isinstance(action, FetchBlocks):
                # When a fetch is already under way the core asks again if still behind.
                with contextlib.suppress(trio.WouldBlock):
                    self._fetch_send.send_nowait(action)
            elif isinstance(action, StateDivergence):
                self.diverged = (f"height {action.height}: a block claims state root "
                                 f"{action.claimed_root.hex()[:16]}, ours is "
                                 f"{action.local_root.hex()[:16]}")
                DIVERGED.set(1)
                log.critical("state.divergence", height=action.height,
                             claimed=action.claimed_root.hex(), local=action.local_root.hex())
            elif isinstance(action, Refused):
                CORE_REFUSED.labels(action.reason.split(":")[0][:48]).inc()
        return await self._apply_finalized(appended)

    # -- bookkeeping of what we saw, for the log's per-block signatures ------------------

    @staticmethod
    def _bounded_put(table: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)

    def _observe(self, msg: Message) -> None:
        """Keep what the log will want (votes and notarizations, in the journal) and when
        each proposal was first seen (the finality-latency histogram)."""
        self.journal.observe(msg)
        if isinstance(msg, Proposal) and msg.block.digest not in self._first_seen:
            self._bounded_put(self._first_seen, msg.block.digest, trio.current_time(),
                              MAX_TRACKED_PROPOSALS)

    # -- finalisation: store, execute, tell submitters ----------------------------------

    async def _persist(self, guard: list[StoreGuardRecord], finalized: list[Finalized]
                       ) -> list[BlockToAppend]:
        """One store transaction for a round: guard records, finalised blocks and the late
        votes of blocks stored before. Returns the blocks appended, in height order.

        A guard refusal means the core and the store disagree about what we signed: a bug.
        It propagates and stops the member rather than risk an equivocation.
        """
        assert self.store is not None
        for f in finalized:
            self.journal.finalized(f.block, f.certificate)
        items = self.journal.take_blocks()
        LATE_VOTES.labels("dropped").inc(self.journal.late_votes_dropped)
        late = self.journal.take_late_votes()
        if not items:
            # Blocks final through a descendant whose own finalization we have not been
            # handed yet wait: the store takes a chain only when its last block carries one.
            if guard:
                await self.store.write_soon(lambda s: s.record_event(guard=guard,
                                                                     late_votes=late))
                LATE_VOTES.labels("stored").inc(len(late))
            else:
                self.journal.put_back_late_votes(late)
            return []
        # Every signature here was verified before it reached the core. Small appends run
        # on the event loop when the store is free (AsyncStore.write_soon): this is the
        # critical path of every view, and a thread hand-off costs more than the commit.
        # Large ones (Merkle nodes and entries for many commands) go to the worker thread,
        # where SQLite's C code runs alongside the loop.
        if sum(len(item.block.commands) for item in items) <= INLINE_APPEND_COMMANDS:
            await self.store.write_soon(lambda s: s.append_blocks(
                items, verify_signatures=False, guard=guard, late_votes=late))
        else:
            await self.store.append_blocks(items, verify_signatures=False, guard=guard,
                                           late_votes=late)
        self.journal.stored(items)
        LATE_VOTES.labels("stored").inc(len(late))
        return items

    async def _apply_finalized(self, items: Sequence[BlockToAppend]) -> list[Event]:
        """Execute blocks already appended, tell their submitters; BlockExecuted events for
        the core."""
        if not items:
            return []
        executed: list[Event] = []
        now = trio.current_time()
        for item in items:
            block = item.block
            log_index = self.log_size
            self.log_size += len(block.commands)
            checked = [self._checked.get(blake3_digest(c)) for c in block.commands]
            result = self.executor.apply_block(block.height, block.digest, block.commands,
                                               checked=checked)
            self.height = block.height
            self.state_root = result.state_root
            self.finalized_commands += len(block.commands)
            FINALIZED_BLOCKS.inc()
            FINALIZED_COMMANDS.inc(len(block.commands))
            FINALIZED_HEIGHT.set(block.height)
            seen = self._first_seen.pop(block.digest, None)
            if seen is not None:
                FINALITY_LATENCY.observe(now - seen)
            executed.append(BlockExecuted(block.height, result.state_root))
            self.drivers.on_applied(result)
            await self._tell_submitters(result, log_index)
        for send, _ in self._block_requests.values():
            with contextlib.suppress(trio.WouldBlock):
                send.send_nowait(None)  # wake parked readers
        self._progress.set()
        self._progress = trio.Event()
        return executed

    async def _tell_submitters(self, result: BlockResult, first_log_index: int) -> None:
        assert self.manager is not None
        by_envelope: dict[bytes, list[Any]] = {}
        position: dict[bytes, int] = {}
        for outcome in result.outcomes:
            by_envelope.setdefault(outcome.envelope_id, []).append(outcome.to_wire())
            # The envelope's index among the block's commands = its leaf in the log.
            position.setdefault(outcome.envelope_id, outcome.position)
        for envelope_id, outcomes in by_envelope.items():
            waiter = self._waiting.pop(envelope_id, None)
            if waiter is None:
                continue
            peer, rid = waiter
            # Queued without yielding, so a client's outcomes of one block leave in one
            # write (the writers get a turn every SENDS_PER_YIELD messages).
            self.manager.router.send_nowait(Channel.CLIENT, peer, wire.encode_message(
                wire.Outcome(rid, result.height, first_log_index + position[envelope_id],
                             tuple(outcomes))))
            await self._sent_nowait()

    # -- validation hook (called inside Core.step) ---------------------------------------

    def _validate_block_commands(self, commands: tuple[bytes, ...]) -> bool:
        for command in commands:
            d = blake3_digest(command)
            checked = self._checked.get(d)
            if checked is None:
                # Not seen through gossip: check it here (rare; costs one verify on the loop).
                try:
                    checked = self.executor.check_command(command)
                except CommandRefused:
                    return False
                self._bounded_put(self._checked, d, checked, MAX_CHECKED_ENVELOPES)
            if isinstance(checked, MemberCommand) or self.drivers.checks_envelopes:
                reason = self.drivers.vote_check(checked)
                if reason is not None:
                    VOTE_CHECK_REFUSED.inc()
                    log.info("vote.refused", reason=reason)
                    self._refused_by_drivers.append(command)
                    return False
        return True

    # -- intake tasks -------------------------------------------------------------------

    def _decode(self, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, Message]]:
        """Decode a batch of consensus messages; drop (and count) non-members and garbage."""
        out: list[tuple[int, Message]] = []
        for sender, data in batch:
            index = self.committee.index_of(sender)
            if index is None:
                CONSENSUS_REJECTED.labels("not a member").inc()
                continue
            try:
                out.append((index, decode_message(self.committee, data)))
            except RemoteError as e:
                CONSENSUS_REJECTED.labels(type(e).__name__).inc()
                log.debug("consensus.rejected", sender=short(sender), error=str(e))
        return out

    def _signature_checks(self, msg: Message) -> int:
        """About how many ed25519 verifications `msg` costs (the inline-or-thread choice)."""
        if isinstance(msg, Proposal):
            return 1 + len(msg.block.evidence) + sum(
                1 for c in msg.block.commands if blake3_digest(c) not in self._checked)
        if isinstance(msg, Notarization | Finalization):
            extra = 0 if msg.block is None else len(msg.block.evidence)
            return self._verified_votes.unknown_in(msg.certificate) + extra
        if isinstance(msg, Nullification):
            return self._verified_votes.unknown_in(msg.certificate)
        if isinstance(msg, ProposalHeader):
            return 0 if self._verified_votes.knows_proposal(
                self.committee.epoch, msg.view, msg.digest, msg.proposer, msg.signature) else 1
        if isinstance(msg, Vote):
            return 1
        return 2 if isinstance(msg, EvidenceMessage) else 0  # a sync request has none

    def _verify_decoded(self, decoded: list[tuple[int, Message]]
                        ) -> list[tuple[MessageReceived, list[tuple[bytes, Envelope | MemberCommand]]]]:
        """Verify signatures and pre-check proposed envelopes (event loop or worker thread:
        it reads `_checked` but never writes it)."""
        out = []
        for index, msg in decoded:
            try:
                verify_message(self.committee, msg, self._verified_votes)
            except RemoteError as e:
                CONSENSUS_REJECTED.labels(type(e).__name__).inc()
                log.debug("consensus.rejected", sender=index, error=str(e))
                continue
            checked: list[tuple[bytes, Envelope | MemberCommand]] = []
            if isinstance(msg, Proposal):
                for command in msg.block.commands:
                    d = blake3_digest(command)
                    if d in self._checked:
                        continue
                    try:
                        checked.append((d, self.executor.check_command(command)))
                    except CommandRefused:
                        break  # the core's hook will refuse the block
            out.append((MessageReceived(index, msg), checked))
        return out

    def _decode_and_verify(self, batch: list[tuple[bytes, bytes]]
                           ) -> list[tuple[MessageReceived, list[tuple[bytes, Envelope | MemberCommand]]]]:
        """Worker thread: decode a large batch, verify it, pre-check proposed envelopes."""
        return self._verify_decoded(self._decode(batch))

    async def _consensus_intake(self) -> None:
        """Verify incoming consensus messages in batches. A small batch (a few votes or a
        certificate: up to INLINE_VERIFY_SIGNATURES checks, ~60 µs each) is verified on the
        event loop: a worker-thread hand-off costs more than that in context switches on a
        busy machine. Larger batches go to a worker thread, off the loop."""
        assert self.manager is not None
        rx = self.manager.router.receive(Channel.CONSENSUS)
        limiter = trio.CapacityLimiter(1)
        while True:
            batch = [await rx.receive()]
            while len(batch) < VERIFY_BATCH:
                try:
                    batch.append(rx.receive_nowait())
                except trio.WouldBlock:
                    break
            verified: list[tuple[MessageReceived, list[tuple[bytes, Envelope | MemberCommand]]]]
            if sum(len(data) for _, data in batch) > INLINE_DECODE_BYTES:
                verified = await trio.to_thread.run_sync(self._decode_and_verify, batch,
                                                         limiter=limiter)
            else:
                decoded = self._decode(batch)
                if sum(self._signature_checks(m) for _, m in decoded) <= INLINE_VERIFY_SIGNATURES:
                    verified = self._verify_decoded(decoded)
                else:
                    verified = await trio.to_thread.run_sync(self._verify_decoded, decoded,
                                                             limiter=limiter)
            for event, checked in verified:
                for d, envelope in checked:
                    self._bounded_put(self._checked, d, envelope, MAX_CHECKED_ENVELOPES)
                self._remember_verified(event.message)
                self._observe(event.message)
                await self._enqueue(event)

    def _remember_verified(self, msg: Message) -> None:
        """Note the vote signatures in a verified message (or one we signed ourselves)."""
        if isinstance(msg, Vote):
            self._verified_votes.add_vote(msg)
        elif isinstance(msg, Proposal):
            b = msg.block
            self._verified_votes.add_proposal(b.epoch, b.view, b.digest, b.proposer,
                                              msg.signature)
        elif isinstance(msg, ProposalHeader):
            self._verified_votes.add_proposal(self.committee.epoch, msg.view, msg.digest,
                                              msg.proposer, msg.signature)
        elif isinstance(msg, Notarization | Finalization | Nullification):
            self._verified_votes.add_certificate(msg.certificate)

    async def _gossip_relay(self) -> None:
        """Relay accepted envelopes to the other members: everything queued when the relay
        runs goes in one message. No linger: the relay runs after the round that accepted
        the envelopes, so a burst is already queued, and waiting would only add to every
        command's latency (the leader needs the envelope to propose it)."""
        assert self.manager is not None
        while True:
            batch = [await self._gossip_recv.receive()]
            size = len(batch[0])
            while len(batch) < wire.MAX_GOSSIP_BATCH and size < MAX_GOSSIP_BYTES:
                try:
                    envelope = self._gossip_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(envelope)
                size += len(envelope)
            await self.manager.router.broadcast(
                Channel.GOSSIP, wire.encode_message(wire.GossipEnvelopes(tuple(batch))))

    def _check_envelopes(self, envelopes: Sequence[bytes]
                         ) -> list[tuple[bytes, Envelope | None]]:
        """Worker thread: check each envelope; None for the ones that fail."""
        out: list[tuple[bytes, Envelope | None]] = []
        for data in envelopes:
            try:
                out.append((data, self.executor.check_client_command(data)))
            except CommandRefused:
                out.append((data, None))
        return out

    async def _decoded(self, channel: Channel) -> AsyncIterator[tuple[bytes, wire.Message]]:
        """A channel's messages, decoded; what does not decode is counted and dropped (the
        sender's fault, never a reason to stop)."""
        assert self.manager is not None
        async for sender, data in self.manager.router.receive(channel):
            try:
                msg = wire.decode_message(data)
            except RemoteError as e:
                CONSENSUS_REJECTED.labels(f"malformed {channel.label}").inc()
                log.debug("message.rejected", channel=channel.label, sender=short(sender),
                          error=str(e))
                continue
            yield sender, msg

    async def _gossip_intake(self) -> None:
        assert self.manager is not None
        async for sender, msg in self._decoded(Channel.GOSSIP):
            index = self.committee.index_of(sender)
            if index is not None and isinstance(msg, wire.GossipObservation):
                self.drivers.on_observation(index, msg.observation)
                continue
            if index is None or not isinstance(msg, wire.GossipEnvelopes):
                log.debug("gossip.rejected", sender=short(sender), kind=type(msg).__name__)
                continue
            fresh = [e for e in msg.envelopes if blake3_digest(e) not in self._checked]
            if len(fresh) <= INLINE_CHECK_ENVELOPES and \
                    sum(len(e) for e in fresh) <= INLINE_CHECK_BYTES:
                checked = self._check_envelopes(fresh)
            else:
                checked = await trio.to_thread.run_sync(self._check_envelopes, fresh)
            for raw, envelope in checked:
                if envelope is None:
                    # A member relayed an envelope that does not check: its fault, not the
                    # client's; count it and carry on.
                    CONSENSUS_REJECTED.labels("relayed bad envelope").inc()
                    continue
                self._bounded_put(self._checked, blake3_digest(raw), envelope,
                                  MAX_CHECKED_ENVELOPES)
                await self._enqueue(_Submission(raw, envelope, None))

    def _check_submissions(self, envelopes: Sequence[bytes]
                           ) -> list[Envelope | CommandRefused]:
        """Check submitted envelopes (event loop or worker thread); a refusal is returned,
        not raised, so one bad envelope does not cost the others their answer."""
        out: list[Envelope | CommandRefused] = []
        for data in envelopes:
            try:
                out.append(self.executor.check_client_command(data))
            except CommandRefused as e:
                out.append(e)
        return out

    async def _client_intake(self) -> None:
        """Client requests, a batch at a time: submitted envelopes of one batch are checked
        together, on the event loop when they are few and small (one signature check each
        costs less than a worker-thread hand-off), else in one worker-thread call."""
        assert self.manager is not None
        router = self.manager.router
        rx = router.receive(Channel.CLIENT)
        while True:
            batch = [await rx.receive()]
            while len(batch) < VERIFY_BATCH:
                try:
                    batch.append(rx.receive_nowait())
                except trio.WouldBlock:
                    break
            submits: list[tuple[bytes, wire.Submit]] = []
            for sender, data in batch:
                try:
                    msg = wire.decode_message(data)
                except RemoteError as e:
                    CONSENSUS_REJECTED.labels("malformed client").inc()
                    log.debug("message.rejected", channel="client", sender=short(sender),
                              error=str(e))
                    continue
                if isinstance(msg, wire.Submit):
                    submits.append((sender, msg))
                elif isinstance(msg, wire.BlocksRequest):
                    self._queue_block_request(Channel.CLIENT, sender, msg)
                elif isinstance(msg, wire.StatusRequest):
                    await router.send(Channel.CLIENT, sender, wire.encode_message(
                        wire.Status(msg.request_id, self.status())))
            if not submits:
                continue
            envelopes = [m.envelope for _, m in submits]
            if len(envelopes) <= INLINE_CHECK_ENVELOPES and \
                    sum(len(e) for e in envelopes) <= INLINE_CHECK_BYTES:
                results = self._check_submissions(envelopes)
            else:
                results = await trio.to_thread.run_sync(self._check_submissions, envelopes)
            for (sender, msg), result in zip(submits, results, strict=True):
                if isinstance(result, CommandRefused):
                    SUBMISSIONS.labels("refused").inc()
                    await router.send(Channel.CLIENT, sender, wire.encode_message(wire.Submitted(
                        msg.request_id, blake3_digest(msg.envelope), False,
                        f"{result.reason}: {result}")))
                    continue
                self._bounded_put(self._checked, blake3_digest(msg.envelope), result,
                                  MAX_CHECKED_ENVELOPES)
                await self._enqueue(_Submission(msg.envelope, result, (sender, msg.request_id)))

    def _queue_block_request(self, channel: Channel, peer: bytes,
                             request: wire.BlocksRequest) -> None:
        try:
            self._block_requests[channel][0].send_nowait(
                _BlockRequest(channel, peer, request, trio.current_time()))
        except trio.WouldBlock:
            BLOCK_REQUESTS_DROPPED.labels(channel.label).inc()

    async def _sync_intake(self) -> None:
        assert self.manager is not None
        async for sender, msg in self._decoded(Channel.SYNC):
            if isinstance(msg, wire.BlocksRequest):
                self._queue_block_request(Channel.SYNC, sender, msg)
            elif isinstance(msg, wire.Blocks):
                # Only the member we asked can answer (request ids are guessable).
                reply = self._fetch_replies.get((sender, msg.request_id))
                if reply is not None:
                    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                        reply.send_nowait(msg)

    # -- serving blocks (tail and catch-up) ---------------------------------------------

    def _read_blocks(self, s: Store, start: int, count: int, limit: int
                     ) -> list[FinalizedBlock]:
        """Up to `count` blocks from `start` whose encoded reply fits `limit` bytes."""
        out: list[FinalizedBlock] = []
        size = 0
        stop = min(s.height, start + count - 1)
        for fb in s.iter_finalized(start, stop):
            size += len(encode(fb.to_wire()))
            if size > limit:
                break
            out.append(fb)
        return out

    async def _serve(self, req: _BlockRequest) -> None:
        assert self.store is not None and self.manager is not None
        r = req.request
        if self.diverged is not None:
            # docs/protocol.md §7: a member whose state disagrees with the chain serves no
            # reads until an operator has looked; the reader learns why at once.
            await self.manager.router.send(req.channel, req.peer, wire.encode_message(
                wire.Refused(r.request_id, f"state diverged: {self.diverged}")))
            return
        # Measured on the real encoding, with room for the reply's own framing.
        limit = min(wire.MAX_REPLY_BYTES, self.manager.router.max_payload - REPLY_HEADROOM)
        try:
            blocks = await self.store.run(lambda s: self._read_blocks(
                s, max(r.from_height, 1), max(r.max_blocks, 1), limit))
            if not blocks and r.from_height <= self.height:
                log.error("blocks.too_large", height=r.from_height, limit=limit)
            # Blocks are appended before they are executed (and self.height moves): the
            # tip we report is never below the blocks we send.
            tip = max(self.height, blocks[-1].height if blocks else 0)
            await self.manager.router.send(req.channel, req.peer, wire.encode_message(
                wire.Blocks(r.request_id, tip, tuple(blocks))))
        except (LocalError, RemoteError) as e:
            # Serving a reader never stops the member.
            log.error("blocks.serve_failed", peer=short(req.peer), error=str(e))

    async def _block_server(self, channel: Channel) -> None:
        """Serves one channel's `blocks?` requests; catch-up (sync) and readers (client)
        each have their own queue and server, so readers cannot crowd out catch-up."""
        recv = self._block_requests[channel][1]
        parked: list[_BlockRequest] = []
        while True:
            item: _BlockRequest | None = None
            with trio.move_on_after(1.0):
                item = await recv.receive()
            now = trio.current_time()
            if item is not None:
                if item.request.wait and item.request.from_height > self.height:
                    if len(parked) < MAX_PARKED_REQUESTS:
                        parked.append(item)
                    continue
                await self._serve(item)
            still: list[_BlockRequest] = []
            for p in parked:
                if p.request.from_height <= self.height or now - p.received_at > wire.BLOCKS_WAIT_S:
                    await self._serve(p)
                else:
                    still.append(p)
            parked = still

    async def _fetcher(self) -> None:
        """Catch-up: ask connected members in turn; check everything before the core sees it."""
        assert self.manager is not None
        turn = 0
        async for request in self._fetch_recv:
            peers = [p for p in self.manager.member_links() if p != self.key.public]
            for attempt in range(len(peers)):
                peer = peers[(turn + attempt) % len(peers)]
                chain = await self._fetch_from(peer, request)
                if chain is not None:
                    turn += attempt + 1
                    await self._inputs_send.send(BlocksFetched(chain))
                    break

    def _check_fetched(self, blocks: Sequence[FinalizedBlock]
                       ) -> tuple[tuple[tuple[Block, Certificate], ...], list[FinalizedBlock],
                                  list[tuple[bytes, Envelope | MemberCommand]]]:
        """Worker thread: everything a peer sent for catch-up, checked before use.

        The chain (links, finalize certificates) must verify; of the rest — each block's
        votes and certificates — only what is about exactly that block and verifies is kept,
        so a Byzantine peer can neither crash us nor plant bad signatures in our log. The
        blocks' envelopes are checked here too, off the event loop.
        """
        chain = _chain_of(blocks)
        if not chain:
            raise RemoteError("the reply holds no finalised run of blocks")
        verify_fetched(self.committee, chain)
        kept: list[FinalizedBlock] = []
        checked: list[tuple[bytes, Envelope | MemberCommand]] = []
        for fb, _ in zip(blocks, chain, strict=False):
            b = fb.block

            def certified(cert: Certificate | None, kind: VoteKind,
                          b: Block = b) -> Certificate | None:
                if cert is None or (cert.kind, cert.epoch, cert.view, cert.digest) != (
                        kind, b.epoch, b.view, b.digest):
                    return None
                try:
                    cert.verify(self.committee)
                except RemoteError:
                    return None
                return cert

            votes = tuple(v for v in fb.votes
                          if v.kind is not VoteKind.NULLIFY
                          and (v.epoch, v.view, v.digest) == (b.epoch, b.view, b.digest)
                          and v.verify(self.committee))
            kept.append(FinalizedBlock(b, certified(fb.finalization, VoteKind.FINALIZE),
                                       certified(fb.notarization, VoteKind.NOTARIZE), votes,
                                       fb.entries, fb.checkpoint))
            for command in b.commands:
                # A refused envelope is refused again, deterministically, when applied.
                with contextlib.suppress(CommandRefused):
                    checked.append((blake3_digest(command), self.executor.check_command(command)))
        return chain, kept, checked

    async def _fetch_from(self, peer: bytes, request: FetchBlocks
                          ) -> tuple[tuple[Block, Certificate], ...] | None:
        assert self.manager is not None
        rid = self._next_request_id
        self._next_request_id += 1
        send, recv = trio.open_memory_channel[wire.Blocks](1)
        self._fetch_replies[(peer, rid)] = send
        try:
            count = min(request.to_height - request.from_height + 1, wire.MAX_BLOCKS_PER_REPLY)
            sent = await self.manager.router.send(Channel.SYNC, peer, wire.encode_message(
                wire.BlocksRequest(rid, request.from_height, count, False)))
            if not sent:
                CATCHUP.labels("not sent").inc()
                return None
            reply: wire.Blocks | None = None
            with trio.move_on_after(FETCH_TIMEOUT_S):
                reply = await recv.receive()
            if reply is None or not reply.blocks:
                CATCHUP.labels("timeout" if reply is None else "empty").inc()
                return None
            try:
                chain, kept, checked = await trio.to_thread.run_sync(self._check_fetched,
                                                                     reply.blocks)
            except RemoteError as e:
                CATCHUP.labels("invalid").inc()
                log.warning("sync.invalid_chain", peer=short(peer), error=str(e))
                return None
            for fb in kept:
                self.journal.fetched(fb)
            for d, envelope in checked:
                self._bounded_put(self._checked, d, envelope, MAX_CHECKED_ENVELOPES)
            CATCHUP.labels("ok").inc()
            return chain
        finally:
            del self._fetch_replies[(peer, rid)]

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


def _decoded_unverified(command: bytes) -> Envelope | None:
    if is_member_command(command):
        return None
    try:
        return Envelope.decode(command)
    except CommandRefused:
        return None  # the executor refuses it again, as it did the first time


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in obj.items()
            if isinstance(v, bytes | int | str | bool | None)}


def _chain_of(blocks: Sequence[FinalizedBlock]) -> tuple[tuple[Block, Certificate], ...]:
    """Pair each fetched block with the certificate that finalises it or a later block.

    A trailing run finalised by nothing we received is left out; it is fetched again later.
    """
    pairs: list[tuple[Block, Certificate]] = []
    later: Certificate | None = None
    for fb in reversed(blocks):
        if fb.finalization is not None:
            later = fb.finalization
        if later is not None:
            pairs.append((fb.block, later))
    pairs.reverse()
    return tuple(pairs)
