"""Simulator campaigns: the invariants of docs/protocol.md §10 under faults and attacks.

Every test takes its seeds from the `sim_seeds` fixture: the default run is short (a few seeds
per scenario), `pytest --sim-seeds N` runs N seeds per scenario, `pytest --sim-seed S` replays
one. A failure's message starts with `seed=S` and says how to replay it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coalitiond.consensus.events import Finalized
from coalitiond.consensus.statements import SignedKind
from coalitiond.consensus.types import ZERO_DIGEST, Block, Certificate, Vote, VoteKind
from coalitiond.consensus.voter import Core
from coalitiond.testing.byzantine import CATALOGUE, GarbageSender
from coalitiond.testing.simulator import (
    Crash,
    NetworkConfig,
    Partition,
    SimConfig,
    Simulation,
    SimulationFailure,
    run,
    swarm_config,
)

#: Seeds per scenario when neither --sim-seeds nor --sim-seed is given (CI budget).
DEFAULT_SEEDS = 3
SWARM_DEFAULT_SEEDS = 12
#: Members fetch from the liar first in about a quarter of their returns: more seeds.
LIAR_DEFAULT_SEEDS = 6


def pick(request: pytest.FixtureRequest, seeds: list[int], default: int) -> list[int]:
    explicit = (request.config.getoption("--sim-seeds") is not None
                or request.config.getoption("--sim-seed") is not None)
    return seeds if explicit else seeds[:default]


def campaign(seeds: list[int], make: Callable[[int], SimConfig]) -> list[Simulation]:
    sims = []
    for seed in seeds:
        print(f"simulating seed {seed}")  # shown on failure; replay with --sim-seed
        sims.append(run(make(seed)))
    return sims


#: Scripted torn write (scenario "torn-proposal-restart").
TORN_PROPOSER = 2


def torn_proposal_restart(seed: int) -> SimConfig:
    return SimConfig(seed=seed, n=5, target_new_blocks=10, crashes=(
        Crash(TORN_PROPOSER, 300, cut_after_guard=SignedKind.PROPOSE, restart_after_ms=20),))


SCENARIOS: dict[str, Callable[[int], SimConfig]] = {
    "clean-n4": lambda s: SimConfig(seed=s, n=4, target_new_blocks=10),
    "clean-n7": lambda s: SimConfig(seed=s, n=7, target_new_blocks=5),
    "lossy-dup-jitter": lambda s: SimConfig(
        seed=s, n=5, gst_ms=3000,
        network=NetworkConfig(drop=0.2, duplicate=0.2, jitter_ms=60)),
    "partitions": lambda s: SimConfig(
        seed=s, n=5, gst_ms=4000,
        partitions=(Partition.split(300, 1500, (0, 1), (2, 3, 4)),
                    Partition.one_way(1500, 3000, (2,), (0, 1, 3, 4)),
                    Partition.one_way(2000, 3500, (0, 1, 3, 4), (4,)))),
    "crashes-torn": lambda s: SimConfig(
        seed=s, n=5, network=NetworkConfig(drop=0.05), gst_ms=2000,
        crashes=(Crash(1, 400, 1200), Crash(3, 900, 2500), Crash(1, 2600, 2700))),
    "crash-without-restart": lambda s: SimConfig(seed=s, n=5, crashes=(Crash(2, 500),)),
    "amnesiac-restart": lambda s: SimConfig(
        seed=s, n=5, crashes=(Crash(1, 600, 900, wipe_guard=True),)),
    # Member 2's first proposal after t=300ms is cut off right after its guard record (a torn
    # write: durable, never sent) and it restarts 20 ms later, back in that view: no peer saw
    # the proposal, so the start-up recall cannot return it, and only the durable guard keeps
    # it from proposing a second block in that view (kills `guard-lost-on-restart`).
    "torn-proposal-restart": torn_proposal_restart,
    # Validation refuses a quarter of the commands at every honest member; a Byzantine
    # member's core takes them all, so its blocks carry refused commands.
    "validation-refusals": lambda s: SimConfig(
        seed=s, n=5, refuse_commands=0.25, byzantine=((2, "selective-sender"),),
        network=NetworkConfig(drop=0.05), gst_ms=1000, target_new_blocks=8),
}

#: Attacks at the safety bound (n = 5 tolerates 2 Byzantine members for safety, 1 for
#: liveness): agreement and every other invariant must hold; progress is not promised.
AT_THE_BOUND: dict[str, tuple[tuple[int, str], ...]] = {
    "equivocating-leader+double-finalize": ((0, "equivocating-leader"), (3, "double-finalize")),
    # Leaders of consecutive views: one plants an un-notarised block, the next builds on it.
    "fork-seekers": ((1, "fork-seeker"), (2, "fork-seeker")),
    "equivocating-voters": ((1, "double-notarize"), (3, "nullify-and-finalize")),
}


def catalogue_config(behaviour: str) -> Callable[[int], SimConfig]:
    """One Byzantine member of 5 (safety bound 2) plus a lossy start."""
    return lambda s: SimConfig(seed=s, n=5, byzantine=((1, behaviour),), gst_ms=1000,
                               network=NetworkConfig(drop=0.05), target_new_blocks=8)


def at_the_bound_config(byzantine: tuple[tuple[int, str], ...]) -> Callable[[int], SimConfig]:
    """Ends once every honest member finalised 10 blocks after the heal (or at 20 s): long
    enough for attackers that need their turn as leader."""
    return lambda s: SimConfig(seed=s, n=5, byzantine=byzantine,
                               network=NetworkConfig(drop=0.1, duplicate=0.1), gst_ms=2000,
                               max_time_ms=20_000, target_new_blocks=10)


def catch_up_from_liar(seed: int) -> SimConfig:
    """Two members are down while the others finalise, so they fetch on their return: from
    a lying fetch server too."""
    return SimConfig(seed=seed, n=5, byzantine=((1, "lying-fetch-server"),),
                     crashes=(Crash(3, 200, 2500, torn=False), Crash(4, 700, 3000),
                              Crash(0, 3200, 5000), Crash(2, 3600, 5500, torn=False)),
                     target_new_blocks=5)


def twins_partition_config(seed: int) -> SimConfig:
    """Member 1 runs twice (node 4 is its twin); each copy talks to one side until t=2s."""
    def router(src: int, dst: int, msg: object, now: int) -> bool:
        side = {0: "A", 4: "A"}
        return now >= 2000 or side.get(src, "B") == side.get(dst, "B")

    return SimConfig(seed=seed, n=4, twins=(1,), router=router)


def default_campaigns() -> list[tuple[str, Callable[[int], SimConfig], list[int]]]:
    """Every simulator run of this module's default (short) campaign: (name, config of a
    seed, seeds). tests/mutants.py runs exactly these against each mutant."""
    d, runs = list(range(DEFAULT_SEEDS)), []
    runs += [(f"scenario[{name}]", SCENARIOS[name], d) for name in sorted(SCENARIOS)]
    runs += [(f"catalogue[{b}]", catalogue_config(b), d) for b in sorted(CATALOGUE)]
    runs += [(f"at-the-bound[{name}]", at_the_bound_config(AT_THE_BOUND[name]), d)
             for name in AT_THE_BOUND]
    runs += [("catch-up-from-liar", catch_up_from_liar, list(range(LIAR_DEFAULT_SEEDS))),
             ("twins-partition", twins_partition_config, d),
             ("swarm", swarm_config, list(range(SWARM_DEFAULT_SEEDS)))]
    return runs


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_network_and_crash_scenarios(name: str, sim_seeds: list[int],
                                     request: pytest.FixtureRequest) -> None:
    sims = campaign(pick(request, sim_seeds, DEFAULT_SEEDS), SCENARIOS[name])
    assert all(sim.stats.max_height > 0 for sim in sims)


def test_restart_into_the_view_of_an_unsent_proposal(sim_seeds: list[int],
                                                   request: pytest.FixtureRequest) -> None:
    """docs/protocol.md §8, what the recall cannot cover: the member restarts in the view of
    a proposal only its guard holds; it proposes nothing else in that view (the simulator's
    store refuses a conflicting guard record), and it finalises again after the restart."""
    for sim in campaign(pick(request, sim_seeds, DEFAULT_SEEDS), torn_proposal_restart):
        node = sim.nodes[TORN_PROPOSER]
        assert node.incarnation == 1 and node.up, f"seed={sim.seed}: the cut never happened"
        proposed = [r for r in node.guard if r.kind is SignedKind.PROPOSE]
        assert len({r.view for r in proposed}) == len(proposed), f"seed={sim.seed}: {proposed}"
        assert node.finals_since_stable >= 10, f"seed={sim.seed}: {node.finals_since_stable}"


@pytest.mark.parametrize("behaviour", sorted(CATALOGUE))
def test_byzantine_catalogue(behaviour: str, sim_seeds: list[int],
                             request: pytest.FixtureRequest) -> None:
    """One Byzantine member of 5 (safety bound 2) plus a lossy start: every invariant holds;
    equivocating behaviours are caught and proven."""
    sims = campaign(pick(request, sim_seeds, DEFAULT_SEEDS), catalogue_config(behaviour))
    equivocates = behaviour in {"equivocating-leader", "double-notarize", "double-finalize",
                                "nullify-and-finalize"}
    for sim in sims:
        honest_evidence = {k for x in sim.nodes if not x.faulty for k in x.evidence}
        if equivocates:
            assert honest_evidence, f"seed={sim.seed}: no evidence against {behaviour}"
            assert {m for m, _, _ in honest_evidence} == {1}
        if behaviour == "bad-root":  # refused by its voters, who never diverge (§7)
            assert set(sim.stats.wrong_roots) == {1}, f"seed={sim.seed}: {sim.stats}"


@pytest.mark.parametrize("name", list(AT_THE_BOUND))
def test_two_byzantine_members_at_the_safety_bound(name: str, sim_seeds: list[int],
                                                   request: pytest.FixtureRequest) -> None:
    """n=5 tolerates 2 Byzantine for safety (not liveness): agreement must still hold."""
    campaign(pick(request, sim_seeds, DEFAULT_SEEDS), at_the_bound_config(AT_THE_BOUND[name]))


def test_catch_up_from_a_lying_fetch_server(sim_seeds: list[int],
                                            request: pytest.FixtureRequest) -> None:
    """Members that fetch on their return also ask the liar; its answers are refused."""
    sims = campaign(pick(request, sim_seeds, LIAR_DEFAULT_SEEDS), catch_up_from_liar)
    refused = [r for sim in sims for r in sim.stats.refused_wire if r.startswith("fetched:")]
    assert refused, "no fetch reached the lying server"


def test_garbage_is_refused_with_named_reasons() -> None:
    sim = run(SimConfig(seed=3, n=4, byzantine=((2, "garbage"),), target_new_blocks=40))
    reasons = " | ".join([*sim.stats.refused_wire, *sim.stats.refused_core])
    for expected in ("BadSignature: notarize vote of member 2", "OversizeError",
                     "TrailingBytesError", "WrongCommittee: message for committee",
                     "MalformedMessage: vote: expected an 8-item array",
                     "BadSignature: notarize vote of member 3",  # impersonation
                     "more than 64 views ahead",
                     "certificate signers are not distinct"):  # duplicate-signer
        assert expected in reasons, (expected, reasons)
    assert len(GarbageSender.KINDS) == 9


def test_twins_same_key_on_both_sides_of_a_partition(sim_seeds: list[int],
                                                     request: pytest.FixtureRequest) -> None:
    """Member 1 runs twice (node 4 is its twin); each copy talks to one side until t=2s."""
    campaign(pick(request, sim_seeds, DEFAULT_SEEDS), twins_partition_config)


def test_swarm(sim_seeds: list[int], request: pytest.FixtureRequest) -> None:
    """Random committee sizes, faults and attackers (never beyond the safety bound)."""
    campaign(pick(request, sim_seeds, SWARM_DEFAULT_SEEDS), swarm_config)


def test_same_seed_replays_exactly() -> None:
    a, b = run(swarm_config(5)), run(swarm_config(5))
    assert a.trace_digest == b.trace_digest
    assert a.stats == b.stats
    assert run(swarm_config(6)).trace_digest != a.trace_digest


# ---- the invariant checkers themselves catch violations ----

def test_liveness_failure_names_the_seed() -> None:
    with pytest.raises(SimulationFailure, match=r"^seed=7 .*liveness: nodes \[0, 1, 2, 3\] "
                                                r".*replay: pytest --sim-seed 7"):
        run(SimConfig(seed=7, n=4, router=lambda *_: False))


def test_agreement_violation_detected() -> None:
    sim = Simulation(SimConfig(seed=1, n=4))
    sim.oracle.finalized_refusal = lambda block, cert: None  # type: ignore[method-assign]
    g = Block(0, 0, 0, b"\x00" * 32, 0, (), 0, ZERO_DIGEST)
    a = Block(0, 1, 1, g.digest, 1, (b"a",), 0, ZERO_DIGEST)
    b = Block(0, 1, 1, g.digest, 1, (b"b",), 0, ZERO_DIGEST)
    fake = Certificate(VoteKind.FINALIZE, 0, 1, a.digest, ())
    sim._on_finalized(sim.nodes[0], Finalized(a, fake))
    with pytest.raises(SimulationFailure, match=r"agreement: height 1 finalised as"):
        sim._on_finalized(sim.nodes[1], Finalized(b, fake))


def test_honest_equivocation_detected() -> None:
    sim = Simulation(SimConfig(seed=1, n=4))
    key = sim.keys[2]
    sim._check_honest_signature(sim.nodes[2], Vote.sign(key, sim.committee, 2, VoteKind.FINALIZE,
                                                        9, b"\x01" * 32))
    with pytest.raises(SimulationFailure,
                       match=r"honest member 2 signed conflicting FINALIZE/NULLIFY in view 9"):
        sim._check_honest_signature(sim.nodes[2], Vote.sign(key, sim.committee, 2,
                                                            VoteKind.NULLIFY, 9, ZERO_DIGEST))


def test_missed_evidence_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Core, "_report", lambda self, ev: None)
    with pytest.raises(SimulationFailure, match=r"saw conflicting-notarize by member 1 .* but "
                                                "produced no evidence"):
        run(SimConfig(seed=1, n=4, byzantine=((1, "double-notarize"),)))


def test_guard_is_persisted_before_every_own_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """Action order contract: a PersistSignerGuard precedes every message carrying a new
    signature of the member (checked over a faulty run with torn crashes and restarts)."""
    from coalitiond.consensus.events import Broadcast, PersistSignerGuard, Send
    from coalitiond.consensus.messages import Proposal
    from coalitiond.consensus.statements import SignedKind

    durable: dict[int, set[tuple[int, SignedKind, bytes]]] = {}
    original = Core.step
    checked = 0

    def step(self: Core, event: object) -> list[object]:
        nonlocal checked
        persisted = durable.setdefault(id(self), {(v, k, d) for (v, k), d in self._guard.items()})
        actions = original(self, event)  # type: ignore[arg-type]
        for a in actions:
            if isinstance(a, PersistSignerGuard):
                persisted.add((a.view, a.kind, a.digest))
            elif isinstance(a, Broadcast | Send):
                m = a.message
                stmt = None
                if isinstance(m, Vote) and m.signer == self.me:
                    stmt = (m.view, SignedKind.of_vote(m.kind), m.digest)
                elif isinstance(m, Proposal) and m.block.proposer == self.me:
                    stmt = (m.block.view, SignedKind.PROPOSE, m.block.digest)
                if stmt is not None:
                    checked += 1
                    assert stmt in persisted, f"{stmt} sent before it was persisted"
        return actions

    monkeypatch.setattr(Core, "step", step)
    run(SimConfig(seed=2, n=4, network=NetworkConfig(drop=0.1), gst_ms=1500,
                  crashes=(Crash(1, 300, 700), Crash(2, 900, 1400))))
    assert checked > 50
