"""Simulator campaigns: the invariants of docs/protocol.md §10 under faults and attacks.

Every test takes its seeds from the `sim_seeds` fixture: the default run is short (a few seeds
per scenario), `pytest --sim-seeds N` runs N seeds per scenario, `pytest --sim-seed S` replays
one. A failure's message starts with `seed=S` and says how to replay it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coalitiond.consensus.events import Finalized
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
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_network_and_crash_scenarios(name: str, sim_seeds: list[int],
                                     request: pytest.FixtureRequest) -> None:
    sims = campaign(pick(request, sim_seeds, DEFAULT_SEEDS), SCENARIOS[name])
    assert all(sim.stats.max_height > 0 for sim in sims)


@pytest.mark.parametrize("behaviour", sorted(CATALOGUE))
def test_byzantine_catalogue(behaviour: str, sim_seeds: list[int],
                             request: pytest.FixtureRequest) -> None:
    """One Byzantine member of 5 (safety bound 2) plus a lossy start: every invariant holds;
    equivocating behaviours are caught and proven."""
    sims = campaign(pick(request, sim_seeds, DEFAULT_SEEDS), lambda s: SimConfig(
        seed=s, n=5, byzantine=((1, behaviour),), gst_ms=1000,
        network=NetworkConfig(drop=0.05), target_new_blocks=8))
    equivocates = behaviour in {"equivocating-leader", "double-notarize", "double-finalize",
                                "nullify-and-finalize"}
    for sim in sims:
        honest_evidence = {k for x in sim.nodes if not x.faulty for k in x.evidence}
        if equivocates:
            assert honest_evidence, f"seed={sim.seed}: no evidence against {behaviour}"
            assert {m for m, _, _ in honest_evidence} == {1}
        if behaviour == "bad-root":  # refused by its voters, who never diverge (§7)
            assert set(sim.stats.wrong_roots) == {1}, f"seed={sim.seed}: {sim.stats}"


def test_two_byzantine_members_at_the_safety_bound(sim_seeds: list[int],
                                                   request: pytest.FixtureRequest) -> None:
    """n=5 tolerates 2 Byzantine for safety (not liveness): agreement must still hold."""
    campaign(pick(request, sim_seeds, DEFAULT_SEEDS), lambda s: SimConfig(
        seed=s, n=5, byzantine=((0, "equivocating-leader"), (3, "double-finalize")),
        network=NetworkConfig(drop=0.1, duplicate=0.1), gst_ms=2000, max_time_ms=20_000))


def test_garbage_is_refused_with_named_reasons() -> None:
    sim = run(SimConfig(seed=3, n=4, byzantine=((2, "garbage"),), target_new_blocks=40))
    reasons = " | ".join([*sim.stats.refused_wire, *sim.stats.refused_core])
    for expected in ("BadSignature: notarize vote of member 2", "OversizeError",
                     "TrailingBytesError", "WrongCommittee: message for committee",
                     "MalformedMessage: vote: expected an 8-item array",
                     "BadSignature: notarize vote of member 3",  # impersonation
                     "more than 64 views ahead"):
        assert expected in reasons, (expected, reasons)
    assert len(GarbageSender.KINDS) == 8


def test_twins_same_key_on_both_sides_of_a_partition(sim_seeds: list[int],
                                                     request: pytest.FixtureRequest) -> None:
    """Member 1 runs twice (node 4 is its twin); each copy talks to one side until t=2s."""
    def router(src: int, dst: int, msg: object, now: int) -> bool:
        side = {0: "A", 4: "A"}
        return now >= 2000 or side.get(src, "B") == side.get(dst, "B")

    campaign(pick(request, sim_seeds, DEFAULT_SEEDS),
             lambda s: SimConfig(seed=s, n=4, twins=(1,), router=router))


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
