"""Twins scenarios on the deterministic simulator (bft.md §3.1, DESIGN §3).

A *twinned* member runs on two nodes with the same index and the same key, both running the
unmodified honest core. During an adversarial prefix of `views` views each view has its own
partition of the nodes; a message about view v is delivered only inside the group of view v's
partition (the copies of a twin sit in different groups, so each copy sees a different world
and, honestly following the rules, signs things its sibling contradicts). From view
`views + 1`, or at `heal_ms` at the latest, the network is fully synchronous.

What a scenario asserts (`run_scenario`):
* at most f_s twinned members: the simulator's own invariants hold in every step (agreement, no
  honest double-sign, evidence validates and never names an honest member, every provable
  equivocation yields evidence), and progress resumes: every honest node finalises a block
  within the simulator's stated liveness bound after the heal;
* more than f_s twinned members: safety may break; whenever honest nodes finalise conflicting
  blocks, the signatures inside the certificates honest nodes hold (received, formed or
  fetched), pooled as an auditor would, yield `Evidence` objects that verify offline and
  name at least `2q - n` distinct members, none of them honest.

Nodes 0..n-1 are members 0..n-1; node n+k is the second copy of member `twins[k]`.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Final

from coalitiond.consensus.events import (
    Action,
    BlocksFetched,
    Broadcast,
    Event,
    EvidenceFound,
    MessageReceived,
    Send,
    StateDivergence,
)
from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.messages import (
    EvidenceMessage,
    Finalization,
    Message,
    Notarization,
    Nullification,
    Proposal,
    ProposalHeader,
)
from coalitiond.consensus.statements import SignedKind, conflicts
from coalitiond.consensus.types import Certificate, Vote
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.errors import LocalError
from coalitiond.testing.simulator import (
    Router,
    SimConfig,
    SimNode,
    Simulation,
    SimulationFailure,
    liveness_bound_ms,
    make_committee,
)

#: Longest adversarial prefix a sampled scenario uses (Twins finds known flaws within about a
#: dozen rounds; the campaigns here stay short so thousands of cases fit in a long run).
MAX_ADVERSARIAL_VIEWS: Final = 6
#: Virtual time after which the network heals even if views are stuck behind a partition.
HEAL_MS: Final = 2_500
#: Virtual time after the heal + liveness bound before a run stops; a run beyond the safety
#: bound (no liveness promise) stops this long after the heal.
SETTLE_MS: Final = 1_500
#: Heal time of enumerated scenarios: two adversarial views at the simulator's 300 ms view
#: timer fit well inside it, and a short prefix keeps 2^((n-1)·views) runs affordable.
EXHAUSTIVE_HEAL_MS: Final = 1_000
#: The simulator's failure message for honest members finalising conflicting blocks.
FORK_SIGN: Final = "agreement:"
#: ... and the one that means "no progress", which only the within-bound case promises.
STALL_SIGN: Final = "liveness:"

# A signed statement as evidence needs it: (member, view, kind, digest, signature).
Signed = tuple[int, int, SignedKind, bytes, bytes]


@dataclass(frozen=True)
class Scenario:
    """One Twins case. `partitions[v - 1]` splits the nodes for view v (groups of nodes)."""

    seed: int
    n: int
    twins: tuple[int, ...]
    partitions: tuple[tuple[frozenset[int], ...], ...]
    heal_ms: int = HEAL_MS

    @property
    def views(self) -> int:
        return len(self.partitions)

    def node_name(self, node: int) -> str:
        return str(node) if node < self.n else f"{self.twins[node - self.n]}'"

    def describe(self) -> str:
        views = "; ".join(
            f"v{v + 1}:" + "|".join(",".join(self.node_name(x) for x in sorted(g)) for g in p)
            for v, p in enumerate(self.partitions))
        return (f"seed={self.seed} n={self.n} twins={list(self.twins)} "
                f"heal={self.heal_ms}ms [{views}]")

    def group_of(self, view: int, node: int) -> int:
        for i, group in enumerate(self.partitions[view - 1]):
            if node in group:
                return i
        return -1  # a node left out of every group hears nobody during that view


def message_view(msg: Message | None) -> int | None:
    """The view a message is about; None for traffic that is not (fetches, raw bytes)."""
    if isinstance(msg, Vote):
        return msg.view
    if isinstance(msg, Proposal):
        return msg.block.view
    if isinstance(msg, ProposalHeader):
        return msg.view
    if isinstance(msg, Notarization | Nullification | Finalization):
        return msg.certificate.view
    if isinstance(msg, EvidenceMessage):
        return msg.evidence.view
    return None


def signed_statements(msg: Message) -> list[Signed]:
    """Every signed statement a verified message carries, with its signature."""
    if isinstance(msg, Vote):
        return [(msg.signer, msg.view, SignedKind.of_vote(msg.kind), msg.digest,
                 msg.signature)]
    if isinstance(msg, Proposal):
        b = msg.block
        return [(b.proposer, b.view, SignedKind.PROPOSE, b.digest, msg.signature)]
    if isinstance(msg, ProposalHeader):
        return [(msg.proposer, msg.view, SignedKind.PROPOSE, msg.digest, msg.signature)]
    if isinstance(msg, Notarization | Nullification | Finalization):
        return certificate_statements(msg.certificate)
    return []


def certificate_statements(cert: Certificate) -> list[Signed]:
    kind = SignedKind.of_vote(cert.kind)
    return [(i, cert.view, kind, cert.digest, sig) for i, sig in cert.signatures]


@dataclass
class Transcript:
    """What the honest nodes hold: every statement they received, fetched or signed, and
    the evidence their cores produced. Twins' copies are not auditors (they are the
    faulty members of the scenario)."""

    #: (member, view) -> kind -> digest -> one signature
    statements: dict[tuple[int, int], dict[SignedKind, dict[bytes, bytes]]] = field(
        default_factory=dict)
    core_evidence: dict[bytes, Evidence] = field(default_factory=dict)

    def add(self, stmts: list[Signed]) -> None:
        for member, view, kind, digest, sig in stmts:
            by_kind = self.statements.setdefault((member, view), {})
            by_kind.setdefault(kind, {}).setdefault(digest, sig)

    def audit(self, committee: CommitteeSpec) -> list[Evidence]:
        """Evidence for every conflicting pair in the pooled statements, each verified
        offline against the committee (raises InvalidEvidence if one does not verify)."""
        found: dict[bytes, Evidence] = {}
        for (member, view), by_kind in sorted(self.statements.items()):
            flat = sorted((k, d, s) for k, ds in by_kind.items() for d, s in ds.items())
            for i, (ka, da, sa) in enumerate(flat):
                for kb, db, sb in flat[i + 1:]:
                    if not conflicts(ka, da, kb, db):
                        continue
                    try:
                        ev = Evidence.build(committee, view, member, Statement(ka, da, sa),
                                            Statement(kb, db, sb))
                    except LocalError:
                        continue  # a pair of kinds that makes no evidence (e.g. propose)
                    ev.verify(committee)
                    found[ev.id] = ev
        return [found[k] for k in sorted(found)]


class TwinsSimulation(Simulation):
    """The core engineer's Simulation, observed: every message an honest node receives or
    sends and every evidence its core emits goes into the transcript, and twinned members'
    copies count toward "q members up" (they run honest code; only their key is shared).

    Beyond the safety bound, an honest node that sees a block contradict the state root it
    executed (`StateDivergence`: it forked from a twin's copy, not necessarily from another
    honest node) is counted, not failed, so the run goes on to the fork between honest
    nodes that the accountability check is about.

    Wraps private methods of Simulation because it has no observer hook; see the report."""

    def __init__(self, config: SimConfig, *, tolerate_divergence: bool = False) -> None:
        self.transcript = Transcript()
        #: Only the signatures that certificates carried: what a fork's two certificate
        #: chains prove without anybody's individual votes.
        self.certificates = Transcript()
        self.tolerate_divergence = tolerate_divergence
        self.divergences = 0
        super().__init__(config)

    def _record(self, msg: Message) -> None:
        stmts = signed_statements(msg)
        self.transcript.add(stmts)
        if isinstance(msg, Notarization | Nullification | Finalization):
            self.certificates.add(stmts)

    def _step(self, node: SimNode, event: Event) -> None:
        if not node.faulty:
            if isinstance(event, MessageReceived):
                self._record(event.message)
            elif isinstance(event, BlocksFetched):
                for _, cert in event.chain:
                    self.transcript.add(certificate_statements(cert))
                    self.certificates.add(certificate_statements(cert))
        super()._step(node, event)

    def _execute(self, node: SimNode, action: Action | object) -> None:
        if not node.faulty:
            if isinstance(action, Broadcast | Send):
                self._record(action.message)
            elif isinstance(action, EvidenceFound):
                self.transcript.core_evidence[action.evidence.id] = action.evidence
            elif isinstance(action, StateDivergence) and self.tolerate_divergence:
                self.divergences += 1
                return
        super()._execute(node, action)  # type: ignore[arg-type]

    def _live_enough(self) -> bool:
        up = {x.member for x in self.nodes if x.up and x.behaviour == "honest"}
        return len(up) >= self.q


@dataclass
class Outcome:
    scenario: Scenario
    forked: bool
    stalled: bool
    failure: str | None
    culprits: tuple[int, ...]
    core_culprits: tuple[int, ...]
    evidence: int
    divergences: int
    max_height: int
    events: int
    trace_digest: bytes

    def summary(self) -> str:
        fork = (f"FORK ({self.failure}); evidence names {list(self.culprits)}"
                if self.forked else "safe, stalled" if self.stalled else "safe, live")
        return (f"[twins] {self.scenario.describe()}: {fork}; core evidence against "
                f"{list(self.core_culprits)}; {self.divergences} state divergences; "
                f"height {self.max_height}; {self.events} events")


def make_router(scenario: Scenario, holder: list[Simulation]) -> Router:
    """Per-view routing: before the heal, a message about view v <= views crosses only
    inside view v's groups; traffic about no view (catch-up fetches) follows the receiver's
    current view. Everything else is delivered."""

    def router(src: int, dst: int, msg: Message | None, now: int) -> bool:
        if now >= scenario.heal_ms:
            return True
        view = message_view(msg)
        if view is None and holder:
            view = holder[0].nodes[dst].core.view
        if view is None or view < 1 or view > scenario.views:
            return True
        group = scenario.group_of(view, src)
        return group >= 0 and group == scenario.group_of(view, dst)

    return router


def run_scenario(scenario: Scenario, *, target_new_blocks: int = 2) -> Outcome:
    """Run one scenario and assert what it promises (see the module docstring).

    Raises SimulationFailure (message starts with the seed) or AssertionError."""
    committee, _ = make_committee(scenario.n)
    within_bound = len(scenario.twins) <= committee.safety_bound
    holder: list[Simulation] = []
    config = SimConfig(
        seed=scenario.seed, n=scenario.n, twins=scenario.twins,
        router=make_router(scenario, holder), gst_ms=scenario.heal_ms,
        target_new_blocks=target_new_blocks)
    bound = liveness_bound_ms(config)  # the simulator's own stated bound, from the heal
    config = dataclasses.replace(
        config, max_time_ms=scenario.heal_ms + (bound if within_bound else 0) + SETTLE_MS,
        commands_until_ms=scenario.heal_ms + bound)
    sim = TwinsSimulation(config, tolerate_divergence=not within_bound)
    holder.append(sim)
    failure: str | None = None
    stalled = False
    try:
        sim.run()
    except SimulationFailure as exc:
        if within_bound:
            raise
        if STALL_SIGN in str(exc):
            stalled = True  # beyond the bound there is no liveness promise
        elif FORK_SIGN in str(exc):
            failure = str(exc)
        else:
            raise
    culprits: tuple[int, ...] = ()
    if failure is not None:
        # More than f_s twins and the committee forked: accountability must hold, from the
        # certificates honest nodes hold alone (no individual votes needed); the full
        # transcript can only add culprits.
        evidence = sim.certificates.audit(sim.committee)
        culprits = tuple(sorted({ev.member for ev in evidence}))
        need = 2 * sim.q - scenario.n
        prefix = f"{scenario.describe()}: fork ({failure})"
        assert len(culprits) >= need, (
            f"{prefix}: evidence names {list(culprits)}, need at least {need} members")
        honest = set(range(scenario.n)) - set(scenario.twins)
        assert not honest & set(culprits), f"{prefix}: evidence names honest {culprits}"
    else:
        evidence = list(sim.transcript.core_evidence.values())
    core_culprits = tuple(sorted({ev.member for ev in sim.transcript.core_evidence.values()}))
    return Outcome(scenario, failure is not None, stalled, failure, culprits, core_culprits,
                   len(evidence), sim.divergences, sim.stats.max_height, sim.stats.events,
                   sim.trace_digest)


# --- scenario generation --------------------------------------------------------------------

def random_partition(rng: random.Random, scenario_nodes: int, n: int,
                     twins: tuple[int, ...]) -> tuple[frozenset[int], ...]:
    """A 2-way split of the nodes (sometimes 3-way), with each twin's copies apart."""
    groups = 3 if rng.random() < 0.2 else 2
    assign: dict[int, int] = {}
    for k, member in enumerate(twins):
        a = rng.randrange(groups)
        b = (a + 1 + rng.randrange(groups - 1)) % groups
        assign[member], assign[n + k] = a, b
    for node in range(scenario_nodes):
        if node not in assign:
            assign[node] = rng.randrange(groups)
    return tuple(frozenset(x for x in range(scenario_nodes) if assign[x] == g)
                 for g in range(groups) if any(assign[x] == g for x in assign))


def twin_split(rng: random.Random, scenario_nodes: int, n: int,
               twins: tuple[int, ...]) -> tuple[frozenset[int], ...]:
    """Every original on one side, every copy on the other, honest members scattered: the
    split that gives each side as many distinct members as possible (the fork-prone one)."""
    side_a = set(twins)
    side_b = {n + k for k in range(len(twins))}
    for member in range(n):
        if member not in twins:
            (side_a if rng.random() < 0.5 else side_b).add(member)
    return (frozenset(side_a), frozenset(side_b))


def sample_scenario(seed: int, n: int, beyond_bound: bool) -> Scenario:
    """A seeded scenario: how many and which members are twinned, how many adversarial views,
    and each view's partition all come from `(n, beyond_bound, seed)`, so it replays exactly.

    Within the bound: 1..(2q - n - 1) twins. Beyond it: one or two more than that."""
    rng = random.Random(f"twins:{n}:{int(beyond_bound)}:{seed}")
    committee, _ = make_committee(n)
    bound = committee.safety_bound
    count = (rng.randint(bound + 1, min(n, bound + 2)) if beyond_bound
             else rng.randint(1, bound))
    twins = tuple(sorted(rng.sample(range(n), count)))
    views = rng.randint(2, MAX_ADVERSARIAL_VIEWS)
    nodes = n + count
    partitions = tuple(
        twin_split(rng, nodes, n, twins) if rng.random() < 0.5
        else random_partition(rng, nodes, n, twins)
        for _ in range(views))
    return Scenario(seed, n, twins, partitions, heal_ms=rng.randint(1_000, HEAL_MS))


def forking_scenario(n: int, seed: int = 0) -> Scenario:
    """f_s + 1 twins split so that both sides hold exactly q distinct members in every
    adversarial view: each side makes progress alone, so the committee must fork."""
    committee, _ = make_committee(n)
    q, t = committee.quorum, committee.safety_bound + 1
    twins = tuple(range(1, t + 1))  # member 1 leads view 1: a twinned leader from the start
    honest = [m for m in range(n) if m not in twins]
    side_a = frozenset([*twins, *honest[: q - t]])
    side_b = frozenset([*(n + k for k in range(t)), *honest[q - t:]])
    assert len(side_a) == len(side_b) == q
    return Scenario(seed, n, twins, tuple((side_a, side_b) for _ in range(MAX_ADVERSARIAL_VIEWS)),
                    heal_ms=HEAL_MS)


def enumerate_scenarios(n: int, twins: tuple[int, ...], views: int,
                        seed: int = 0) -> list[Scenario]:
    """Every 2-way split per view with each twin's original and copy apart, for `views`
    views: 2^(n-1) splits per view, so 2^((n-1)·views) scenarios. Sides are unordered, so
    the first twin's original is fixed on side A without losing a case."""
    free = [x for x in range(n) if x != twins[0]]  # members and originals placed freely
    splits: list[tuple[frozenset[int], ...]] = []
    for mask in range(1 << len(free)):
        side_a = {twins[0], *(x for i, x in enumerate(free) if mask >> i & 1)}
        side_b = {x for x in free if x not in side_a}
        for k, member in enumerate(twins):  # each copy sits opposite its original
            (side_b if member in side_a else side_a).add(n + k)
        splits.append((frozenset(side_a), frozenset(side_b)))
    combos: list[tuple[tuple[frozenset[int], ...], ...]] = [()]
    for _ in range(views):
        combos = [(*c, s) for c in combos for s in splits]
    return [Scenario(seed, n, twins, c, heal_ms=EXHAUSTIVE_HEAL_MS) for c in combos]
