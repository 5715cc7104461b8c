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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from ..attestation.collateral import CollateralCache
from ..attestation.gate import NoAttestationGate, TdxGate, make_gate, run_expiry_rechecks
from ..attestation.policy import AttestationPolicy
from ..commands import Acl, CommandRefused, Envelope
from ..committee import CommitteeSpec
from ..components import base as component_base
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
    Message,
    Notarization,
    Proposal,
    decode_message,
    encode_message,
    verify_fetched,
    verify_message,
)
from ..consensus.statements import SignedKind
from ..consensus.types import Block, Certificate, Vote, VoteKind
from ..crypto import SigningKey
from ..errors import OperatorError, RemoteError
from ..identity import digest as blake3_digest
from ..identity import short
from ..logs import get_logger
from ..metrics import counter, gauge, histogram
from ..store.aio import AsyncStore
from ..store.records import FinalizedBlock
from ..store.sqlite import BlockToAppend, EvidenceRecord, Store, store_path
from ..store.sqlite import GuardRecord as StoreGuardRecord
from ..transport.manager import ConnectionManager, TransportConfig
from ..transport.router import Channel
from . import wire
from .timers import TimerService

log = get_logger(__name__)

#: Inputs waiting for the consensus loop. Producers block when it is full (backpressure
#: onto the transport's own bounded queues, whose overflow policy then applies).
MAX_QUEUED_INPUTS: Final = 4096
#: Incoming consensus messages verified per worker-thread call.
VERIFY_BATCH: Final = 256
#: Envelopes whose signature and stateless checks passed, by blake3 of their bytes, so a
#: block's validation and execution do not verify them again on the event loop.
MAX_CHECKED_ENVELOPES: Final = 65_536
#: Block digests whose votes and notarization we keep until they finalise.
MAX_TRACKED_BLOCKS: Final = 1024
#: Submitters waiting for outcomes.
MAX_WAITING_SUBMITTERS: Final = 65_536
#: Pending block-range requests (tail, catch-up service) and parked "wait" requests.
MAX_BLOCK_REQUESTS: Final = 256
MAX_PARKED_REQUESTS: Final = 256
#: Envelopes waiting to be relayed to the other members; when full, relaying is skipped
#: (the envelope stays in our own batcher and we propose it when we lead).
MAX_GOSSIP_OUTBOX: Final = 4096
#: How long the relay waits to fill a gossip message after the first envelope.
GOSSIP_LINGER_S: Final = 0.002
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
DIVERGED = gauge("state_diverged", "1 when this member's executed state disagrees with a block")
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
        self.executor = Executor(self.committee.committee_id,
                                 Acl.allow(config.committee.acl.clients), self.component)
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
        self._loopback: deque[Event] = deque()
        self._checked: OrderedDict[bytes, Envelope] = OrderedDict()
        self._votes: OrderedDict[bytes, dict[tuple[int, int], Vote]] = OrderedDict()
        self._notarizations: OrderedDict[bytes, Certificate] = OrderedDict()
        self._first_seen: OrderedDict[bytes, float] = OrderedDict()
        self._fetched: OrderedDict[bytes, FinalizedBlock] = OrderedDict()
        self._waiting: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        #: Finalised blocks not yet stored: their finalizing descendant has not arrived.
        self._unstored: list[BlockToAppend] = []
        self._block_requests_send, self._block_requests_recv = (
            trio.open_memory_channel[_BlockRequest | None](MAX_BLOCK_REQUESTS))
        self._fetch_send, self._fetch_recv = trio.open_memory_channel[FetchBlocks](1)
        self._gossip_send, self._gossip_recv = trio.open_memory_channel[bytes](MAX_GOSSIP_OUTBOX)
        self._fetch_replies: dict[int, trio.MemorySendChannel[wire.Blocks]] = {}
        self._next_request_id = 1
        self.accepting = True
        self.diverged: str | None = None
        self.height = 0
        self.log_size = 0
        self.state_root = b"\x00" * 32
        self.started_at = time.time()
        self.finalized_commands = 0
        self._ready = False
        self._progress = trio.Event()

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
                             validate_block_commands=self._validate_block_commands)
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
                await nursery.start(self.manager.run)
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
                nursery.start_soon(self._block_server)
                nursery.start_soon(self._fetcher)
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

    def stop_accepting(self) -> None:
        """SIGTERM, first step: refuse new client commands; consensus keeps running."""
        self.accepting = False

    def _recover(self, s: Store) -> DurableState:
        """Rebuild the executor by replaying the log, and the core's durable state."""
        tip: FinalizedBlock | None = None
        for fb in s.iter_finalized():
            self.executor.apply_block(fb.height, fb.block.digest, fb.block.commands)
            tip = fb
        self.height = s.height
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

    async def _fire_timer(self, event: TimerFired) -> None:
        await self._inputs_send.send(event)

    async def _consensus_loop(self) -> None:
        await self._step(Start())
        while True:
            item = await self._inputs_recv.receive()
            if isinstance(item, _Submission):
                await self._on_submission(item)
            else:
                await self._step(item)

    async def _step(self, event: Event) -> list[Action]:
        """Step the core, run its actions in order, then drain what we sent ourselves."""
        assert self.core is not None
        first = self.core.step(event)
        await self._execute(first)
        while self._loopback:
            await self._execute(self.core.step(self._loopback.popleft()))
        VIEW.set(self.core.view)
        return first

    async def _on_submission(self, sub: _Submission) -> None:
        if not self.accepting and sub.reply_to is not None:
            await self._reply_submitted(sub, False, "member is shutting down")
            return
        actions = await self._step(CommandSubmitted(sub.envelope))
        refused = next((a.reason for a in actions
                        if isinstance(a, Refused) and a.sender is None), None)
        if sub.reply_to is None:
            return
        await self._reply_submitted(sub, refused is None, refused)
        if refused is None:
            assert self.manager is not None
            self._bounded_put(self._waiting, sub.checked.envelope_id, sub.reply_to,
                              MAX_WAITING_SUBMITTERS)
            with contextlib.suppress(trio.WouldBlock):
                self._gossip_send.send_nowait(sub.envelope)

    async def _reply_submitted(self, sub: _Submission, accepted: bool, reason: str | None
                               ) -> None:
        assert self.manager is not None and sub.reply_to is not None
        SUBMISSIONS.labels("accepted" if accepted else "refused").inc()
        peer, rid = sub.reply_to
        await self.manager.router.send(Channel.CLIENT, peer, wire.encode_message(
            wire.Submitted(rid, sub.checked.envelope_id, accepted, reason)))

    async def _execute(self, actions: Sequence[Action]) -> None:
        assert self.store is not None and self.manager is not None
        guard: list[StoreGuardRecord] = []
        finalized: list[Finalized] = []
        for action in actions:
            if guard and not isinstance(action, PersistSignerGuard):
                await self._persist_guard(guard)
                guard = []
            if finalized and not isinstance(action, Finalized):
                await self._finalize(finalized)
                finalized = []
            if isinstance(action, PersistSignerGuard):
                guard.append(StoreGuardRecord(action.epoch, action.view,
                                              _guard_kind(action.kind), action.digest))
            elif isinstance(action, Finalized):
                finalized.append(action)
            elif isinstance(action, Broadcast):
                self._observe(action.message, self.me)
                await self.manager.router.broadcast(
                    Channel.CONSENSUS, encode_message(self.committee, action.message))
                self._loopback.append(MessageReceived(self.me, action.message))
            elif isinstance(action, Send):
                if action.to == self.me:
                    self._loopback.append(MessageReceived(self.me, action.message))
                else:
                    await self.manager.router.send(
                        Channel.CONSENSUS, self.committee.members[action.to],
                        encode_message(self.committee, action.message))
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
        if guard:
            await self._persist_guard(guard)
        if finalized:
            await self._finalize(finalized)

    async def _persist_guard(self, records: list[StoreGuardRecord]) -> None:
        assert self.store is not None
        # A refusal here means the core and the store disagree about what we signed: a bug.
        # It propagates and stops the member rather than risk an equivocation.
        await self.store.record_event(guard=records)

    # -- bookkeeping of what we saw, for the log's per-block signatures ------------------

    @staticmethod
    def _bounded_put(table: OrderedDict[bytes, Any], key: bytes, value: Any, limit: int
                     ) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)

    def _observe(self, msg: Message, sender: int | None) -> None:
        if isinstance(msg, Vote) and msg.kind is not VoteKind.NULLIFY:
            votes = self._votes.get(msg.digest)
            if votes is None:
                votes = {}
                self._bounded_put(self._votes, msg.digest, votes, MAX_TRACKED_BLOCKS)
            votes.setdefault((int(msg.kind), msg.signer), msg)
        elif isinstance(msg, Notarization):
            self._bounded_put(self._notarizations, msg.certificate.digest, msg.certificate,
                              MAX_TRACKED_BLOCKS)
        elif isinstance(msg, Proposal) and msg.block.digest not in self._first_seen:
            self._bounded_put(self._first_seen, msg.block.digest, trio.current_time(),
                              MAX_TRACKED_BLOCKS)

    def _certificates_for(self, block: Block, certificate: Certificate
                          ) -> tuple[Certificate | None, Certificate | None, tuple[Vote, ...]]:
        fetched = self._fetched.pop(block.digest, None)
        votes = dict(self._votes.pop(block.digest, {}))
        if fetched is not None:
            for v in fetched.votes:
                votes.setdefault((int(v.kind), v.signer), v)
        finalization = certificate if certificate.digest == block.digest else None
        if finalization is None and fetched is not None:
            finalization = fetched.finalization
        notarization = self._notarizations.pop(block.digest, None)
        if notarization is None and fetched is not None:
            notarization = fetched.notarization
        if finalization is None and notarization is None:
            # Formed by the core from votes we hold: rebuild it from them.
            notes = [v for (k, _), v in sorted(votes.items()) if k == VoteKind.NOTARIZE]
            if len(notes) >= self.committee.quorum:
                notarization = Certificate.from_votes(notes)
        return finalization, notarization, tuple(v for _, v in sorted(votes.items()))

    # -- finalisation: store, execute, tell submitters ----------------------------------

    async def _finalize(self, actions: list[Finalized]) -> None:
        assert self.store is not None and self.core is not None
        for f in actions:
            fin, nota, votes = self._certificates_for(f.block, f.certificate)
            self._unstored.append(BlockToAppend(f.block, fin, votes, nota))
        if self._unstored[-1].finalization is None:
            # Final through a descendant whose own finalization we have not been handed yet:
            # the store takes a chain only when its last block carries one.
            return
        items, self._unstored = self._unstored, []
        # Every signature here was verified before it reached the core.
        await self.store.append_blocks(items, verify_signatures=False)
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
            self._loopback.append(BlockExecuted(block.height, result.state_root))
            await self._tell_submitters(result, log_index)
        with contextlib.suppress(trio.WouldBlock):
            self._block_requests_send.send_nowait(None)  # wake parked readers
        self._progress.set()
        self._progress = trio.Event()

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
            await self.manager.router.send(Channel.CLIENT, peer, wire.encode_message(
                wire.Outcome(rid, result.height, first_log_index + position[envelope_id],
                             tuple(outcomes))))

    # -- validation hook (called inside Core.step) ---------------------------------------

    def _validate_block_commands(self, commands: tuple[bytes, ...]) -> bool:
        for command in commands:
            d = blake3_digest(command)
            if d in self._checked:
                continue
            # Not seen through gossip: check it here (rare; costs one verify on the loop).
            try:
                envelope = self.executor.check_command(command)
            except CommandRefused:
                return False
            self._bounded_put(self._checked, d, envelope, MAX_CHECKED_ENVELOPES)
        return True

    # -- intake tasks -------------------------------------------------------------------

    def _decode_and_verify(self, batch: list[tuple[bytes, bytes]]
                           ) -> list[tuple[MessageReceived, list[tuple[bytes, Envelope]]]]:
        """Worker thread: decode, verify signatures, pre-check proposed envelopes."""
        out = []
        for sender, data in batch:
            index = self.committee.index_of(sender)
            if index is None:
                CONSENSUS_REJECTED.labels("not a member").inc()
                continue
            try:
                msg = decode_message(self.committee, data)
                verify_message(self.committee, msg)
            except RemoteError as e:
                CONSENSUS_REJECTED.labels(type(e).__name__).inc()
                log.debug("consensus.rejected", sender=short(sender), error=str(e))
                continue
            checked: list[tuple[bytes, Envelope]] = []
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

    async def _consensus_intake(self) -> None:
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
            verified = await trio.to_thread.run_sync(self._decode_and_verify, batch,
                                                     limiter=limiter)
            for event, checked in verified:
                for d, envelope in checked:
                    self._bounded_put(self._checked, d, envelope, MAX_CHECKED_ENVELOPES)
                self._observe(event.message, event.sender)
                await self._inputs_send.send(event)

    def _check_envelope(self, data: bytes) -> Envelope:
        return self.executor.check_command(data)

    async def _gossip_relay(self) -> None:
        """Relay accepted envelopes to the other members, a few milliseconds' worth at a
        time: one message per batch instead of one per envelope per member."""
        assert self.manager is not None
        while True:
            batch = [await self._gossip_recv.receive()]
            with trio.move_on_after(GOSSIP_LINGER_S):
                while len(batch) < wire.MAX_GOSSIP_BATCH:
                    batch.append(await self._gossip_recv.receive())
            await self.manager.router.broadcast(
                Channel.GOSSIP, wire.encode_message(wire.GossipEnvelopes(tuple(batch))))

    def _check_envelopes(self, envelopes: Sequence[bytes]
                         ) -> list[tuple[bytes, Envelope | None]]:
        """Worker thread: check each envelope; None for the ones that fail."""
        out: list[tuple[bytes, Envelope | None]] = []
        for data in envelopes:
            try:
                out.append((data, self.executor.check_command(data)))
            except CommandRefused:
                out.append((data, None))
        return out

    async def _gossip_intake(self) -> None:
        assert self.manager is not None
        rx = self.manager.router.receive(Channel.GOSSIP)
        async for sender, data in rx:
            if self.committee.index_of(sender) is None:
                continue
            try:
                msg = wire.decode_message(data)
                if not isinstance(msg, wire.GossipEnvelopes):
                    raise RemoteError("gossip channel carries envelopes only")
            except RemoteError as e:
                log.debug("gossip.rejected", sender=short(sender), error=str(e))
                continue
            fresh = [e for e in msg.envelopes if blake3_digest(e) not in self._checked]
            for raw, envelope in await trio.to_thread.run_sync(self._check_envelopes, fresh):
                if envelope is None:
                    # A member relayed an envelope that does not check: its fault, not the
                    # client's; count it and carry on.
                    CONSENSUS_REJECTED.labels("relayed bad envelope").inc()
                    continue
                self._bounded_put(self._checked, blake3_digest(raw), envelope,
                                  MAX_CHECKED_ENVELOPES)
                await self._inputs_send.send(_Submission(raw, envelope, None))

    async def _client_intake(self) -> None:
        assert self.manager is not None
        router = self.manager.router
        rx = router.receive(Channel.CLIENT)
        async for sender, data in rx:
            try:
                msg = wire.decode_message(data)
            except RemoteError as e:
                log.debug("client.rejected", sender=short(sender), error=str(e))
                continue
            if isinstance(msg, wire.Submit):
                try:
                    envelope = await trio.to_thread.run_sync(self._check_envelope, msg.envelope)
                except CommandRefused as e:
                    SUBMISSIONS.labels("refused").inc()
                    await router.send(Channel.CLIENT, sender, wire.encode_message(wire.Submitted(
                        msg.request_id, blake3_digest(msg.envelope), False,
                        f"{e.reason}: {e}")))
                    continue
                self._bounded_put(self._checked, blake3_digest(msg.envelope), envelope,
                                  MAX_CHECKED_ENVELOPES)
                await self._inputs_send.send(
                    _Submission(msg.envelope, envelope, (sender, msg.request_id)))
            elif isinstance(msg, wire.BlocksRequest):
                self._queue_block_request(Channel.CLIENT, sender, msg)
            elif isinstance(msg, wire.StatusRequest):
                await router.send(Channel.CLIENT, sender, wire.encode_message(
                    wire.Status(msg.request_id, self.status())))

    def _queue_block_request(self, channel: Channel, peer: bytes,
                             request: wire.BlocksRequest) -> None:
        try:
            self._block_requests_send.send_nowait(
                _BlockRequest(channel, peer, request, trio.current_time()))
        except trio.WouldBlock:
            log.debug("blocks.request_dropped", peer=short(peer))

    async def _sync_intake(self) -> None:
        assert self.manager is not None
        rx = self.manager.router.receive(Channel.SYNC)
        async for sender, data in rx:
            try:
                msg = wire.decode_message(data)
            except RemoteError as e:
                log.debug("sync.rejected", sender=short(sender), error=str(e))
                continue
            if isinstance(msg, wire.BlocksRequest):
                self._queue_block_request(Channel.SYNC, sender, msg)
            elif isinstance(msg, wire.Blocks):
                reply = self._fetch_replies.get(msg.request_id)
                if reply is not None:
                    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                        reply.send_nowait(msg)

    # -- serving blocks (tail and catch-up) ---------------------------------------------

    def _read_blocks(self, s: Store, start: int, count: int) -> list[FinalizedBlock]:
        out: list[FinalizedBlock] = []
        size = 0
        stop = min(s.height, start + count - 1)
        for fb in s.iter_finalized(start, stop):
            size += len(fb.block.encode()) + 512 * (len(fb.votes) + 2)
            if out and size > wire.MAX_REPLY_BYTES:
                break
            out.append(fb)
        return out

    async def _serve(self, req: _BlockRequest) -> None:
        assert self.store is not None and self.manager is not None
        r = req.request
        blocks = await self.store.run(
            lambda s: self._read_blocks(s, max(r.from_height, 1), max(r.max_blocks, 1)))
        await self.manager.router.send(req.channel, req.peer, wire.encode_message(
            wire.Blocks(r.request_id, self.height, tuple(blocks))))

    async def _block_server(self) -> None:
        parked: list[_BlockRequest] = []
        while True:
            item: _BlockRequest | None = None
            with trio.move_on_after(1.0):
                item = await self._block_requests_recv.receive()
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

    async def _fetch_from(self, peer: bytes, request: FetchBlocks
                          ) -> tuple[tuple[Block, Certificate], ...] | None:
        assert self.manager is not None
        rid = self._next_request_id
        self._next_request_id += 1
        send, recv = trio.open_memory_channel[wire.Blocks](1)
        self._fetch_replies[rid] = send
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
            chain = _chain_of(reply.blocks)
            try:
                await trio.to_thread.run_sync(verify_fetched, self.committee, chain)
            except RemoteError as e:
                CATCHUP.labels("invalid").inc()
                log.warning("sync.invalid_chain", peer=short(peer), error=str(e))
                return None
            for fb in reply.blocks:
                self._bounded_put(self._fetched, fb.block.digest, fb, MAX_TRACKED_BLOCKS)
            CATCHUP.labels("ok").inc()
            return chain
        finally:
            del self._fetch_replies[rid]

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
        }


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
