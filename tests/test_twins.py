"""Twins campaigns for n in {4, 5, 7} (tests/twins.py has the scenarios and what they assert).

Default: a short campaign per (n, within/beyond the bound) and every split of two views for
n = 4. `--sim-seeds N` runs N seeds per campaign; `--sim-seed S` replays one;
`COALITIOND_TWINS_EXHAUSTIVE=V` enumerates V views for every twin and pair. Every scenario
prints its seed and partitions (docs/verification.md §2).
"""

from __future__ import annotations

import os

import pytest
from twins import (
    Outcome,
    Scenario,
    Transcript,
    enumerate_scenarios,
    forking_scenario,
    make_router,
    run_scenario,
    sample_scenario,
)

from coalitiond.consensus.evidence import InvalidEvidence
from coalitiond.consensus.messages import Nullification
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import ZERO_DIGEST, Certificate, VoteKind
from coalitiond.testing.simulator import SimulationFailure, make_committee

#: Seeds per campaign in the default run (six campaigns; about a second each on one core).
DEFAULT_SEEDS = 6
#: Exhaustive Twins for n = 4: `COALITIOND_TWINS_EXHAUSTIVE=V` enumerates every split of V
#: views for every twinned member (4 · 8^V runs) and every twinned pair (6 · 8^V runs); the
#: default is member 1, and the pair (1, 2), over 2 views (64 runs each).
EXHAUSTIVE_VIEWS = int(os.environ.get("COALITIOND_TWINS_EXHAUSTIVE", "2"))
_ALL = "COALITIOND_TWINS_EXHAUSTIVE" in os.environ
EXHAUSTIVE_TWINS = [0, 1, 2, 3] if _ALL else [1]
EXHAUSTIVE_PAIRS = [(a, b) for a in range(4) for b in range(a + 1, 4)] if _ALL else [(1, 2)]


@pytest.fixture
def twins_seeds(request: pytest.FixtureRequest, sim_seeds: list[int]) -> list[int]:
    """conftest's `sim_seeds`, but a shorter default: six campaigns share the CI budget."""
    explicit = any(request.config.getoption(o) is not None
                   for o in ("--sim-seed", "--sim-seeds"))
    return sim_seeds if explicit else sim_seeds[:DEFAULT_SEEDS]


def _campaign(capsys: pytest.CaptureFixture[str], n: int, beyond: bool,
              seeds: list[int]) -> list[Outcome]:
    outcomes = []
    for seed in seeds:
        scenario = sample_scenario(seed, n, beyond)
        print(f"twins scenario {scenario.describe()}")
        try:
            outcome = run_scenario(scenario)
        except (SimulationFailure, AssertionError) as exc:
            raise AssertionError(f"{exc}\n  scenario {scenario.describe()}\n  replay: pytest "
                                 f"tests/test_twins.py --sim-seed {seed}") from None
        print(outcome.summary())
        outcomes.append(outcome)
    forks = sum(o.forked for o in outcomes)
    stalls = sum(o.stalled for o in outcomes)
    with capsys.disabled():
        print(f"\n[twins] n={n} {'beyond' if beyond else 'within'} the bound: "
              f"{len(outcomes)} scenarios (seeds {seeds[0]}..{seeds[-1]}), {forks} forked, "
              f"{stalls} stalled, {sum(o.events for o in outcomes)} events")
    return outcomes


@pytest.mark.parametrize("n", [4, 5, 7])
def test_twins_within_bound_safe_and_live(capsys: pytest.CaptureFixture[str], n: int,
                                          twins_seeds: list[int]) -> None:
    # run_scenario raises unless every step kept the simulator's invariants and every honest
    # node finalised blocks within the stated bound after the heal.
    outcomes = _campaign(capsys, n, False, twins_seeds)
    for o in outcomes:
        assert not o.forked and not o.stalled, o.summary()
        assert set(o.core_culprits) <= set(o.scenario.twins), o.summary()
    if len(outcomes) >= DEFAULT_SEEDS:
        # Not vacuous: the partitions did make twins equivocate, and honest cores caught it.
        assert any(o.core_culprits for o in outcomes)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_twins_beyond_bound_forks_are_accountable(capsys: pytest.CaptureFixture[str], n: int,
                                                  twins_seeds: list[int]) -> None:
    # run_scenario asserts, for every fork, evidence naming >= 2q - n members, none honest.
    outcomes = _campaign(capsys, n, True, twins_seeds)
    committee, _ = make_committee(n)
    for o in outcomes:
        if o.forked:
            assert len(o.culprits) >= 2 * committee.quorum - n, o.summary()
            assert set(o.culprits) <= set(o.scenario.twins), o.summary()


@pytest.mark.parametrize("n", [4, 5, 7])
def test_twins_quorum_split_forks_with_evidence(capsys: pytest.CaptureFixture[str],
                                                n: int) -> None:
    # f_s + 1 twins, each side holding exactly q distinct members: a fork is certain, so the
    # accountability check above is exercised on every run, not only when a seed is lucky.
    scenario = forking_scenario(n)
    outcome = run_scenario(scenario)
    with capsys.disabled():
        print("\n" + outcome.summary())
    committee, _ = make_committee(n)
    assert outcome.forked, outcome.summary()
    assert outcome.failure is not None and "agreement:" in outcome.failure
    assert len(outcome.culprits) >= 2 * committee.quorum - n
    assert set(outcome.culprits) == set(scenario.twins)


@pytest.mark.parametrize("twin", EXHAUSTIVE_TWINS)
def test_twins_exhaustive_n4_one_twin(capsys: pytest.CaptureFixture[str], twin: int) -> None:
    # Every 2-way split of the 5 nodes per adversarial view (the twin's copies apart). Member 1
    # leads view 1 and member 2 view 2, so the default covers a twinned leader equivocating in
    # every possible way during the prefix.
    scenarios = enumerate_scenarios(4, (twin,), EXHAUSTIVE_VIEWS)
    heights = []
    for scenario in scenarios:
        try:
            outcome = run_scenario(scenario)
        except (SimulationFailure, AssertionError) as exc:
            raise AssertionError(f"{exc}\n  scenario {scenario.describe()}") from None
        assert not outcome.forked and not outcome.stalled, outcome.summary()
        heights.append(outcome.max_height)
    with capsys.disabled():
        print(f"\n[twins] exhaustive n=4 twin={twin} views=1..{EXHAUSTIVE_VIEWS}: "
              f"{len(scenarios)} scenarios safe and live (heights {min(heights)}.."
              f"{max(heights)})")


@pytest.mark.parametrize("pair", EXHAUSTIVE_PAIRS)
def test_twins_exhaustive_n4_two_twins_accountable(capsys: pytest.CaptureFixture[str],
                                                   pair: tuple[int, int]) -> None:
    # Beyond the bound (2 twins, the bound is 1): every split, every fork accountable.
    scenarios = enumerate_scenarios(4, pair, EXHAUSTIVE_VIEWS)
    forks = 0
    for scenario in scenarios:
        try:
            outcome = run_scenario(scenario)
        except (SimulationFailure, AssertionError) as exc:
            raise AssertionError(f"{exc}\n  scenario {scenario.describe()}") from None
        if outcome.forked:
            forks += 1
            assert len(outcome.culprits) >= 2, outcome.summary()  # 2q - n = 2
    with capsys.disabled():
        print(f"\n[twins] exhaustive n=4 twins={list(pair)} views=1..{EXHAUSTIVE_VIEWS}: "
              f"{len(scenarios)} scenarios, {forks} forked, each with evidence against "
              f"both twins")
    assert forks > 0  # the enumeration reaches the quorum split


def test_twins_replay_is_deterministic() -> None:
    scenario = sample_scenario(3, 5, False)
    first = run_scenario(scenario)
    again = run_scenario(sample_scenario(3, 5, False))
    assert again.scenario == scenario
    assert first.trace_digest == again.trace_digest
    assert (first.max_height, first.events) == (again.max_height, again.events)


def test_twins_router_partitions_by_view_then_heals() -> None:
    a, b = frozenset({0, 1, 2}), frozenset({3, 4})
    scenario = Scenario(0, 4, (1,), ((a, b), (frozenset({0, 1, 2, 3, 4}),)), heal_ms=1000)
    router = make_router(scenario, [])
    committee, keys = make_committee(4)
    cert = Certificate(VoteKind.NULLIFY, 0, 1, ZERO_DIGEST, ((0, b"\x00" * 64),))
    view1, view2 = Nullification(cert), Nullification(
        Certificate(VoteKind.NULLIFY, 0, 2, ZERO_DIGEST, ((0, b"\x00" * 64),)))
    assert router(0, 2, view1, 10) and router(4, 3, view1, 10)
    assert not router(0, 3, view1, 10) and not router(4, 1, view1, 10)
    assert router(0, 3, view2, 10)  # view 2 is one group
    assert router(0, 3, view1, 1000)  # healed
    assert committee.n == len(keys) == 4


def test_twins_audit_refuses_a_forged_statement() -> None:
    committee, keys = make_committee(4)
    good = sign_statement(keys[2], committee, SignedKind.NOTARIZE, 5, b"\x01" * 32)
    forged = bytes(64)
    transcript = Transcript()
    transcript.add([(2, 5, SignedKind.NOTARIZE, b"\x01" * 32, good),
                    (2, 5, SignedKind.NOTARIZE, b"\x02" * 32, forged)])
    with pytest.raises(InvalidEvidence,
                       match=r"statement signature of member 2 does not verify "
                             r"\(notarize, view 5\)"):
        transcript.audit(committee)


def test_twins_audit_names_an_equivocator() -> None:
    committee, keys = make_committee(4)
    stmts = [(1, 7, SignedKind.NULLIFY, ZERO_DIGEST,
              sign_statement(keys[1], committee, SignedKind.NULLIFY, 7, ZERO_DIGEST)),
             (1, 7, SignedKind.FINALIZE, b"\x03" * 32,
              sign_statement(keys[1], committee, SignedKind.FINALIZE, 7, b"\x03" * 32)),
             (2, 7, SignedKind.NOTARIZE, b"\x03" * 32,
              sign_statement(keys[2], committee, SignedKind.NOTARIZE, 7, b"\x03" * 32))]
    transcript = Transcript()
    transcript.add(stmts)
    transcript.add(stmts)  # duplicates count once
    evidence = transcript.audit(committee)
    assert [(e.member, e.view, e.kind.value) for e in evidence] == [(1, 7, "nullify-finalize")]
