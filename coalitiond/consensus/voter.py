"""The sans-IO consensus core: `Core.step(event) -> list[action]` (docs/protocol.md §3–§8).

Why this module is long: it is one object's state transitions: every handler reads and
writes the same view table, guard, tip and block store, and emits into the same ordered list
of actions, so the handlers of one step are read together. The pure decisions already live
elsewhere (`rules`, `relay`, `catchup`, `recall`). Four parts keep tables of their own and are
the next to leave, each as a small class the core holds: evidence bookkeeping (§5), roots and
divergence (§7), the start-up recall's state (§8) and the nullification fetch (§9), about 250
lines together; they stayed here while issue #14's pieces were merged in one round.

This is the state machine: views and their phases, votes and certificates, timers, the signer
guard's in-memory copy, proposing, finalisation and execution roots. What is safe to sign is
decided by `rules`, who is sent what by `relay`, what a lagging member is given by `catchup`;
events and actions are in `events`.

No clock, randomness or I/O in here. Time enters only as `TimerFired` events the core asked
for with `SetTimer`; messages enter already decoded and signature-checked
(`messages.verify_message`); every side effect leaves as an action the shell executes in
order. A `PersistSignerGuard` action must be durable before any later action of the same step
runs; the core emits one before every message carrying a new signature of its own.

Everything iterated is iterated in a deterministic order (sorted keys, or dict insertion order
of deterministic inputs), so a seed fully determines a simulation.
"""

from __future__ import annotations

import enum
from collections import ChainMap, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import encode
from ..primitives.errors import LocalError
from ..primitives.identity import digest as blake3_digest
from . import catchup, recall, relay, rules
from .batcher import Batcher, prefix_within, wire_size
from .events import (
    Action,
    BlockExecuted,
    BlocksFetched,
    BlockValidated,
    Broadcast,
    CommandSubmitted,
    CoreConfig,
    DurableState,
    Event,
    EvidenceFound,
    Finalized,
    MemberCommandsHook,
    MessageReceived,
    PersistSignerGuard,
    RecordSeen,
    Refused,
    SeenStatement,
    Send,
    SetTimer,
    Start,
    StateDivergence,
    TimerFired,
    TimerKind,
    ValidateBlock,
    WrongRootFound,
    no_member_commands,
)
from .evidence import Evidence, EvidenceKind, Statement
from .limits import (
    KNOWN_EVIDENCE_WINDOW,
    MAX_PENDING_EVIDENCE,
    MAX_ROOTS_KEPT,
    MAX_VIEWS_BEHIND,
    RECALL_ROUNDS,
)
from .messages import (
    EvidenceMessage,
    Finalization,
    Message,
    Notarization,
    Nullification,
    NullificationsAnswer,
    NullificationsRequest,
    Proposal,
    ProposalHeader,
    RecallAnswer,
    RecallRequest,
    SyncRequest,
)
from .relay import ViewRelay
from .root_evidence import WrongRoot
from .statements import SignedKind, conflicts
from .types import (
    MAX_EVIDENCE_PER_BLOCK,
    NOTHING_EXECUTED,
    ZERO_DIGEST,
    Block,
    Certificate,
    CertifiedRoots,
    Vote,
    VoteKind,
    genesis_block,
)

# ---------------------------------------------------------------------------------------------
# per-view state


class Phase(enum.Enum):
    """Where this member is in one view on the way to its proposal (docs/protocol.md §3.1,
    §3.2, §3.7, §6). The leader of the view and everyone else take disjoint paths:

    | from      | to         | when                                                         |
    |-----------|------------|--------------------------------------------------------------|
    | OPEN      | BATCH_DUE  | leader: the idle interval ran out: propose even an empty block |
    | OPEN      | PROPOSED   | leader: our proposal is out (commands were waiting)          |
    | BATCH_DUE | PROPOSED   | leader: our proposal is out                                  |
    | OPEN      | SYNC_ASKED | voter: the leader's proposal is not yet decidable; we asked  |
    |           |            | the leader, once, for what it built on                       |

    PROPOSED and SYNC_ASKED are final. What a view's certificates say is not a phase: a view
    can be both notarised and nullified, and a notarised one can be finalised; nor are the
    view timer's firings, which come whether or not a proposal did.
    """

    OPEN = enum.auto()
    BATCH_DUE = enum.auto()
    PROPOSED = enum.auto()
    SYNC_ASKED = enum.auto()


_NEXT_PHASES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.OPEN: frozenset({Phase.BATCH_DUE, Phase.PROPOSED, Phase.SYNC_ASKED}),
    Phase.BATCH_DUE: frozenset({Phase.PROPOSED}),
    Phase.PROPOSED: frozenset(),
    Phase.SYNC_ASKED: frozenset(),
}


@dataclass(slots=True)
class _View:
    proposal: Block | None = None  # the first valid proposal (the one we notarised)
    waiting: Proposal | None = None  # first proposal not yet decidable (parent unknown)
    votes: dict[VoteKind, dict[int, Vote]] = field(default_factory=dict)
    notarization: Certificate | None = None
    nullification: Certificate | None = None
    finalization: Certificate | None = None
    phase: Phase = Phase.OPEN
    #: Firings of this view's timer: the first nullifies, later ones re-broadcast (§3.5).
    view_timer_fired: int = 0
    #: The leader timer fired with no proposal: nullify as soon as we may sign (§8).
    leader_timed_out: bool = False
    #: Members whose sync request for this view we answered (once each, §3.7).
    sync_answered: set[int] = field(default_factory=set)
    #: The proposal the shell is validating (`ValidateBlock`); decided on its answer.
    validating: Proposal | None = None
    relay: ViewRelay = field(default_factory=ViewRelay)

    def enter(self, phase: Phase) -> None:
        if phase not in _NEXT_PHASES[self.phase]:
            raise LocalError(f"view phase {self.phase.name} cannot go to {phase.name}")
        self.phase = phase


class Core:
    """One member's consensus state machine."""

    def __init__(self, committee: CommitteeSpec, key: SigningKey, config: CoreConfig,
                 durable: DurableState | None = None,
                 member_commands: MemberCommandsHook = no_member_commands) -> None:
        me = committee.index_of(key.public)
        if me is None:
            raise LocalError("this key is not a member of the committee")
        durable = durable or DurableState()
        self.committee = committee
        self.me = me
        self.config = config
        self._key = key
        self._member_commands = member_commands
        genesis = genesis_block(committee)
        self.tip: Block = durable.tip or genesis
        self.tip_certificate: Certificate | None = durable.tip_certificate
        self._guard: dict[tuple[int, SignedKind], bytes] = {}
        for r in durable.guard:
            if r.epoch == committee.epoch:
                self._guard[(r.view, r.kind)] = r.digest
        highest_signed = max((v for v, _ in self._guard), default=0)
        self.view = max(self.tip.view + 1, highest_signed, 1)
        self._views: dict[int, _View] = {}
        self._blocks: dict[bytes, Block] = {}
        self._seen: dict[tuple[int, int], dict[SignedKind, Statement]] = {}
        for st in durable.seen:  # first-seen statements kept across the restart (§5)
            self._seen.setdefault((st.view, st.member), {}).setdefault(
                st.kind, Statement(st.kind, st.digest, st.signature))
        #: The start-up recall (§8): sign nothing until peers said what they saw us sign.
        self._recall = recall.Recall(committee.quorum - 1)
        #: The view in which we last answered each peer's recall (one answer per view).
        self._recall_answered: dict[int, int] = {}
        self._reported: set[tuple[int, int, EvidenceKind]] = set()
        self._pending_evidence: dict[bytes, Evidence] = {}
        self._known_evidence: set[bytes] = set()
        self._known_evidence_order: deque[bytes] = deque()
        self._batcher = Batcher()
        #: Our own roots by executed height, and the roots finalised blocks certified.
        self._roots: dict[int, CertifiedRoots] = {}
        self._claims: dict[int, CertifiedRoots] = {}
        #: Views whose proposal we refused for wrong roots (one evidence per view).
        self._wrong_roots_reported: set[int] = set()
        #: A finalised block certified other roots than ours: a local fault, never sign again.
        self._diverged = False
        #: Commands of blocks finalised but not yet reported executed, by height: the shell
        #: executes after sending, so a proposal may be built before the executor (and the
        #: drivers that offer member commands) has seen them.
        self._unexecuted: dict[int, frozenset[bytes]] = {}
        self._executed: CertifiedRoots = NOTHING_EXECUTED
        if durable.executed is not None and durable.executed.height > 0:
            self._executed = durable.executed
            self._roots[durable.executed.height] = durable.executed
        for own in durable.replayed:
            if own.height > 0:
                self._roots.setdefault(own.height, own)
        self._trim(self._roots)
        for certified in durable.certified:
            if certified.height > 0:
                self._claims.setdefault(certified.height, certified)
        self._trim(self._claims)
        self._consecutive_nulls = 0
        #: Highest-view certificate of each kind, re-sent when a view is stuck.
        self._latest: dict[VoteKind, Certificate] = {}
        self._pending_final: Certificate | None = None
        self._max_view_seen = 0
        #: Amnesia (docs/protocol.md §8): None and amnesiac → sign nothing yet.
        self._amnesiac = durable.guard_lost
        self._abstain_through: int | None = None
        #: Fetching nullifications by view (docs/protocol.md §9): our one open request, the
        #: number of the last one, and how many answers each member got from us in a view.
        self._fetch: catchup.NullificationFetch | None = None
        self._fetch_seq = 0
        self._fetch_served: dict[int, tuple[int, int]] = {}
        #: Dead-leader skip (§3.10): highest view of a statement seen signed by each member
        #: (at most n entries: statements naming other indices are refused first).
        self._last_active: dict[int, int] = {}
        #: Peers sent our newest certificates for a vote from far behind: peer → our view.
        self._far_answered: dict[int, int] = {}
        #: Built from durable state: re-send our last votes at once on Start (§3.10).
        self._restarted = bool(self._guard) or durable.tip is not None
        self._out: list[Action] = []

    # -- public ---------------------------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        self._out = []
        if isinstance(event, MessageReceived):
            self._on_message(event.sender, event.message)
        elif isinstance(event, TimerFired):
            self._on_timer(event.kind, event.view)
        elif isinstance(event, CommandSubmitted):
            self._on_command(event.command)
        elif isinstance(event, BlockExecuted):
            self._on_executed(event.roots)
        elif isinstance(event, BlockValidated):
            self._on_validated(event.view, event.digest, event.valid)
        elif isinstance(event, BlocksFetched):
            self._on_fetched(event.chain)
        elif isinstance(event, Start):
            certified = self._claims.get(self._executed.height)
            if certified is not None and certified != self._executed:
                self._diverge(certified, self._executed)  # our replayed state is not theirs
            if self._recall.open:
                self._recall_round(1)
            self._enter_view(self.view)
            if self._restarted:
                self._rebroadcast(self.view)  # ask peers for what ended our views (§3.10)
        else:  # pragma: no cover - the Event union is closed
            raise LocalError(f"unknown event {event!r}")
        out, self._out = self._out, []
        return out

    @property
    def leader(self) -> int:
        return self.committee.leader(self.view)

    def discard_pending(self, commands: Iterable[bytes]) -> None:
        """Drop commands from the pending batch: the shell's vote-time checks refuse them
        (docs/decisions.md), so a block carrying them would never gather this member's vote."""
        self._batcher.discard(commands)

    @property
    def pending_commands(self) -> int:
        return len(self._batcher)

    @property
    def abstaining(self) -> bool:
        return not self._may_sign(self.view)

    def accepts_view(self, view: int) -> bool:
        """Would a vote or proposal for `view` be looked at now (used by the simulator)?"""
        return rules.accepts_view(self.view, view)

    def fingerprint(self) -> bytes:
        """A digest of the protocol-relevant state: equal states hash equally (model checks)."""
        views = []
        for v in sorted(self._views):
            s = self._views[v]
            views.append([
                v,
                s.proposal.digest if s.proposal else b"",
                s.notarization.digest if s.notarization else b"",
                s.nullification is not None,
                s.finalization.digest if s.finalization else b"",
                sorted([int(k), sorted([i, vote.digest] for i, vote in vs.items())]
                       for k, vs in s.votes.items()),
                s.leader_timed_out and self._recall.open,  # acted on when the recall ends
            ])
        guard = sorted([v, int(k), d] for (v, k), d in self._guard.items())
        return blake3_digest(encode([self.view, self.tip.digest, guard, views,
                                     self._consecutive_nulls, self._abstain_through or 0,
                                     self._amnesiac, self._recall.open,
                                     self._recall.through, sorted(self._last_active.items())]))

    # -- helpers --------------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _refuse(self, sender: int | None, reason: str) -> None:
        self._emit(Refused(sender, reason))

    def _vs(self, view: int) -> _View:
        s = self._views.get(view)
        if s is None:
            s = self._views[view] = _View()
        return s

    def _backoff(self, base_ms: int) -> int:
        return base_ms * (1 << rules.backoff_exponent(self._consecutive_nulls,
                                                     self.config.max_backoff_exponent))

    def _may_sign(self, view: int) -> bool:
        return not self._diverged and \
            rules.recall_allows(self._recall.open, self._recall.through, view) and \
            rules.may_sign(self._amnesiac, self._abstain_through, view)

    def _sign_guarded(self, view: int, kind: SignedKind, digest: bytes) -> bool:
        """Check the guard and emit the durable record; False means do not sign."""
        if not self._may_sign(view) or \
                not rules.guard_allows(self._guard, self.view, view, kind, digest):
            return False
        if self._guard.get((view, kind)) != digest:
            self._guard[(view, kind)] = digest
            self._emit(PersistSignerGuard(self.committee.epoch, view, kind, digest))
        return True

    # -- views and timers -----------------------------------------------------------------

    def _enter_view(self, view: int) -> None:
        self.view = view
        self._vs(view)
        self._emit(SetTimer(TimerKind.LEADER, view, self._backoff(self.config.leader_timeout_ms)))
        self._emit(SetTimer(TimerKind.VIEW, view, self._backoff(self.config.view_timeout_ms)))
        self._prune()
        self._end_early()
        self._progress()

    def _end_early(self) -> None:
        """Nullify the current view now rather than on a timer (docs/protocol.md §3.10): its
        leader is silent (dead-leader skip), or enough members nullified it that it can no
        longer be finalised. Always safe: nullifying is what a timer would do anyway."""
        view = self.view
        if self._guard.get((view, SignedKind.NULLIFY)) is not None:
            return
        nullifies = len(self._vs(view).votes.get(VoteKind.NULLIFY, {}))
        if rules.skip_leader(self.committee, self.me, view, self._last_active, self._views) \
                or rules.cannot_finalize(nullifies, self.committee):
            self._nullify(view)

    def _advance_past(self, view: int) -> None:
        if view >= self.view:
            self._enter_view(view + 1)

    def _progress(self) -> None:
        """Re-examine what may have become possible: a waiting proposal, our own proposal."""
        s = self._vs(self.view)
        if s.waiting is not None and s.proposal is None:
            waiting, s.waiting = s.waiting, None
            self._consider_proposal(None, waiting)
        if self.leader == self.me and s.phase is not Phase.PROPOSED:
            self._try_propose()

    def _on_timer(self, kind: TimerKind, view: int) -> None:
        if kind is TimerKind.FETCH:
            self._on_fetch_timeout(view)
            return
        if kind is TimerKind.RECALL:
            self._on_recall_timer(view)
            return
        if view != self.view:
            return  # stale timer: timers are never cancelled, only outlived
        s = self._vs(view)
        if kind is TimerKind.BATCH:
            if self.leader == self.me:  # only a leader asks for the batch timer
                if s.phase is Phase.OPEN:
                    s.enter(Phase.BATCH_DUE)
                self._try_propose()
        elif kind is TimerKind.LEADER:
            if s.proposal is None:
                s.leader_timed_out = True
                self._nullify(view)
        else:
            s.view_timer_fired += 1
            if self._guard.get((view, SignedKind.NULLIFY)) is None:
                self._nullify(view)
            if s.view_timer_fired > 1:
                self._rebroadcast(view)
                if catchup.restart_fetch(self._fetch, view):
                    self._progress()
            self._emit(SetTimer(TimerKind.VIEW, view,
                                self._backoff(self.config.view_timeout_ms)))
            if self._pending_final is not None:
                self._finalize(self._pending_final)  # the fetch may have been lost

    def _rebroadcast(self, view: int) -> None:
        """Still stuck in `view`: re-send what we said in it and the newest certificates.

        Lost or torn-off messages (and members that restarted with only their guard) must
        not stall the committee forever; every re-sent statement is one the guard already
        holds, so this never signs anything new.
        """
        s = self._vs(view)
        for statement in relay.restatements(self._key, self.committee, self.me, view,
                                            s.proposal, self._views.get(view - 1),
                                            self._guard):
            self._emit(Broadcast(statement))
            if isinstance(statement, Vote):
                self._on_vote(self.me, statement)
        self._out.extend(relay.newest_certificates(self._latest, self._blocks, self.tip))

    def _cert_message(self, cert: Certificate) -> Message:
        return relay.certificate_message(cert, self._blocks, self.tip)

    def _note_latest(self, cert: Certificate) -> None:
        prior = self._latest.get(cert.kind)
        if prior is None or prior.view < cert.view:
            self._latest[cert.kind] = cert

    def _nullify(self, view: int) -> None:
        if not self._sign_guarded(view, SignedKind.NULLIFY, ZERO_DIGEST):
            return
        vote = Vote.sign(self._key, self.committee, self.me, VoteKind.NULLIFY, view, ZERO_DIGEST)
        self._emit(Broadcast(vote))
        self._on_vote(self.me, vote)

    # -- proposing ------------------------------------------------------------------------

    def _try_propose(self) -> None:
        view = self.view
        s = self._vs(view)
        if s.phase is Phase.PROPOSED or s.proposal is not None or not self._may_sign(view):
            return
        if not rules.may_notarize(self._guard, view):
            return
        parent = rules.select_parent(view, self.tip, self._blocks, self._views)
        if parent is None:
            return  # retried whenever a certificate or block arrives
        ancestors = rules.unfinalized_ancestors(parent, self.tip, self._blocks)
        if ancestors is None:
            return
        cfg = self.config
        exclude = {blake3_digest(c) for b in ancestors for c in b.commands}
        offered = self._member_commands()
        if offered and self._unexecuted:
            # Not yet executed, so the drivers may offer them again: never twice in the log.
            done = exclude.union(*self._unexecuted.values())
        else:
            done = exclude
        own = tuple(c for c in offered if blake3_digest(c) not in done)[:cfg.max_batch_commands]
        own = prefix_within(own, cfg.batch_budget)  # never a block above max_block_bytes
        # Commands waiting when we may propose: propose now, the batch is whatever gathered
        # while the previous block was in flight. Nothing waiting: wait the batch (idle)
        # interval for commands, then propose an empty block to keep views moving.
        if not (s.phase is Phase.BATCH_DUE or own or len(self._batcher) > 0):
            self._emit(SetTimer(TimerKind.BATCH, view, cfg.batch_interval_ms))
            return
        own_bytes = sum(wire_size(c) for c in own)
        commands = own + self._batcher.take(cfg.max_batch_commands - len(own),
                                            cfg.batch_budget - own_bytes, exclude)
        if not commands and s.phase is not Phase.BATCH_DUE:
            # Everything waiting is already in a block on its way: wait as when idle.
            self._emit(SetTimer(TimerKind.BATCH, view, cfg.batch_interval_ms))
            return
        roots = self._executed if self._executed.height > parent.executed_height \
            else parent.roots
        in_chain = {e for b in ancestors for e in b.evidence}
        evidence = tuple(ev.encode() for ev in self._pending_evidence.values()
                         if ev.encode() not in in_chain)[:MAX_EVIDENCE_PER_BLOCK]
        block = Block.with_roots(self.committee.epoch, parent.height + 1, view, parent.digest,
                                 self.me, commands, roots, evidence)
        if not self._sign_guarded(view, SignedKind.PROPOSE, block.digest):
            return
        s.enter(Phase.PROPOSED)
        proposal = Proposal.sign(self._key, self.committee, block)
        self._emit(Broadcast(proposal))
        self._consider_proposal(self.me, proposal)

    # -- incoming messages ----------------------------------------------------------------

    def _on_message(self, sender: int | None, msg: Message) -> None:
        if isinstance(msg, Vote):
            if not self._vote_acceptable(sender, msg.epoch, msg.view, msg.signer, "vote"):
                self._help_far_laggard(sender, msg)
                return
            self._observe(msg.signer, msg.view, SignedKind.of_vote(msg.kind), msg.digest,
                          msg.signature)
            self._on_vote(sender, msg)
        elif isinstance(msg, Proposal):
            b = msg.block
            if not self._vote_acceptable(sender, b.epoch, b.view, b.proposer, "proposal"):
                return
            self._observe(b.proposer, b.view, SignedKind.PROPOSE, b.digest, msg.signature)
            self._consider_proposal(sender, msg)
        elif isinstance(msg, ProposalHeader):
            if not self._vote_acceptable(sender, self.committee.epoch, msg.view, msg.proposer,
                                         "header"):
                return
            self._observe(msg.proposer, msg.view, SignedKind.PROPOSE, msg.digest, msg.signature)
        elif isinstance(msg, Notarization | Finalization | Nullification):
            self._on_certificate(sender, msg.certificate,
                                 None if isinstance(msg, Nullification) else msg.block,
                                 formed=False)
        elif isinstance(msg, SyncRequest):
            self._on_sync_request(sender, msg.view)
        elif isinstance(msg, NullificationsRequest):
            self._serve_nullifications(sender, msg)
        elif isinstance(msg, NullificationsAnswer):
            self._on_nullifications(sender, msg)
        elif isinstance(msg, RecallRequest):
            self._on_recall_request(sender)
        elif isinstance(msg, RecallAnswer):
            refusal = self._recall.take(self.me, self.committee.n, sender, msg, self._guard)
            if refusal is not None:
                self._refuse(sender, refusal)
                return
            self._guard_recalled(msg)
            if not self._recall.open:
                self._recall_ended()  # q − 1 answers
        else:
            self._on_evidence(sender, msg.evidence)

    def _vote_acceptable(self, sender: int | None, epoch: int, view: int, signer: int,
                         what: str) -> bool:
        refusal = rules.statement_refusal(self.committee, self.view, epoch, view, signer, what)
        if refusal is not None:
            self._refuse(sender, refusal)
            return False
        self._max_view_seen = max(self._max_view_seen, view)
        if view > self._last_active.get(signer, 0):
            self._last_active[signer] = view  # the signer is alive (§3.10)
        return True

    def _observe(self, member: int, view: int, kind: SignedKind, digest: bytes,
                 signature: bytes) -> None:
        """Equivocation detection: first statement per (member, view, kind), by digest."""
        table = self._seen.setdefault((view, member), {})
        new = Statement(kind, digest, signature)
        for k in sorted(table):
            old = table[k]
            if conflicts(old.kind, old.digest, kind, digest):
                self._report(Evidence.build(self.committee, view, member, old, new))
        if kind not in table:
            table[kind] = new
            if member != self.me:
                self._emit(RecordSeen(SeenStatement(member, view, kind, digest, signature)))

    def _report(self, ev: Evidence) -> None:
        key = (ev.view, ev.member, ev.kind)
        if key in self._reported or ev.id in self._known_evidence:
            return
        self._reported.add(key)
        self._emit(EvidenceFound(ev))
        self._emit(Broadcast(EvidenceMessage(ev)))
        if len(self._pending_evidence) < MAX_PENDING_EVIDENCE:
            self._pending_evidence[ev.id] = ev

    def _on_evidence(self, sender: int | None, ev: Evidence) -> None:
        if ev.committee_id != self.committee.committee_id or ev.epoch != self.committee.epoch:
            self._refuse(sender, "evidence for another committee or epoch")
            return
        key = (ev.view, ev.member, ev.kind)
        if key in self._reported or ev.id in self._known_evidence:
            return
        self._reported.add(key)
        self._emit(EvidenceFound(ev))
        if len(self._pending_evidence) < MAX_PENDING_EVIDENCE:
            self._pending_evidence[ev.id] = ev

    def _consider_proposal(self, sender: int | None, proposal: Proposal) -> None:
        b = proposal.block
        v = b.view
        if not rules.proposer_is_leader(self.committee, b):
            self._refuse(sender, f"proposal for view {v} from member {b.proposer}, "
                                 f"the leader is {self.committee.leader(v)}")
            return
        s = self._vs(v)
        if s.proposal is not None or s.validating is not None:
            return  # only the first valid proposal of a view counts
        if v != self.view:
            if v > self.view and s.waiting is None:
                s.waiting = proposal
            elif v < self.view:
                self._learn_block(b)
            return
        if self._recall.open:
            if s.waiting is None:
                s.waiting = proposal  # decided when the recall ends (§8)
            return
        try:
            # Our own roots, else the ones finalised blocks certified: both are right.
            known = ChainMap(self._roots, self._claims)
            verdict = rules.check_proposal(b, self.tip, self._blocks, self._views, known,
                                           self._executed.height, self.committee,
                                           max_block_bytes=self.config.max_block_bytes)
        except rules.InvalidProposal as exc:
            self._refuse(sender, f"proposal for view {v}: {exc}")
            if isinstance(exc, rules.WrongRoots):
                self._report_wrong_roots(proposal, exc.mine)
            return
        if verdict is rules.Verdict.WAIT_EXECUTION:
            if s.waiting is None:
                s.waiting = proposal  # re-examined after each BlockExecuted (§7)
            return
        if verdict is rules.Verdict.WAIT:
            if s.waiting is None:
                s.waiting = proposal
            if s.phase is Phase.OPEN and b.proposer != self.me:
                # Ask the leader for what it built on (lost certificates or blocks);
                # without this a member that missed them could never vote again.
                s.enter(Phase.SYNC_ASKED)
                self._emit(Send(b.proposer, SyncRequest(v)))
            self._fetch_nullifications(b)
            return
        if b.commands:
            # Every rule of ours holds: ask the shell whether the component accepts the
            # commands, and decide on its answer (`_on_validated`). The first proposal asked
            # about is the view's: others wait for nothing.
            if s.validating is None:
                s.validating = proposal
                self._emit(ValidateBlock(v, b.digest, b.commands))
            return
        self._accept_proposal(proposal)

    def _on_validated(self, view: int, digest: bytes, valid: bool) -> None:
        s = self._views.get(view)
        if s is None or s.validating is None or s.validating.block.digest != digest:
            return  # not asked, or pruned since
        proposal, s.validating = s.validating, None
        if not valid:
            self._refuse(proposal.block.proposer,
                         f"proposal for view {view}: the component refused the block's commands")
            return
        if view != self.view or s.proposal is not None:
            self._learn_block(proposal.block)  # the view ended while the shell checked it
            return
        self._accept_proposal(proposal)

    def _accept_proposal(self, proposal: Proposal) -> None:
        """The view's first valid proposal: keep it, and notarise it if we may (§3.2)."""
        b = proposal.block
        v = b.view
        s = self._vs(v)
        s.proposal = b
        self._blocks[b.digest] = b
        if not rules.may_notarize(self._guard, v):
            return  # Simplex: no notarise after nullify
        if not self._sign_guarded(v, SignedKind.NOTARIZE, b.digest):
            return
        vote = Vote.sign(self._key, self.committee, self.me, VoteKind.NOTARIZE, v, b.digest)
        self._emit(Broadcast(vote))
        if b.proposer != self.me:
            self._emit(Broadcast(proposal.header))  # lets others catch an equivocating leader
        self._on_vote(self.me, vote)
        self._retry_pending_final()

    def _on_sync_request(self, sender: int | None, view: int) -> None:
        s = self._views.get(view)
        if sender is None or s is None or s.proposal is None or s.proposal.proposer != self.me:
            return
        if sender in s.sync_answered or not 0 <= sender < self.committee.n:
            return  # one answer per member and view bounds what a requester can make us send
        s.sync_answered.add(sender)
        for msg in catchup.sync_answer(s.proposal, view, self.tip, self.tip_certificate,
                                       self._blocks, self._views):
            self._emit(Send(sender, msg))

    def _on_recall_request(self, sender: int | None) -> None:
        """A peer (re)started and asks what we saw it sign (§8): its newest statements."""
        if sender is None or not 0 <= sender < self.committee.n or sender == self.me:
            return
        if recall.should_answer(self._recall_answered, sender, self.view):
            self._emit(Send(sender, RecallAnswer(sender,
                                                 recall.own_statements(self._seen, sender))))
            # It just started: what a laggard is sent (§3.8), our newest certificates and
            # what we said in our view, so it joins us without waiting for our timers (§3.10).
            here = self._vs(self.view)
            current = relay.restatements(self._key, self.committee, self.me, self.view,
                                         here.proposal, self._views.get(self.view - 1),
                                         self._guard)
            for msg in relay.catch_up(None, self._latest, self._blocks, self.tip, current):
                self._emit(Send(sender, msg))

    def _guard_recalled(self, answer: RecallAnswer) -> None:
        """Our own statements a peer returned are ours: into the guard, durably, so a second
        restart (its peers may not answer again in the same view) still holds them (§8)."""
        for st in answer.statements:
            if self._guard.get((st.view, st.kind)) is None and \
                    rules.guard_allows(self._guard, self.view, st.view, st.kind, st.digest):
                self._guard[(st.view, st.kind)] = st.digest
                self._emit(PersistSignerGuard(self.committee.epoch, st.view, st.kind,
                                              st.digest))

    def _recall_round(self, n: int) -> None:
        """Ask (again: links may have come up since) and arm the next round's timer."""
        self._emit(Broadcast(RecallRequest()))
        self._emit(SetTimer(TimerKind.RECALL, n,
                            max(1, self.config.view_timeout_ms // RECALL_ROUNDS)))

    def _on_recall_timer(self, n: int) -> None:
        if not self._recall.open:
            return
        if n < RECALL_ROUNDS:
            self._recall_round(n + 1)
            return
        self._recall.close()  # the last round: go on with the answers we have
        self._recall_ended()

    def _recall_ended(self) -> None:
        """The recall is over: do now what it held back in the current view (§8, §3.10).
        Entering a view, a nullify vote and the leader timer each try to sign only once;
        a restarted member usually jumps to its peers' view before the answers arrive, so
        without this it would wait out that view's timers although the view was already
        known dead (nullified by others, or led by a silent leader)."""
        self._end_early()
        self._progress()  # a waiting proposal, or our own, may now be decided
        s = self._vs(self.view)
        if s.leader_timed_out and s.proposal is None:
            self._nullify(self.view)

    def _learn_block(self, block: Block) -> None:
        """Keep a block some certificate of ours refers to (late proposal, cert with block)."""
        if block.height <= self.tip.height or block.digest in self._blocks:
            return
        s = self._views.get(block.view)
        certs = (s.notarization, s.finalization) if s is not None else ()
        if any(c is not None and c.digest == block.digest for c in certs):
            self._blocks[block.digest] = block
            self._retry_pending_final()

    # -- votes and certificates -----------------------------------------------------------

    def _on_vote(self, sender: int | None, vote: Vote) -> None:
        s = self._vs(vote.view)
        if vote.view < self.view and sender is not None and sender != self.me:
            self._help_laggard(sender, vote, s)
        table = s.votes.setdefault(vote.kind, {})
        if not rules.counts_toward_quorum(table, vote):
            return
        table[vote.signer] = vote
        existing = {VoteKind.NOTARIZE: s.notarization, VoteKind.FINALIZE: s.finalization,
                    VoteKind.NULLIFY: s.nullification}[vote.kind]
        if existing is not None:
            return
        same = rules.quorum_votes(table, vote.digest, self.committee.quorum)
        if same is not None:
            self._on_certificate(sender, Certificate.from_votes(same), None, formed=True)
        elif vote.kind is VoteKind.NULLIFY and vote.view == self.view:
            self._end_early()

    def _help_far_laggard(self, sender: int | None, vote: Vote) -> None:
        """A member's own vote from too far behind to look at: it restarted after a long
        absence; send it our newest certificates (relay.answers_far_laggard, §3.10)."""
        if sender is None or vote.epoch != self.committee.epoch \
                or not 0 < vote.view < self.view - MAX_VIEWS_BEHIND \
                or not relay.answers_far_laggard(self._far_answered, self.committee,
                                                 self.view, sender, vote):
            return
        for out in relay.newest_certificates(self._latest, self._blocks, self.tip):
            self._emit(Send(sender, out.message))

    def _help_laggard(self, sender: int, vote: Vote, s: _View) -> None:
        """A peer still votes in a view we have left: maybe send it the certificate that
        ended that view (relay.answers_laggard, docs/protocol.md §3.8)."""
        ended = s.notarization or s.nullification or s.finalization
        if ended is not None and relay.answers_laggard(s.relay, self.committee, self.view,
                                                       sender, vote, ended):
            self._emit(Send(sender, self._cert_message(ended)))
            here = self._vs(self.view)
            current = relay.restatements(self._key, self.committee, self.me, self.view,
                                         here.proposal, self._views.get(self.view - 1),
                                         self._guard)
            for msg in relay.catch_up(ended, self._latest, self._blocks, self.tip, current):
                self._emit(Send(sender, msg))

    def _on_certificate(self, sender: int | None, cert: Certificate, block: Block | None,
                        formed: bool) -> None:
        if cert.epoch != self.committee.epoch or cert.view == 0:
            self._refuse(sender, f"certificate for epoch {cert.epoch} view {cert.view}")
            return
        if cert.view < self.view - MAX_VIEWS_BEHIND and cert.kind is not VoteKind.FINALIZE \
                and not self._needed_by_waiting(cert):
            return  # old news
        self._max_view_seen = max(self._max_view_seen, cert.view)
        if self._amnesiac and self._abstain_through is None:
            self._abstain_through = rules.abstain_through(self._max_view_seen, cert.view)
        if not formed and cert.view >= self.view - MAX_VIEWS_BEHIND:
            for signer, sig in cert.signatures:
                self._observe(signer, cert.view, SignedKind.of_vote(cert.kind), cert.digest, sig)
        s = self._vs(cert.view)
        if cert.kind is VoteKind.NOTARIZE:
            if s.notarization is not None:
                if block is not None and block.digest not in self._blocks:
                    self._learn_block(block)
                    self._progress()
                return
            s.notarization = cert
            if block is not None:
                self._learn_block(block)
            self._note_latest(cert)
            if formed or relay.broadcasts_received(self.committee, self.me, cert, self.view):
                self._announce(cert, s)
            if cert.view >= self.view:
                self._consecutive_nulls = 0
            if rules.may_finalize_vote(self._guard, cert.view) and \
                    self._sign_guarded(cert.view, SignedKind.FINALIZE, cert.digest):
                vote = Vote.sign(self._key, self.committee, self.me, VoteKind.FINALIZE,
                                 cert.view, cert.digest)
                self._emit(Broadcast(vote))
                self._on_vote(self.me, vote)
            self._advance_past(cert.view)
        elif cert.kind is VoteKind.NULLIFY:
            if s.nullification is not None:
                return
            s.nullification = cert
            self._note_latest(cert)
            if formed:
                self._announce(cert, s)
            if cert.view >= self.view:
                self._consecutive_nulls += 1
                self._advance_past(cert.view)
            else:
                self._progress()
        else:
            first = s.finalization is None
            if first:
                s.finalization = cert
            if block is not None:
                self._learn_block(block)
            if first:
                self._note_latest(cert)
                if formed or relay.broadcasts_received(self.committee, self.me, cert,
                                                       self.view):
                    self._announce(cert, s)
                if cert.view >= self.view:
                    self._consecutive_nulls = 0
            final = s.finalization
            if final is not None and (first or final.view > self.tip.view):
                self._finalize(final)
            self._advance_past(cert.view)
        if cert.view < self.view:
            self._progress()

    # -- fetching nullifications by view (docs/protocol.md §9) ------------------------------

    def _waiting_parent_view(self) -> tuple[Block, int] | None:
        """The current view's waiting proposal and its parent's view, if the parent is known."""
        s = self._views.get(self.view)
        if s is None or s.waiting is None or s.proposal is not None:
            return None
        b = s.waiting.block
        parent = self.tip if b.parent == self.tip.digest else self._blocks.get(b.parent)
        return None if parent is None else (b, parent.view)

    def _needed_by_waiting(self, cert: Certificate) -> bool:
        """An old certificate the current view's waiting proposal needs: its parent's
        notarisation, or a nullification of a view between the parent and it (§9)."""
        s = self._views.get(self.view)
        if s is None or s.waiting is None or s.proposal is not None:
            return False
        if cert.kind is VoteKind.NOTARIZE:
            return cert.digest == s.waiting.block.parent
        known = self._waiting_parent_view()
        return cert.kind is VoteKind.NULLIFY and known is not None and \
            known[1] < cert.view < known[0].view

    def _fetch_nullifications(self, block: Block) -> None:
        """The proposal `block` of our view waits: if views between its (known) parent and
        it lack nullifications, ask one peer for the next page of them (§9)."""
        known = self._waiting_parent_view()
        if known is None or known[0].digest != block.digest:
            return
        wanted = catchup.missing_nullifications(known[1], block.view, self._views)
        if wanted is None:
            return
        fetch = catchup.next_fetch(self._fetch, self.view, block.proposer, self.me,
                                   self.committee.n, wanted, self._fetch_seq + 1)
        if fetch is None:
            return
        self._fetch_seq += 1
        self._fetch = fetch
        self._emit(Send(fetch.peer, NullificationsRequest(fetch.first, fetch.last)))
        self._emit(SetTimer(TimerKind.FETCH, fetch.seq, self.config.leader_timeout_ms))

    def _on_fetch_timeout(self, seq: int) -> None:
        """No answer in time: the peer is slow, down, or withholding; ask the next one."""
        f = self._fetch
        if f is None or f.seq != seq or not f.open:
            return
        f.open = False
        if f.view == self.view:
            self._progress()

    def _on_nullifications(self, sender: int | None, msg: NullificationsAnswer) -> None:
        """Only the asked peer's answer to the open request counts: anything else is late or
        unsolicited, and dropped unread (a peer cannot make us keep certificates we did not
        ask for). Every certificate was verified by the shell; a view counts as nullified
        only on one (§9)."""
        f = self._fetch
        if f is None or not f.open or sender != f.peer or (msg.first, msg.last) != (f.first,
                                                                                    f.last):
            self._refuse(sender, "nullifications answer to no open request")
            return
        f.open = False
        f.answered = True
        for cert in msg.certificates:
            if cert.kind is not VoteKind.NULLIFY or cert.epoch != self.committee.epoch or \
                    not f.first <= cert.view <= f.last:
                self._refuse(sender, f"fetched nullification for view {cert.view} was not "
                                     "asked for")
                continue
            if cert.view <= self.tip.view:
                continue
            ws = self._vs(cert.view)
            if ws.nullification is None:
                ws.nullification = cert
        if f.view == self.view:
            self._progress()

    def _serve_nullifications(self, sender: int | None, msg: NullificationsRequest) -> None:
        """Answer a member's `nullifications?` with what we hold, a bounded number of times
        per member and view (§9, §10)."""
        if sender is None or sender == self.me or not 0 <= sender < self.committee.n:
            return
        if not catchup.may_answer_fetch(self._fetch_served, sender, self.view):
            self._refuse(sender, "nullifications? beyond the answers per view")
            return
        self._emit(Send(sender, catchup.nullifications_answer(msg, self._views)))

    # -- finalisation and catch-up --------------------------------------------------------

    def _announce(self, cert: Certificate, s: _View) -> None:
        """Pass on a certificate we formed from votes (relay.announce, docs/protocol.md §3)."""
        self._out.extend(relay.announce(self.committee, self.me, cert, self._cert_message(cert),
                                        s.relay))

    def _finalize(self, cert: Certificate) -> None:
        chain = rules.finalized_chain(cert, self.tip, self._blocks)
        if isinstance(chain, rules.Conflict):
            # Only possible beyond the safety bound: say so, never re-finalise.
            self._refuse(None, chain.reason)
            return
        if isinstance(chain, rules.Gap):
            self._pending_final = cert
            self._emit(catchup.fetch_request(self.tip.height, chain))
            return
        if not chain:
            return
        for b in chain:
            self._commit(b, cert)
        if self._pending_final is not None and self._pending_final.view <= self.tip.view:
            self._pending_final = None

    def _commit(self, block: Block, cert: Certificate) -> None:
        self.tip = block
        self.tip_certificate = cert
        self._emit(Finalized(block, cert))
        if block.commands:
            self._unexecuted[block.height] = frozenset(blake3_digest(c) for c in block.commands)
            if len(self._unexecuted) > MAX_ROOTS_KEPT:
                # Only if the shell stops reporting execution: say so rather than hide it.
                del self._unexecuted[min(self._unexecuted)]
                self._refuse(None, "unexecuted finalised blocks beyond the bound: execution "
                                   "is not being reported")
        self._batcher.committed(block.commands)
        for item in block.evidence:
            ev_id = blake3_digest(item)
            self._pending_evidence.pop(ev_id, None)
            if ev_id not in self._known_evidence:
                self._known_evidence.add(ev_id)
                self._known_evidence_order.append(ev_id)
                if len(self._known_evidence_order) > KNOWN_EVIDENCE_WINDOW:
                    self._known_evidence.discard(self._known_evidence_order.popleft())
        self._claim_root(block)
        self._blocks.pop(block.digest, None)

    def _retry_pending_final(self) -> None:
        if self._pending_final is not None and self._pending_final.digest in self._blocks:
            cert, self._pending_final = self._pending_final, None
            self._finalize(cert)

    def _on_fetched(self, chain: tuple[tuple[Block, Certificate], ...]) -> None:
        progressed = False
        for block, cert in chain:
            if block.height <= self.tip.height:
                continue
            refusal = catchup.fetched_refusal(block, self.tip)
            if refusal is not None:
                self._refuse(None, refusal)
                break
            self._commit(block, cert)
            progressed = True
        if not progressed:
            return
        self._retry_pending_final()
        if self._pending_final is not None:
            self._finalize(self._pending_final)
        if self.tip.view >= self.view:
            self._enter_view(self.tip.view + 1)
        else:
            self._progress()

    # -- commands and execution -----------------------------------------------------------

    def _on_command(self, command: bytes) -> None:
        reason = self._batcher.add(command)
        if reason is not None:
            self._refuse(None, f"command refused: {reason}")
            return
        if self.leader == self.me:
            # Not yet proposed in this view: propose now rather than wait out the idle
            # interval; while a block is in flight, commands gather for the next view.
            self._try_propose()

    def _report_wrong_roots(self, proposal: Proposal, mine: CertifiedRoots) -> None:
        view = proposal.block.view
        if view in self._wrong_roots_reported:
            return
        self._wrong_roots_reported.add(view)
        self._emit(WrongRootFound(WrongRoot(self.committee.committee_id, self.committee.epoch,
                                            proposal.block.header, proposal.signature, mine)))

    def _claim_root(self, block: Block) -> None:
        """A finalised block certifies its roots (a quorum notarised them, so an honest member
        checked them): ours must agree, now or when we execute that height (§7)."""
        certified = block.roots
        if certified.height == 0:
            return
        mine = self._roots.get(certified.height)
        if mine is not None and mine != certified:
            self._diverge(certified, mine)
        self._claims.setdefault(certified.height, certified)
        self._trim(self._claims)

    def _diverge(self, certified: CertifiedRoots, mine: CertifiedRoots) -> None:
        if not self._diverged:
            self._diverged = True
            self._emit(StateDivergence(certified, mine))

    def _on_executed(self, roots: CertifiedRoots) -> None:
        height = roots.height
        if height == 0:
            return  # executed_height 0 means "nothing executed" (docs/protocol.md §7)
        self._roots[height] = roots
        self._trim(self._roots)
        if height > self._executed.height:
            self._executed = roots
        for h in [h for h in self._unexecuted if h <= height]:
            del self._unexecuted[h]
        certified = self._claims.get(height)
        if certified is not None and certified != roots:
            self._diverge(certified, roots)
        self._progress()  # a proposal may have been waiting for this height

    @staticmethod
    def _trim(table: dict[int, CertifiedRoots]) -> None:
        while len(table) > MAX_ROOTS_KEPT:
            del table[min(table)]

    # -- pruning --------------------------------------------------------------------------

    def _prune(self) -> None:
        floor = self.view - MAX_VIEWS_BEHIND
        for v in sorted(self._views):
            if v >= floor:
                break
            if v < self.tip.view:
                del self._views[v]
            else:
                self._views[v].votes.clear()  # keep the certificates: parent rules need them
        for key in sorted(self._seen):
            if key[0] >= floor:
                break
            del self._seen[key]
        self._reported = {k for k in self._reported if k[0] >= floor}
        self._wrong_roots_reported = {v for v in self._wrong_roots_reported if v >= floor}
        for gk in sorted(self._guard):
            if gk[0] >= floor - 1:
                break
            del self._guard[gk]
        for d in [d for d, b in self._blocks.items() if b.height <= self.tip.height]:
            del self._blocks[d]
