"""Deterministic simulator: n cores, a seeded network, crashes, restarts and invariant checks.

Why this module is long: it is one deterministic world — the event queue, the network, the
crash/restart schedule and the invariants read and write the same state on every step, and
keeping them together keeps the order of every random draw visible in one place.

One seed drives everything (docs/protocol.md §10), through independent sub-streams (network,
faults, commands, fetches, each Byzantine member) so that a change in one place does not
perturb the draws of another. Time is virtual milliseconds; events are ordered by
`(time, sequence number)`, never by hashing, so a seed replays exactly. `trace_digest` hashes
the event trace so that two runs can be compared.

Messages cross the wire as bytes and go through `decode_message` + `verify_message` exactly as
in the shell (results cached by message bytes: identical bytes verify identically). Twins: a
member index may run on two nodes with the same key (`twins`), and `router` can script which
node hears which message (per view, per link) for Twins campaigns.

After every step the invariants are checked; a violation raises `SimulationFailure` whose
message starts with the seed.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import blake3

from ..consensus.events import (
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
    TimerFired,
    ValidateBlock,
    WrongRootFound,
)
from ..consensus.evidence import Evidence, EvidenceKind, evidence_kind
from ..consensus.limits import MAX_VIEWS_AHEAD, MAX_VIEWS_BEHIND, RECOVERED_CERTIFIED_BLOCKS
from ..consensus.messages import (
    Finalization,
    Message,
    Notarization,
    Nullification,
    Proposal,
    ProposalHeader,
    decode_message,
    encode_message,
    verify_fetched,
    verify_message,
)
from ..consensus.statements import SignedKind, conflicts
from ..consensus.types import ZERO_DIGEST, Block, Certificate, CertifiedRoots, Vote, VoteKind
from ..consensus.voter import Core
from ..primitives import merkle
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import encode
from ..primitives.errors import RemoteError
from ..primitives.identity import digest as blake3_digest
from .byzantine import CATALOGUE, Behaviour, BehaviourFactory, RawSend, message_view
from .oracle import Oracle

#: Virtual time a simulated "execution" of one finalised block takes.
EXECUTE_DELAY_MS: Final = 1
#: A torn crash interrupts the node's next step; if it does not step within this, it just dies.
TORN_CRASH_GRACE_MS: Final = 50
#: A fetch that gets no answer is given up after this (node/resolver.py FETCH_TIMEOUT_S,
#: scaled like the simulator's view timers), then the next peer is asked.
FETCH_TIMEOUT_MS: Final = 1_000
#: Upper bound on simulated events per run (a runaway run is a failure, not a hang).
DEFAULT_MAX_EVENTS: Final = 400_000
#: Fast timings for simulation (the invariants do not depend on them, only run length).
SIM_CORE_CONFIG: Final = CoreConfig(leader_timeout_ms=200, view_timeout_ms=300,
                                    batch_interval_ms=20, max_batch_commands=50,
                                    max_batch_bytes=64 * 1024, max_backoff_exponent=3)


class SimulationFailure(AssertionError):
    """An invariant broke. The message starts with `seed=S` so the run can be replayed."""


#: First-seen statements a simulated member keeps across restarts (the daemon prunes its
#: seen_votes table to the core's view window; this keeps the newest).
SEEN_KEPT: Final = 4096

@dataclass(frozen=True, slots=True)
class NetworkConfig:
    min_delay_ms: int = 2
    max_delay_ms: int = 30  # per-link base delay is drawn from [min, max] once per link
    jitter_ms: int = 10
    drop: float = 0.0  # before GST only
    duplicate: float = 0.0  # before GST only; a duplicate takes its own delay (reordering)


@dataclass(frozen=True, slots=True)
class Partition:
    """Between start and end, messages from `src` nodes to `dst` nodes are lost (one way)."""

    start_ms: int
    end_ms: int
    blocked: frozenset[tuple[int, int]]

    @classmethod
    def split(cls, start_ms: int, end_ms: int, *groups: tuple[int, ...]) -> Partition:
        """Symmetric: nodes in different groups cannot talk."""
        blocked = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}
        return cls(start_ms, end_ms, frozenset(blocked))

    @classmethod
    def one_way(cls, start_ms: int, end_ms: int, src: tuple[int, ...],
                dst: tuple[int, ...]) -> Partition:
        return cls(start_ms, end_ms, frozenset((a, b) for a in src for b in dst if a != b))


@dataclass(frozen=True, slots=True)
class Crash:
    node: int
    at_ms: int
    restart_ms: int | None = None
    wipe_guard: bool = False  # amnesiac restart: the member counts as faulty
    #: Restart from a backup taken at this time (guard and log behind, not lost): the
    #: member stays honest, its start-up recall must keep it safe (docs/protocol.md §8).
    backup_ms: int | None = None
    torn: bool = True  # the crash cuts the actions of the step it interrupts
    #: A scripted torn write instead of a random cut: from `at_ms` on, the node's first step
    #: that records a guard entry of this kind is cut right after that record (durable, never
    #: sent: what the start-up recall cannot return, docs/protocol.md §8); the node restarts
    #: `restart_after_ms` after the cut (`restart_ms` is not used).
    cut_after_guard: SignedKind | None = None
    restart_after_ms: int = 0


#: Scripted routing for Twins: (src node, dst node, message, now) -> deliver?
Router = Callable[[int, int, Message | None, int], bool]


@dataclass(frozen=True)
class SimConfig:
    seed: int
    n: int = 4
    fault_bound: int | None = None
    gst_ms: int = 0  # network heals (no drops, no partitions) from here on
    max_time_ms: int = 120_000
    network: NetworkConfig = NetworkConfig()
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = ()
    byzantine: tuple[tuple[int, str], ...] = ()  # (member, CATALOGUE name)
    twins: tuple[int, ...] = ()  # members that run a second node with the same key
    router: Router | None = None
    core: CoreConfig = SIM_CORE_CONFIG
    command_interval_ms: int = 15  # a client command to every node this often; 0: none
    commands_until_ms: int = 5_000
    #: Stop once every honest up member has finalised this many blocks after stabilising.
    target_new_blocks: int = 3
    check_liveness: bool = True
    max_events: int = DEFAULT_MAX_EVENTS
    #: Fraction of client commands the (seeded) validation hook refuses, identically at
    #: every honest member: never queued by them (the daemon's mempool runs the same checks)
    #: and refused in a Byzantine leader's block (`ValidateBlock` answered false).
    refuse_commands: float = 0.0


def liveness_bound_ms(config: SimConfig) -> int:
    """The stated bound (docs/protocol.md §10)."""
    c = config.core
    return ((config.n + 2) * c.view_timeout_ms * (1 << c.max_backoff_exponent)
            + 10 * (config.network.max_delay_ms + config.network.jitter_ms))


def make_committee(n: int, fault_bound: int | None = None, seed: int = 0,
                   name: str = "sim") -> tuple[CommitteeSpec, list[SigningKey]]:
    """A committee of deterministic test keys."""
    keys = [SigningKey(blake3_digest(b"sim-key/%d/%d" % (seed, i))) for i in range(n)]
    fb = fault_bound if fault_bound is not None else (n + 1) // 2 - 1
    return CommitteeSpec("simnet", "feed", name, tuple(k.public for k in keys), fb), keys


@dataclass
class SimNode:
    node: int
    member: int
    key: SigningKey
    faulty: bool
    behaviour: str
    up: bool = True
    incarnation: int = 0
    handler: Any = None  # Core or Behaviour
    guard: list[GuardRecord] = field(default_factory=list)  # durable
    #: Finalised by the core; only the first `durable` are in the store (node/journal.py:
    #: a run of blocks is stored once its last one carries its own finalization).
    finalized: list[tuple[Block, Certificate]] = field(default_factory=list)
    durable: int = 0
    exec_root: bytes = ZERO_DIGEST  # after executing the durable blocks
    #: The node's log as a Merkle frontier (durable, like the stored blocks): one leaf per
    #: command of each stored block.
    log: merkle.Frontier = field(default_factory=merkle.Frontier)
    #: Roots after the last stored block (what a restart replays the log to).
    durable_roots: CertifiedRoots | None = None
    #: Roots after each stored height, newest last (what a restart's replay recomputes).
    stored_roots: list[CertifiedRoots] = field(default_factory=list)
    #: Roots after the last block the node executed.
    executed: CertifiedRoots | None = None
    crash_cut: int | None = None  # armed torn crash: execute this many actions, then die
    cut_after_guard: Crash | None = None  # armed scripted torn crash (Crash.cut_after_guard)
    #: Catch-up as node/resolver.py's fetcher: one request at a time, one more queued (later
    #: ones dropped), peers asked in turn until one answer verifies.
    fetching: FetchBlocks | None = None
    fetch_queued: FetchBlocks | None = None
    fetch_turn: int = 0
    #: What a backup saved: guard records and stored blocks kept, exec root, log, roots.
    backup: tuple[int, int, bytes, merkle.Frontier, CertifiedRoots | None] | None = None
    #: First-seen statements of others, durable as the daemon's seen_votes (newest kept).
    seen: list[SeenStatement] = field(default_factory=list)
    restarted_at: int = 0
    last_final_ms: int = -1
    finals_since_stable: int = 0
    evidence: set[tuple[int, int, EvidenceKind]] = field(default_factory=set)
    delivered: dict[tuple[int, int], dict[SignedKind, set[bytes]]] = field(default_factory=dict)

    @property
    def core(self) -> Core:
        h = self.handler
        return h.core if isinstance(h, Behaviour) else h  # type: ignore[no-any-return]


@dataclass
class SimStats:
    events: int = 0
    deliveries: int = 0
    dropped: int = 0
    refused_wire: dict[str, int] = field(default_factory=dict)
    refused_core: dict[str, int] = field(default_factory=dict)
    evidence: int = 0
    #: Wrong-root evidence recorded by honest nodes, by accused member.
    wrong_roots: dict[int, int] = field(default_factory=dict)
    max_height: int = 0


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.committee, self.keys = make_committee(config.n, config.fault_bound)
        self.q = self.committee.quorum
        s = config.seed
        self._net = random.Random(f"{s}:net")
        self._faults = random.Random(f"{s}:faults")
        self._fetch = random.Random(f"{s}:fetch")
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self._trace = blake3.blake3()
        self.stats = SimStats()
        self._verified: dict[bytes, Message | str] = {}
        self.oracle = Oracle(self.committee)
        byz = dict(config.byzantine)
        amnesiacs = {c.node for c in config.crashes if c.wipe_guard}
        members = [*range(config.n), *config.twins]
        self.nodes: list[SimNode] = []
        for node, member in enumerate(members):
            faulty = (member in byz or member in config.twins
                      or any(self._member_of(a, members) == member for a in amnesiacs))
            self.nodes.append(SimNode(node, member, self.keys[member], faulty,
                                      byz.get(member, "honest")))
        self.honest_members = sorted({x.member for x in self.nodes if not x.faulty})
        self._signed: dict[tuple[int, int, SignedKind], bytes] = {}
        self._final_at: dict[int, bytes] = {}
        self._stable_since = config.gst_ms
        self._base: dict[tuple[int, int], int] = {}
        for a in range(len(self.nodes)):
            for b in range(len(self.nodes)):
                self._base[(a, b)] = self._net.randint(config.network.min_delay_ms,
                                                       config.network.max_delay_ms)
        for sim_node in self.nodes:
            self._boot(sim_node, DurableState())
        for crash in config.crashes:
            if crash.backup_ms is not None:
                self._push(crash.backup_ms, "backup", (crash.node,))
            self._push(crash.at_ms, "crash", (crash,))
            self._stable_since = max(self._stable_since, crash.at_ms + TORN_CRASH_GRACE_MS)
            if crash.restart_ms is not None:
                self._push(crash.restart_ms, "restart", (crash,))
                self._stable_since = max(self._stable_since, crash.restart_ms)
        for p in config.partitions:
            self._stable_since = max(self._stable_since, p.end_ms)
        if config.command_interval_ms:
            self._push(config.command_interval_ms, "command", (0,))

    @staticmethod
    def _member_of(node: int, members: list[int]) -> int:
        return members[node] if 0 <= node < len(members) else -1

    # -- plumbing ---------------------------------------------------------------------------

    def fail(self, what: str) -> SimulationFailure:
        return SimulationFailure(f"seed={self.seed} t={self.now}ms event={self.stats.events}: "
                                 f"{what} (replay: pytest --sim-seed {self.seed})")

    def _push(self, at: int, kind: str, payload: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def refuses(self, command: bytes) -> bool:
        """The seeded validation hook's verdict on one command (the same at every member)."""
        share = self.config.refuse_commands
        return share > 0 and blake3_digest(b"%d/refuse/" % self.seed + command)[0] < 256 * share

    def _boot(self, node: SimNode, durable: DurableState) -> None:
        core = Core(self.committee, node.key, self.config.core, durable)
        # The resolver asks its links in the order they came up: any peer may be first.
        node.fetch_turn = self._fetch.randrange(len(self.nodes))
        if node.behaviour != "honest":
            factory: BehaviourFactory = CATALOGUE[node.behaviour]
            node.handler = factory(core, random.Random(f"{self.seed}:byz:{node.node}"))
        else:
            node.handler = core
        node.delivered.clear()
        self._step(node, Start())

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Simulation:
        cfg = self.config
        bound = liveness_bound_ms(cfg)
        while self._queue:
            at, _, kind, payload = heapq.heappop(self._queue)
            if at > cfg.max_time_ms:
                break
            self.now = at
            self.stats.events += 1
            if self.stats.events > cfg.max_events:
                raise self.fail(f"more than {cfg.max_events} events")
            self._trace.update(f"{at}|{kind}|".encode())
            self._dispatch(kind, payload)
            if self._done():
                return self
            if self.now > self._stable_since + bound and not self._live_enough():
                return self  # no liveness promise with fewer than q honest members up
            if cfg.check_liveness and self.now > self._stable_since + bound:
                lagging = [x.node for x in self._up_honest() if x.finals_since_stable < 1]
                if lagging:
                    raise self.fail(f"liveness: nodes {lagging} finalised nothing within "
                                    f"{bound}ms of t={self._stable_since}ms")
        if cfg.check_liveness and self._live_enough() and not self._done():
            raise self.fail("liveness: run ended before every honest member made progress")
        return self

    def _up_honest(self) -> list[SimNode]:
        return [x for x in self.nodes if x.up and not x.faulty]

    def _live_enough(self) -> bool:
        return len({x.member for x in self._up_honest()}) >= self.q

    def _done(self) -> bool:
        if self.now < self._stable_since:
            return False
        return all(x.finals_since_stable >= self.config.target_new_blocks
                   for x in self._up_honest())

    @property
    def trace_digest(self) -> bytes:
        return self._trace.copy().digest()

    def _dispatch(self, kind: str, payload: tuple[Any, ...]) -> None:
        if kind == "deliver":
            dst, src, data = payload
            node = self.nodes[dst]
            if node.up:
                self._deliver(node, src, data)
        elif kind == "timer":
            idx, inc, tkind, view = payload
            node = self.nodes[idx]
            if node.up and node.incarnation == inc:
                self._step(node, TimerFired(tkind, view))
        elif kind == "validated":
            idx, inc, view, digest, valid = payload
            node = self.nodes[idx]
            if node.up and node.incarnation == inc:
                self._step(node, BlockValidated(view, digest, valid))
        elif kind == "execute":
            idx, inc, roots = payload
            node = self.nodes[idx]
            if node.up and node.incarnation == inc:
                node.executed = roots
                self._step(node, BlockExecuted(roots))
        elif kind == "fetched":
            idx, inc, src, attempt, chain = payload
            node = self.nodes[idx]
            if node.up and node.incarnation == inc:
                self._on_fetch_answer(node, src, attempt, chain)
        elif kind == "command":
            (count,) = payload
            cmd = b"cmd/%d" % count
            refused = self.refuses(cmd)
            for node in self.nodes:
                if node.up and not (refused and not node.faulty):  # the mempool's checks
                    self._step(node, CommandSubmitted(cmd))
            if self.now + self.config.command_interval_ms <= self.config.commands_until_ms:
                self._push(self.now + self.config.command_interval_ms, "command", (count + 1,))
        elif kind == "crash":
            (crash,) = payload
            node = self.nodes[crash.node]
            if not node.up:
                return
            if crash.cut_after_guard is not None:
                node.cut_after_guard = crash
            elif crash.torn:
                node.crash_cut = self._faults.randint(0, 6)
                self._push(self.now + TORN_CRASH_GRACE_MS, "hardcrash", (crash.node,))
            else:
                self._crash(node)
        elif kind == "hardcrash":
            node = self.nodes[payload[0]]
            if node.up and node.crash_cut is not None:
                self._crash(node)
        elif kind == "restart":
            (crash,) = payload
            self._restart(self.nodes[crash.node], crash.wipe_guard, crash.backup_ms is not None)
        elif kind == "backup":
            node = self.nodes[payload[0]]
            node.backup = (len(node.guard), node.durable, node.exec_root,
                           merkle.Frontier(node.log.size, node.log.stack), node.durable_roots)
        else:  # pragma: no cover
            raise self.fail(f"unknown event kind {kind}")

    def _crash(self, node: SimNode) -> None:
        node.up = False
        node.crash_cut = node.cut_after_guard = None
        node.incarnation += 1
        node.fetching = node.fetch_queued = None

    def _restart(self, node: SimNode, wipe_guard: bool, from_backup: bool = False) -> None:
        if node.up:
            self._crash(node)
        node.up = True
        node.restarted_at = self.now
        node.finals_since_stable = 0
        if wipe_guard:
            node.guard.clear()
        if from_backup and node.backup is not None:
            guard_len, blocks_len, node.exec_root, log, node.durable_roots = node.backup
            node.log = merkle.Frontier(log.size, log.stack)
            del node.guard[guard_len:]
            node.durable = min(node.durable, blocks_len)
        del node.finalized[node.durable:]  # finalised but not yet stored: lost
        tip, cert = node.finalized[-1] if node.finalized else (None, None)
        node.executed = node.durable_roots  # recovery replays the stored blocks
        if wipe_guard or from_backup:
            node.seen.clear()  # a wiped or restored store has lost them too
        certified = tuple(b.roots for b, _ in node.finalized[-RECOVERED_CERTIFIED_BLOCKS:]
                          if b.executed_height > 0)  # as node/voter.py recover() reads them
        top = 0 if tip is None else tip.height
        replayed = tuple(r for r in node.stored_roots if r.height <= top)
        self._boot(node, DurableState(tuple(node.guard), tip, cert, node.executed, wipe_guard,
                                      seen=tuple(node.seen), certified=certified,
                                      replayed=replayed))

    # -- network ----------------------------------------------------------------------------

    def _link_ok(self, src: int, dst: int, msg: Message | None) -> bool:
        if self.config.router is not None and not self.config.router(src, dst, msg, self.now):
            return False
        if self.now >= self.config.gst_ms:
            return True
        return not any(p.start_ms <= self.now < p.end_ms and (src, dst) in p.blocked
                       for p in self.config.partitions)

    def _transmit(self, src: int, dsts: list[int], data: bytes, msg: Message | None) -> None:
        net = self.config.network
        pre_gst = self.now < self.config.gst_ms
        for dst in dsts:
            if dst == src:
                continue
            if not self._link_ok(src, dst, msg):
                self.stats.dropped += 1
                continue
            if pre_gst and net.drop and self._net.random() < net.drop:
                self.stats.dropped += 1
                continue
            copies = 2 if pre_gst and net.duplicate and self._net.random() < net.duplicate else 1
            for _ in range(copies):
                delay = self._base[(src, dst)] + self._net.randint(0, net.jitter_ms)
                self._push(self.now + delay, "deliver", (dst, src, data))

    def _deliver(self, node: SimNode, src: int, data: bytes) -> None:
        self.stats.deliveries += 1
        key = blake3_digest(data) if len(data) > 64 else data
        cached = self._verified.get(key)
        if cached is None:
            try:
                msg = decode_message(self.committee, data)
                verify_message(self.committee, msg)
                cached = msg
            except RemoteError as exc:
                cached = f"{type(exc).__name__}: {exc}"
            self._verified[key] = cached
        if isinstance(cached, str):
            self.stats.refused_wire[cached] = self.stats.refused_wire.get(cached, 0) + 1
            return
        self.oracle.learn(cached)
        touched = self._note_delivery(node, cached) if not node.faulty else []
        self._step(node, MessageReceived(self.nodes[src].member, cached))
        for member, view in touched:
            self._check_detection(node, member, view)

    # -- stepping and actions ---------------------------------------------------------------

    def _validate(self, node: SimNode, commands: tuple[bytes, ...]) -> bool:
        """The component's verdict on a block's commands: the seeded refusals
        (`SimConfig.refuse_commands`) at honest members; a Byzantine member accepts all."""
        return node.faulty or not any(self.refuses(c) for c in commands)

    def _step(self, node: SimNode, event: Event) -> None:
        actions = self._handle(node, event)
        cut = node.crash_cut
        scripted = node.cut_after_guard
        if scripted is not None:
            cut = next((i + 1 for i, a in enumerate(actions)
                        if isinstance(a, PersistSignerGuard)
                        and a.kind is scripted.cut_after_guard), None)
            if cut is not None:  # restart_ms is unused: the restart counts from the cut
                self._push(self.now + scripted.restart_after_ms, "restart", (scripted,))
                self._stable_since = max(self._stable_since,
                                         self.now + scripted.restart_after_ms)
        if cut is not None:
            actions = actions[:cut]
        for action in actions:
            self._execute(node, action)
        if cut is not None:
            self._crash(node)

    def _handle(self, node: SimNode, event: Event) -> list[Action | RawSend]:
        """Step the node on `event`, then on every message it sent itself, in order, as the
        daemon's consensus loop does (node/voter.py `_step_core`): a broadcast reaches the
        sender's own core too, before anything of the step is executed."""
        out: list[Action | RawSend] = []
        pending: deque[Event] = deque([event])
        while pending:
            if len(out) > DEFAULT_MAX_EVENTS:
                raise self.fail(f"node {node.node} keeps sending itself messages")
            actions: list[Action | RawSend] = node.handler.step(pending.popleft())
            for action in actions:
                if isinstance(action, Broadcast) or (isinstance(action, Send)
                                                     and action.to == node.member):
                    pending.append(MessageReceived(node.member, action.message))
            out.extend(actions)
        return out

    def _execute(self, node: SimNode, action: Action | RawSend) -> None:
        if isinstance(action, PersistSignerGuard):
            for r in node.guard:
                if (r.view == action.view and not node.faulty
                        and conflicts(r.kind, r.digest, action.kind, action.digest)):
                    raise self.fail(f"store refused a guard record of honest node "
                                    f"{node.node}: {action}")
            node.guard.append(GuardRecord(action.epoch, action.view, action.kind,
                                          action.digest))
        elif isinstance(action, Broadcast | Send):
            msg = action.message
            if not node.faulty:
                self._check_honest_signature(node, msg)
                self._check_honest_message(node, msg)
                self.oracle.learn(msg)
            data = encode_message(self.committee, msg)
            if isinstance(action, Send):
                dsts = [x.node for x in self.nodes if x.member == action.to]
            else:
                dsts = [x.node for x in self.nodes]
            self._transmit(node.node, dsts, data, msg)
        elif isinstance(action, RawSend):
            dsts = [x.node for x in self.nodes if action.to is None or x.member == action.to]
            self._transmit(node.node, dsts, action.data, None)
        elif isinstance(action, SetTimer):
            self._push(self.now + action.delay_ms, "timer",
                       (node.node, node.incarnation, action.kind, action.view))
        elif isinstance(action, Finalized):
            self._on_finalized(node, action)
        elif isinstance(action, EvidenceFound):
            ev = action.evidence
            try:
                ev.verify(self.committee)
            except RemoteError as exc:
                raise self.fail(f"node {node.node} produced evidence that does not verify: "
                                f"{exc}") from None
            if ev.member in self.honest_members:
                raise self.fail(f"evidence against honest member {ev.member}: {ev.kind.value}")
            node.evidence.add((ev.member, ev.view, ev.kind))
            self.stats.evidence += 1
        elif isinstance(action, WrongRootFound):
            wrong = action.evidence
            try:
                wrong.verify(self.committee)
            except RemoteError as exc:
                raise self.fail(f"node {node.node} produced wrong-root evidence that does not "
                                f"verify: {exc}") from None
            if not node.faulty:
                if wrong.member in self.honest_members:
                    raise self.fail(f"wrong-root evidence against honest member "
                                    f"{wrong.member} (view {wrong.view})")
                self.stats.wrong_roots[wrong.member] = \
                    self.stats.wrong_roots.get(wrong.member, 0) + 1
        elif isinstance(action, ValidateBlock):
            # The shell answers in the same round (node/voter.py): no time passes.
            self._push(self.now, "validated", (node.node, node.incarnation, action.view,
                                               action.digest, self._validate(node, action.commands)))
        elif isinstance(action, FetchBlocks):
            self._serve_fetch(node, action)
        elif isinstance(action, StateDivergence):
            if not node.faulty:
                raise self.fail(f"state divergence at node {node.node}: {action}")
        elif isinstance(action, RecordSeen):
            node.seen.append(action.statement)
            if len(node.seen) > SEEN_KEPT:
                del node.seen[: len(node.seen) - SEEN_KEPT]
        elif isinstance(action, Refused):
            reason = action.reason
            self.stats.refused_core[reason] = self.stats.refused_core.get(reason, 0) + 1

    def _on_finalized(self, node: SimNode, action: Finalized) -> None:
        block = action.block
        expected = node.finalized[-1][0].height + 1 if node.finalized else 1
        if block.height != expected:
            raise self.fail(f"node {node.node} finalised height {block.height}, "
                            f"expected {expected}")
        node.finalized.append((block, action.certificate))
        for item in block.evidence:  # evidence already in the chain counts as known
            ev = Evidence.decode(item)
            node.evidence.add((ev.member, ev.view, ev.kind))
        cert = action.certificate
        if cert.kind is VoteKind.FINALIZE and cert.digest == block.digest:
            # Stored (node/journal.py `take_blocks`), then executed (node/voter.py).
            for stored, _ in node.finalized[node.durable:]:
                node.exec_root = blake3_digest(node.exec_root + stored.digest)
                for i, command in enumerate(stored.commands):
                    node.log.append(merkle.leaf_hash(encode([stored.height, i, command])))
                roots = CertifiedRoots(stored.height, node.exec_root, node.log.size,
                                       node.log.root())
                node.durable_roots = roots
                node.stored_roots.append(roots)
                del node.stored_roots[:-RECOVERED_CERTIFIED_BLOCKS]
                self._push(self.now + EXECUTE_DELAY_MS, "execute",
                           (node.node, node.incarnation, roots))
            node.durable = len(node.finalized)
        if node.faulty:
            return
        prior = self._final_at.setdefault(block.height, block.digest)
        if prior != block.digest:
            raise self.fail(f"agreement: height {block.height} finalised as "
                            f"{prior.hex()[:12]} and {block.digest.hex()[:12]}")
        refusal = self.oracle.finalized_refusal(block, cert)
        if refusal is not None:
            raise self.fail(f"node {node.node} finalised height {block.height}: {refusal}")
        self.oracle.finalized.add(block.digest)
        self.stats.max_height = max(self.stats.max_height, block.height)
        node.last_final_ms = self.now
        if self.now >= max(self._stable_since, node.restarted_at):
            node.finals_since_stable += 1

    def _serve_fetch(self, node: SimNode, action: FetchBlocks) -> None:
        if node.fetching is None:
            node.fetching = action
            self._fetch_from(node, 0)
        elif node.fetch_queued is None:
            node.fetch_queued = action

    def _fetch_done(self, node: SimNode) -> None:
        node.fetching, node.fetch_queued = node.fetch_queued, None
        if node.fetching is not None:
            self._fetch_from(node, 0)

    def _on_fetch_answer(self, node: SimNode, src: int, attempt: int,
                         chain: tuple[tuple[Block, Certificate], ...] | None) -> None:
        if chain:
            try:
                verify_fetched(self.committee, chain)  # as the resolver does
            except RemoteError as exc:
                if not self.nodes[src].faulty:
                    raise self.fail(f"honest peer served a bad chain: {exc}") from None
                reason = f"fetched: {type(exc).__name__}: {exc}"
                self.stats.refused_wire[reason] = self.stats.refused_wire.get(reason, 0) + 1
                chain = None
        if not chain:
            self._fetch_from(node, attempt + 1)  # no answer, or a refused one: the next peer
            return
        node.fetch_turn += attempt + 1
        self.oracle.learn_chain(chain)
        self._step(node, BlocksFetched(chain))
        if node.up:
            self._fetch_done(node)

    def _fetch_from(self, node: SimNode, attempt: int) -> None:
        """Ask the next peer in turn, Byzantine ones included; it answers from its store
        (the durable blocks), as the resolver's block server does."""
        action = node.fetching
        peers = [x for x in self.nodes if x.up and x.node != node.node]
        if action is None or attempt >= len(peers):
            self._fetch_done(node)
            return
        peer = peers[(node.fetch_turn + attempt) % len(peers)]
        # Serve the range, extended up to a block finalised by its own certificate so that
        # every certificate in the answer refers to a block in it (verify_fetched).
        chain_list: list[tuple[Block, Certificate]] = []
        for block, cert in peer.finalized[:peer.durable]:
            if block.height < action.from_height:
                continue
            if block.height > action.to_height and chain_list and \
                    chain_list[-1][1].digest == chain_list[-1][0].digest:
                break
            chain_list.append((block, cert))
        chain: tuple[tuple[Block, Certificate], ...] | None = tuple(chain_list)
        if isinstance(peer.handler, Behaviour):
            stored = tuple(f for f in peer.finalized[:peer.durable]
                           if f[0].height >= action.from_height)
            chain = peer.handler.serve_fetch(node.member, action, tuple(chain_list), stored)
        if not self._link_ok(peer.node, node.node, None):
            chain = None
        delay = 2 * self._base[(node.node, peer.node)] if chain is not None else FETCH_TIMEOUT_MS
        self._push(self.now + delay, "fetched",
                   (node.node, node.incarnation, peer.node, attempt, chain))

    # -- invariants -------------------------------------------------------------------------

    def _check_honest_message(self, node: SimNode, msg: Message) -> None:
        """What an honest node sends is well formed and its notarise votes are justified
        (testing/oracle.py)."""
        refusal = self.oracle.message_refusal(msg)
        if refusal is None and isinstance(msg, Vote) and msg.kind is VoteKind.NOTARIZE:
            refusal = self.oracle.notarize_refusal(msg.digest)
        if refusal is not None:
            raise self.fail(f"honest node {node.node} sent {type(msg).__name__} for view "
                            f"{message_view(msg)}: {refusal}")

    def _check_honest_signature(self, node: SimNode, msg: Message) -> None:
        """No honest member ever signs two conflicting statements (across restarts)."""
        stmt: tuple[int, SignedKind, bytes] | None = None
        if isinstance(msg, Vote) and msg.signer == node.member:
            stmt = (msg.view, SignedKind.of_vote(msg.kind), msg.digest)
        elif isinstance(msg, Proposal) and msg.block.proposer == node.member:
            stmt = (msg.block.view, SignedKind.PROPOSE, msg.block.digest)
        if stmt is None:
            return
        view, kind, digest = stmt
        for other in SignedKind:
            prior = self._signed.get((node.member, view, other))
            if prior is not None and conflicts(other, prior, kind, digest):
                raise self.fail(f"honest member {node.member} signed conflicting "
                                f"{other.name}/{kind.name} in view {view}")
        self._signed.setdefault((node.member, view, kind), digest)

    @staticmethod
    def statements(msg: Message) -> list[tuple[int, int, SignedKind, bytes]]:
        """(member, view, kind, digest) of every signed statement a message carries."""
        if isinstance(msg, Vote):
            return [(msg.signer, msg.view, SignedKind.of_vote(msg.kind), msg.digest)]
        if isinstance(msg, Proposal):
            b = msg.block
            return [(b.proposer, b.view, SignedKind.PROPOSE, b.digest)]
        if isinstance(msg, ProposalHeader):
            return [(msg.proposer, msg.view, SignedKind.PROPOSE, msg.digest)]
        if isinstance(msg, Notarization | Nullification | Finalization):
            c = msg.certificate
            kind = SignedKind.of_vote(c.kind)
            return [(i, c.view, kind, c.digest) for i, _ in c.signatures]
        return []

    def _note_delivery(self, node: SimNode, msg: Message) -> list[tuple[int, int]]:
        core = node.core
        touched = []
        is_cert = isinstance(msg, Notarization | Nullification | Finalization)
        for member, view, kind, digest in self.statements(msg):
            if view < core.view - MAX_VIEWS_BEHIND or view <= 0:
                continue
            if not is_cert and view > core.view + MAX_VIEWS_AHEAD:
                continue
            if member >= self.committee.n:
                continue
            table = node.delivered.setdefault((member, view), {})
            table.setdefault(kind, set()).add(digest)
            touched.append((member, view))
        return touched

    def _check_detection(self, node: SimNode, member: int, view: int) -> None:
        """Every equivocation provable to an honest node yields evidence in that step."""
        if not node.up or node.faulty:
            return
        table = node.delivered.get((member, view), {})
        for ka in sorted(table):
            for kb in sorted(table):
                if kb < ka:
                    continue
                ek = evidence_kind(ka, kb)
                if ek is None:
                    continue
                pairs = ka is kb and len(table[ka]) > 1
                cross = ka is not kb
                if (pairs or cross) and (member, view, ek) not in node.evidence:
                    raise self.fail(f"node {node.node} saw {ek.value} by member {member} in "
                                    f"view {view} but produced no evidence")


def run(config: SimConfig) -> Simulation:
    return Simulation(config).run()


def swarm_config(seed: int, n: int | None = None) -> SimConfig:
    """A random scenario from one seed: committee size, faulty members (never more than the
    safety bound), network quality, partitions, crashes with torn writes, an amnesiac, a
    twin (same key on two nodes, split until the network heals)."""
    rng = random.Random(f"{seed}:swarm")
    n = n if n is not None else rng.choice((4, 5, 7))
    committee, _ = make_committee(n)
    budget = committee.safety_bound
    members = list(range(n))
    rng.shuffle(members)
    names = sorted(CATALOGUE)
    nbyz = rng.randint(0, budget)
    byzantine = tuple((m, rng.choice(names)) for m in sorted(members[:nbyz]))
    rest = members[nbyz:]
    gst = rng.randint(500, 4000)
    network = NetworkConfig(min_delay_ms=rng.randint(1, 10), max_delay_ms=rng.randint(10, 60),
                            jitter_ms=rng.randint(0, 40), drop=rng.choice((0.0, 0.05, 0.2)),
                            duplicate=rng.choice((0.0, 0.05, 0.2)))
    partitions = []
    for _ in range(rng.randint(0, 2)):
        start = rng.randint(0, gst)
        end = rng.randint(start, gst + 1000)
        side = tuple(sorted(rng.sample(range(n), rng.randint(1, n - 1))))
        other = tuple(i for i in range(n) if i not in side)
        if rng.random() < 0.5:
            partitions.append(Partition.split(start, end, side, other))
        else:
            partitions.append(Partition.one_way(start, end, side, other))
    twins: tuple[int, ...] = ()
    if nbyz < budget and rest and rng.random() < 0.25:
        twin_of = rest.pop()  # node n runs member `twin_of` with the same key
        twins = (twin_of,)
        nbyz += 1
        side = tuple(sorted({n, *rng.sample(range(n), rng.randint(1, n - 1))} - {twin_of}))
        other = tuple(i for i in range(n + 1) if i not in side)
        partitions.append(Partition.split(0, gst, side, other))
    crashes = []
    if nbyz < budget and rest and rng.random() < 0.3:
        victim = rest.pop()
        at = rng.randint(100, gst)
        crashes.append(Crash(victim, at, at + rng.randint(100, 1500), wipe_guard=True))
    for victim in rest[: rng.randint(0, 2)]:
        at = rng.randint(100, gst + 1000)
        crashes.append(Crash(victim, at, at + rng.randint(100, 2000), torn=rng.random() < 0.7))
    return SimConfig(seed=seed, n=n, gst_ms=gst, network=network,
                     partitions=tuple(partitions), crashes=tuple(crashes), byzantine=byzantine,
                     twins=twins, target_new_blocks=5)
