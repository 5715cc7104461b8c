"""The consensus loop: the one task that owns the consensus core and the executor.

Why this module is long: the round (step, guard, send, commit, execute, tell) is one
sequence whose order is the safety argument, kept in one place; recovery is the reverse of
it. Its tracing lives in node/trace.py.

It takes everything queued in its inbox (node/inbox.py) a round at a time: every input is
stepped through the core (and every message the core sends itself), then the round is made
durable — a round that finalised blocks by one store transaction holding its guard records,
its blocks and the guard records the guard journal holds for the store (`_persist`, with the
block journal); a round that only signs by one O_DSYNC write of its guard records to the
guard journal (log/guard_journal.py) — then the messages go out, then what was finalised is
executed and its submitters are told (`_apply_finalized`). A signature never leaves before
its guard record is durable, a round costs one durable write, and an outcome never leaves
before its block is durable. Without a guard journal (`guard_journal=None`) every round's
guard records go to the store.

The voter reports what it has executed in `VoterStatus`, which the other parts and the
member's status read; it asks the resolver for missing blocks (`fetch_requests`), hands
accepted envelopes to the mempool's relay (`relay_outbox`) and wakes parked block readers
after executing (`wake_readers`).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from ..commands.envelope import CommandRefused, Envelope
from ..commands.member import MemberCommand, is_member_command
from ..components.executor import BlockResult, Executor
from ..consensus.events import (
    Action,
    BlockExecuted,
    BlockValidated,
    Broadcast,
    CommandSubmitted,
    CoreConfig,
    DurableState,
    Event,
    EvidenceFound,
    FetchBlocks,
    Finalized,
    GuardRecord,
    MessageReceived,
    PersistSignerGuard,
    RecordSeen,
    Refused,
    SeenStatement,
    Send,
    SetTimer,
    Start,
    StateDivergence,
    ValidateBlock,
    WrongRootFound,
)
from ..consensus.limits import MAX_VIEWS_BEHIND, RECOVERED_CERTIFIED_BLOCKS
from ..consensus.messages import Message, NullificationsRequest, encode_message
from ..consensus.root_evidence import WRONG_ROOT_KIND
from ..consensus.statements import SignedKind
from ..consensus.types import Block, Certificate, CertifiedRoots, VoteKind
from ..consensus.voter import Core
from ..log.aio import AsyncStore
from ..log.checkpoint import Checkpoint
from ..log.guard_journal import GuardJournal
from ..log.records import FinalizedBlock
from ..log.sqlite import MAX_EVENT_ITEMS, BlockToAppend, EvidenceRecord, SeenRecord, Store
from ..log.sqlite import GuardRecord as StoreGuardRecord
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.identity import digest as blake3_digest
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge, histogram
from ..transport.router import Channel, Router
from . import trace, wire
from .drivers import Drivers
from .inbox import SUBMISSIONS, Submission, VoterInput
from .journal import BlockJournal, bounded_put
from .snapshots import SnapshotStore, SnapshotWriter, restore_and_replay
from .timers import TimerService
from .verifier import CheckedEnvelopes, SeenMessages

log = get_logger(__name__)

#: Inputs the consensus loop takes in one round; their actions share one store commit.
MAX_INPUTS_PER_ROUND: Final = 64
#: Finalised blocks holding at most this many commands in all are appended on the event
#: loop when the store is idle; larger appends go to the store's worker thread.
INLINE_APPEND_COMMANDS: Final = 64
#: Messages queued without yielding (Router.send_nowait) between two yields to the links'
#: writers: well below a link's send queue (transport.link.LinkTiming.send_queue), so a
#: long step (catch-up finalising many blocks) never overflows it.
SENDS_PER_YIELD: Final = 64
#: Submitters waiting for outcomes.
MAX_WAITING_SUBMITTERS: Final = 65_536
#: First-seen statements waiting for the next commit (they never cost a commit of their
#: own); beyond this the oldest are dropped and counted: only detection across a restart
#: is weakened, never safety.
MAX_PENDING_SEEN: Final = 2048
#: With a guard journal, the journalled guard records are committed to the store by a commit
#: of their own once this many wait with no finalised block to carry them (well below
#: guard_journal.MAX_UNSETTLED).
GUARD_COMMIT_RECORDS: Final = 256
#: The seen_votes table is pruned when its floor (view − MAX_VIEWS_BEHIND) moved this far.
SEEN_PRUNE_VIEWS: Final = 16

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
DIVERGED = gauge("state_diverged", "1 when this member's executed state disagrees with a block")
VOTE_CHECK_REFUSED = counter("vote_checks_refused_total",
                             "Proposals not voted for because a driver's check refused them")
SEEN_DROPPED = counter("log_seen_statements_dropped_total",
                       "First-seen statements dropped before a commit took them")
NULLIFY_VOTES = counter("consensus_nullify_votes_total",
                        "Views this member voted to nullify: its view timer ran out, or the "
                        "leader's proposal was missing or refused")
LATE_VOTES = counter("log_late_votes_total",
                     "Votes that arrived after their block was handed to the log: stored with a "
                     "later commit, or dropped because too many were waiting", ("result",))


class VoterStatus:
    """What the voter has executed and how it stands. Written by the voter (and by recovery
    before it starts); read by the resolver, the member's status and its waiters."""

    def __init__(self) -> None:
        self.height = 0
        self.log_size = 0
        self.state_root = b"\x00" * 32
        self.finalized_commands = 0
        #: Height of the snapshot the last start began from (0: replayed from genesis).
        self.restored_from = 0
        #: Why our executed state disagrees with the chain; None while it agrees.
        self.diverged: str | None = None
        #: False once the member is stopping: new client commands are refused.
        self.accepting = True
        #: trio time of the consensus loop's last step; the core's view timer guarantees
        #: one at least every view timeout, so a stale value means the loop is stuck.
        self.last_step_at: float | None = None
        #: Set (and replaced) after every round that executed blocks.
        self.progress = trio.Event()

    def advanced(self) -> None:
        self.progress.set()
        self.progress = trio.Event()


def _guard_kind(kind: SignedKind) -> Any:
    # The store's guard keeps the kind as an integer; VoteKind for the three vote kinds and
    # the proposal's own value otherwise (docs/protocol.md §8 numbers them alike).
    return VoteKind(int(kind)) if int(kind) <= 2 else kind


def _decoded_unverified(command: bytes) -> Envelope | None:
    if is_member_command(command):
        return None
    try:
        return Envelope.decode(command)
    except CommandRefused:
        return None  # the executor refuses it again, as it did the first time


def seen_records(epoch: int, actions: Sequence[Action]) -> list[SeenRecord]:
    """The store's rows for the first-seen statements among a step's actions."""
    return [SeenRecord(a.statement.member, epoch, a.statement.view, int(a.statement.kind),
                       a.statement.digest, a.statement.signature)
            for a in actions if isinstance(a, RecordSeen)]


def queue_seen(pending: list[SeenRecord], records: Sequence[SeenRecord],
               limit: int = MAX_PENDING_SEEN) -> int:
    """Append `records` to the statements waiting for a commit, keeping the newest `limit`;
    returns how many of the oldest were dropped."""
    pending.extend(records)
    excess = len(pending) - limit
    if excess <= 0:
        return 0
    del pending[:excess]
    return excess


def recover(s: Store, committee: CommitteeSpec, executor: Executor, journal: BlockJournal,
            status: VoterStatus, guard_lost: bool,
            snapshots: SnapshotStore | None = None) -> DurableState:
    """Store thread, before the voter starts: rebuild the executor from the newest good
    snapshot and the blocks after it (node/snapshots.py), and the core's durable state."""

    replayed: deque[tuple[int, bytes]] = deque(maxlen=RECOVERED_CERTIFIED_BLOCKS)

    def apply(block: Block) -> bytes:
        # Our own store holds only blocks whose envelopes were verified before they were
        # certified and stored: replay without checking every client signature again
        # (restart time would grow with the log). Admission is still decided afresh.
        root = executor.apply_block(block.height, block.digest, block.commands, checked=[
            _decoded_unverified(c) for c in block.commands]).state_root
        replayed.append((block.height, root))
        return root

    restored = restore_and_replay(s, executor, snapshots, apply)
    tip: FinalizedBlock | None = s.finalized(s.height) if s.height else None
    status.height = s.height
    status.restored_from = restored.snapshot_height
    journal.durable_height = s.height
    status.log_size = s.size
    status.state_root = executor.state_root()
    # The core signs in no view below `start − MAX_VIEWS_BEHIND` (rules.guard_allows) and
    # prunes its guard below that window: older records are never read, and loading them
    # all would make every restart grow with the log (docs/decisions.md, snapshots).
    highest = s.highest_signed_view(committee.epoch) or 0
    start = max((0 if tip is None else tip.block.view) + 1, highest, 1)
    guard = tuple(GuardRecord(epoch, view, SignedKind(kind), digest)
                  for epoch, view, kind, digest in s.guard_records(
                      committee.epoch, since_view=start - MAX_VIEWS_BEHIND - 1))
    guard_lost = guard_lost or (tip is not None and not guard)
    start_view = max([tip.block.view + 1 if tip is not None else 1, *(g.view for g in guard)])
    seen = tuple(SeenStatement(r.member, r.view, SignedKind(r.kind), r.digest, r.signature)
                 for r in s.seen_statements(committee.epoch, start_view - MAX_VIEWS_BEHIND))
    tip_cert: Certificate | None = None
    if tip is not None:
        tip_cert = tip.finalization or tip.notarization
    FINALIZED_HEIGHT.set(status.height)
    log.info("member.recovered", height=status.height, log_size=status.log_size,
             snapshot=restored.snapshot_height, replayed=restored.replayed,
             certified_at=restored.certified_at,
             guard_records=len(guard), seen_statements=len(seen), guard_lost=guard_lost,
             state_root=status.state_root.hex()[:16])
    return DurableState(
        guard=guard,
        tip=None if tip is None else tip.block,
        tip_certificate=tip_cert,
        executed=CertifiedRoots(status.height, status.state_root, s.size, s.root())
        if status.height else None,
        guard_lost=guard_lost,
        seen=seen,
        replayed=tuple(CertifiedRoots(h, root, *s.log_at(h)) for h, root in replayed),
        certified=tuple(r for r in (s.block(h).roots for h in range(
            max(1, s.first_height - 1, s.height - RECOVERED_CERTIFIED_BLOCKS + 1),
            s.height + 1)) if r.height > 0),
    )


class Voter:
    """Owns the core (built here; it answers the core's ValidateBlock) and the executor's
    progress; runs the rounds (`run`, its one task). It arms the core's timers on `timers`,
    which fire into the inbox like every other input."""

    def __init__(self, committee: CommitteeSpec, me: int, key: SigningKey,
                 core_config: CoreConfig, durable: DurableState, *,
                 executor: Executor, drivers: Drivers, store: AsyncStore, router: Router,
                 journal: BlockJournal, checked: CheckedEnvelopes, seen: SeenMessages,
                 remember_verified: Callable[[Message], None],
                 inbox: trio.MemoryReceiveChannel[VoterInput], timers: TimerService,
                 relay_outbox: trio.MemorySendChannel[bytes],
                 fetch_requests: trio.MemorySendChannel[FetchBlocks],
                 wake_readers: Callable[[], None], status: VoterStatus,
                 asked: Callable[[int, NullificationsRequest], None] | None = None,
                 snapshot_writer: SnapshotWriter | None = None,
                 guard_journal: GuardJournal | None = None) -> None:
        self.committee = committee
        self.me = me
        self.executor = executor
        self.drivers = drivers
        self.store = store
        self.router = router
        self.journal = journal
        self.checked = checked
        self.seen = seen
        self.remember_verified = remember_verified
        self._inbox = inbox
        self.relay_outbox = relay_outbox
        self.fetch_requests = fetch_requests
        self.wake_readers = wake_readers
        self.status = status
        #: Told of every `nullifications?` the core sends, so the verifier admits the answer.
        self.asked = asked
        self.snapshot_writer = snapshot_writer
        #: Where a round that only signs makes its guard records durable (None: the store).
        self.guard_journal = guard_journal
        #: Journalled guard records not yet in the store.
        self._guard_unsettled: list[StoreGuardRecord] = []
        self.core = Core(committee, key, core_config, durable,
                         member_commands=drivers.member_commands)
        trace.start_from_environment(me)
        self.timers = timers
        self._waiting: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        #: Commands a driver's vote-time check refused during the current step.
        self._refused_by_drivers: list[bytes] = []
        self._sends_since_yield = 0
        #: First-seen statements for the next commit (docs/formats.md, seen statements).
        self._seen_pending: list[SeenRecord] = []
        self._seen_floor = -SEEN_PRUNE_VIEWS  # prune at the first commit

    async def run(self) -> None:
        await self._round([Start()])
        while True:
            batch = [await self._inbox.receive()]
            while len(batch) < MAX_INPUTS_PER_ROUND:
                try:
                    batch.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._round(batch)

    async def _round(self, inputs: Sequence[VoterInput]) -> None:
        """Step the core on every input that is waiting (and on every message it sends
        itself), then make all of it durable in one store transaction, send, and apply what
        was finalised. Inputs that arrived together share one fsync: a view's finalise votes
        and the next view's proposal usually do."""
        self._sends_since_yield = 0  # the receive that gave us `inputs` let the writers run
        self.status.last_step_at = trio.current_time()
        tracing = trace.begin() if trace.TRACER is not None else None
        actions: list[Action] = []
        for item in inputs:
            if isinstance(item, Submission):
                actions.extend(await self._on_submission(item))
            else:
                actions.extend(self._step_core(item)[0])
        while actions:
            if tracing is not None:
                trace.trace_step(actions, tracing, self.core.view)
            executed = await self._execute(actions)
            tracing = trace.begin() if trace.TRACER is not None else None
            actions = [a for event in executed for a in self._step_core(event)[0]]
        VIEW.set(self.core.view)

    def _step_core(self, event: Event) -> tuple[list[Action], int]:
        """Step the core on `event`, then on every message it sent itself and on the answer
        to every block it asked us to validate, in order.

        Returns all their actions and how many of them the first step (on `event`) gave.
        What we send is noted here, before anything is committed, so a block finalised
        within the same round finds our votes and our notarization for the log."""
        out: list[Action] = []
        pending: deque[Event] = deque([event])
        first = -1
        while pending:
            actions = self.core.step(pending.popleft())
            for action in actions:
                if isinstance(action, ValidateBlock):
                    valid = self._validate_block_commands(action.commands)
                    if self._refused_by_drivers:
                        # Never propose what we would not vote for (or one bad command
                        # stalls us).
                        self.core.discard_pending(self._refused_by_drivers)
                        self._refused_by_drivers = []
                    pending.append(BlockValidated(action.view, action.digest, valid))
                elif isinstance(action, Broadcast | Send):
                    self.remember_verified(action.message)
                    self.seen.observe(action.message)
                    if isinstance(action, Broadcast) or action.to == self.me:
                        pending.append(MessageReceived(self.me, action.message))
            out.extend(actions)
            if first < 0:
                first = len(out)
        return out, first

    async def _on_submission(self, sub: Submission) -> list[Action]:
        if not self.status.accepting and sub.reply_to is not None:
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
            bounded_put(self._waiting, sub.checked.envelope_id, sub.reply_to,
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
                self.relay_outbox.send_nowait(sub.envelope)
        return actions

    async def _reply_submitted(self, sub: Submission, accepted: bool, reason: str | None
                               ) -> None:
        assert sub.reply_to is not None
        SUBMISSIONS.labels("accepted" if accepted else "refused").inc()
        peer, rid = sub.reply_to
        # Without yielding: acks of one batch of submissions leave in one write.
        self.router.send_nowait(Channel.CLIENT, peer, wire.encode_message(
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
        guard = [StoreGuardRecord(a.epoch, a.view, _guard_kind(a.kind), a.digest)
                 for a in actions if isinstance(a, PersistSignerGuard)]
        NULLIFY_VOTES.inc(sum(1 for g in guard if g.kind == VoteKind.NULLIFY))
        seen = seen_records(self.committee.epoch, actions)
        if seen:
            self._note_seen(seen)
        finalized = [a for a in actions if isinstance(a, Finalized)]
        tracing = trace.begin() if trace.TRACER is not None else None
        appended: tuple[list[BlockToAppend], list[Checkpoint]] = ([], [])
        journal = self.guard_journal
        if journal is not None and guard and not finalized:
            # Durable now (one O_DSYNC write on the loop): our signatures may leave; the
            # records reach the store with its next commit.
            journal.write(guard)
            self._guard_unsettled.extend(guard)
            if tracing is not None:
                trace.trace_durable(guard, [], tracing, journal=True)
        elif guard or finalized:
            # A round that finalises commits before its sends, with its guard records and
            # those the journal holds for the store: one durable write.
            through = journal.written if journal is not None else 0
            rows = self._guard_unsettled + guard if journal is not None else guard
            appended = await self._persist(rows, finalized)
            if journal is not None:
                self._guard_unsettled = []
                journal.settled(through)
                journal.remember(guard)
            if tracing is not None:
                trace.trace_durable(guard, appended[0], tracing)
        if tracing is not None:
            tracing = trace.begin()
        for action in actions:
            # Queued without yielding: the links' writers run after the round and send
            # everything it produced for a peer in one write.
            if isinstance(action, Broadcast):
                self.router.broadcast_nowait(
                    Channel.CONSENSUS, encode_message(self.committee, action.message))
                await self._sent_nowait()
            elif isinstance(action, Send):
                if self.asked is not None and isinstance(action.message, NullificationsRequest):
                    self.asked(action.to, action.message)
                if action.to != self.me:
                    self.router.send_nowait(
                        Channel.CONSENSUS, self.committee.members[action.to],
                        encode_message(self.committee, action.message))
                    await self._sent_nowait()
            elif isinstance(action, SetTimer):
                self.timers.set(action.kind, action.view, action.delay_ms)
            elif isinstance(action, EvidenceFound):
                ev = action.evidence
                EVIDENCE.labels(ev.kind.value).inc()
                log.warning("consensus.evidence", member=ev.member, view=ev.view,
                            kind=ev.kind.value)
                await self.store.record_event(evidence=[EvidenceRecord.of(ev)])
            elif isinstance(action, FetchBlocks):
                # When a fetch is already under way the core asks again if still behind.
                with contextlib.suppress(trio.WouldBlock):
                    self.fetch_requests.send_nowait(action)
            elif isinstance(action, WrongRootFound):
                wrong = action.evidence
                EVIDENCE.labels(WRONG_ROOT_KIND).inc()
                log.warning("consensus.evidence", member=wrong.member, view=wrong.view,
                            kind=WRONG_ROOT_KIND, height=wrong.local.height)
                await self.store.record_event(evidence=[EvidenceRecord.of(wrong)])
            elif isinstance(action, StateDivergence):
                # A local fault: the core has stopped signing. One line says why.
                self.status.diverged = (f"our roots differ from the certified ones at "
                                        f"{action.describe()}; this member stopped signing")
                DIVERGED.set(1)
                log.critical("state.divergence", reason=self.status.diverged)
            elif isinstance(action, Refused):
                CORE_REFUSED.labels(action.reason.split(":")[0][:48]).inc()
        if tracing is not None:
            trace.trace_sent(guard, tracing)
        if self.guard_journal is not None and \
                len(self._guard_unsettled) >= GUARD_COMMIT_RECORDS:
            await self._settle_journal()
        return await self._apply_finalized(appended)

    async def _settle_journal(self) -> None:
        """Commit the journalled guard records to the store when GUARD_COMMIT_RECORDS wait
        and no round finalised a block to carry them (after the sends; the journal holds at
        most guard_journal.MAX_UNSETTLED)."""
        assert self.guard_journal is not None
        through = self.guard_journal.written
        await self._persist(self._guard_unsettled, [])
        self._guard_unsettled = []
        self.guard_journal.settled(through)

    def _note_seen(self, records: Sequence[SeenRecord]) -> None:
        """Queue first-seen statements for the next commit, bounded (MAX_PENDING_SEEN)."""
        SEEN_DROPPED.inc(queue_seen(self._seen_pending, records))

    def _take_seen(self, room: int = MAX_PENDING_SEEN) -> tuple[list[SeenRecord], int | None]:
        """The queued first-seen statements the commit has `room` for (the rest wait for the
        next one), and the view below which the store drops them (the core refuses
        statements that old, so they can no longer prove anything): only every
        SEEN_PRUNE_VIEWS views, so most commits do not scan the table."""
        seen, self._seen_pending = self._seen_pending[:room], self._seen_pending[room:]
        floor = self.core.view - MAX_VIEWS_BEHIND
        if floor < self._seen_floor + SEEN_PRUNE_VIEWS:
            return seen, None
        self._seen_floor = floor
        return seen, floor

    # -- finalisation: store, execute, tell submitters ----------------------------------

    async def _persist(self, guard: list[StoreGuardRecord], finalized: list[Finalized]
                       ) -> tuple[list[BlockToAppend], list[Checkpoint]]:
        """One store transaction for a round: guard records, finalised blocks and the late
        votes of blocks stored before. Returns the blocks appended, in height order, and the
        log's checkpoint after each.

        A guard refusal means the core and the store disagree about what we signed: a bug.
        It propagates and stops the member rather than risk an equivocation.
        """
        for f in finalized:
            self.journal.finalized(f.block, f.certificate)
        items = self.journal.take_blocks()
        LATE_VOTES.labels("dropped").inc(self.journal.late_votes_dropped)
        late = self.journal.take_late_votes()
        if not items:
            # Blocks final through a descendant whose own finalization we have not been
            # handed yet wait: the store takes a chain only when its last block carries one.
            if guard:
                # One event transaction holds at most MAX_EVENT_ITEMS items in all.
                seen, floor = self._take_seen(max(0, MAX_EVENT_ITEMS - len(guard) - len(late)))
                await self.store.write_soon(trace.store_call(lambda s: s.record_event(
                    guard=guard, late_votes=late, seen=seen, seen_floor=floor)))
                LATE_VOTES.labels("stored").inc(len(late))
            else:
                self.journal.put_back_late_votes(late)
            return [], []
        # Every signature here was verified before it reached the core. Small appends run
        # on the event loop when the store is free (AsyncStore.write_soon): this is the
        # critical path of every view, and a thread hand-off costs more than the commit.
        # Large ones (Merkle nodes and entries for many commands) go to the worker thread,
        # where SQLite's C code runs alongside the loop.
        seen, floor = self._take_seen()
        if sum(len(item.block.commands) for item in items) <= INLINE_APPEND_COMMANDS:
            checkpoints = await self.store.write_soon(trace.store_call(lambda s: s.append_blocks(
                items, verify_signatures=False, guard=guard, late_votes=late, seen=seen,
                seen_floor=floor)))
        else:
            checkpoints = await self.store.run(trace.store_call(lambda s: s.append_blocks(
                items, verify_signatures=False, guard=guard, late_votes=late, seen=seen,
                seen_floor=floor)))
        self.journal.stored(items)
        LATE_VOTES.labels("stored").inc(len(late))
        return items, checkpoints

    async def _apply_finalized(self, appended: tuple[list[BlockToAppend], list[Checkpoint]]
                               ) -> list[Event]:
        """Execute blocks already appended, tell their submitters; BlockExecuted events for
        the core (the roots after each: state, and the log as its checkpoint states it)."""
        items, checkpoints = appended
        if not items:
            return []
        executed: list[Event] = []
        now = trio.current_time()
        status = self.status
        for item, checkpoint in zip(items, checkpoints, strict=True):
            block = item.block
            tracing = trace.begin() if trace.TRACER is not None else None
            log_index = status.log_size
            status.log_size += len(block.commands)
            checked = [self.checked.get(blake3_digest(c)) for c in block.commands]
            result = self.executor.apply_block(block.height, block.digest, block.commands,
                                               checked=checked)
            status.height = block.height
            status.state_root = result.state_root
            status.finalized_commands += len(block.commands)
            FINALIZED_BLOCKS.inc()
            FINALIZED_COMMANDS.inc(len(block.commands))
            FINALIZED_HEIGHT.set(block.height)
            seen = self.seen.take_first_seen(block.digest)
            if seen is not None:
                FINALITY_LATENCY.observe(now - seen)
            roots = CertifiedRoots(block.height, result.state_root, checkpoint.size,
                                   checkpoint.root)
            executed.append(BlockExecuted(roots))
            if self.snapshot_writer is not None:
                self.snapshot_writer.offer(block, roots, self.executor)
            self.drivers.on_applied(result)
            if tracing is not None and trace.TRACER is not None:
                trace.TRACER.section("execute", *tracing, (block.view,))
                trace.TRACER.event("executed", block.view)
                tracing = trace.begin()
            await self._tell_submitters(result, log_index)
            if tracing is not None and trace.TRACER is not None:
                trace.TRACER.section("outcome", *tracing, (block.view,))
                trace.TRACER.event("outcome", block.view)
        self.wake_readers()
        status.advanced()
        return executed

    async def _tell_submitters(self, result: BlockResult, first_log_index: int) -> None:
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
            self.router.send_nowait(Channel.CLIENT, peer, wire.encode_message(
                wire.Outcome(rid, result.height, first_log_index + position[envelope_id],
                             tuple(outcomes))))
            await self._sent_nowait()

    # -- validation (the answer to the core's ValidateBlock) -----------------------------

    def _validate_block_commands(self, commands: tuple[bytes, ...]) -> bool:
        for command in commands:
            d = blake3_digest(command)
            checked: Envelope | MemberCommand | None = self.checked.get(d)
            if checked is None:
                # Not seen through gossip: check it here (rare; costs one verify on the loop).
                try:
                    checked = self.executor.check_command(command)
                except CommandRefused:
                    return False
                self.checked.put(d, checked)
            if isinstance(checked, MemberCommand) or self.drivers.checks_envelopes:
                reason = self.drivers.vote_check(checked)
                if reason is not None:
                    VOTE_CHECK_REFUSED.inc()
                    log.info("vote.refused", reason=reason)
                    self._refused_by_drivers.append(command)
                    return False
        return True
