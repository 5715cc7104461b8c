"""Runs the exhaustive model check of the Simplex voting rules (tests/model_simplex.py).

Default (CI): n = 4, views 1..2 for every placement of the Byzantine member, views 1..3 for
one placement, and every deliberately broken rule set, which must yield a counterexample.
`COALITIOND_MODEL_BOUND=3` checks views 1..3 for every placement and n = 5 (about five
minutes on one core); higher bounds are allowed but grow quickly. State counts are printed.
"""

from __future__ import annotations

import os

import pytest
from model_simplex import (
    MUTATIONS,
    RELAXATIONS,
    Model,
    ModelConfig,
    Result,
    quorum_for,
)
from model_simplex import default_fault_bound as model_fault_bound

from coalitiond.primitives.committee import CommitteeSpec, default_fault_bound, quorum_size

BOUND = int(os.environ.get("COALITIOND_MODEL_BOUND", "2"))
#: The bound the mutation runs use: the smallest that exhibits each known counterexample, so
#: they stay fast; `COALITIOND_MODEL_BOUND` raises it too.
MUTATION_VIEWS = max(2, min(BOUND, 3))


def _report(capsys: pytest.CaptureFixture[str], result: Result) -> None:
    """State counts go to the terminal even when output is captured."""
    with capsys.disabled():
        print("\n" + result.summary())
        if result.violation is not None:
            for step in result.violation.trace:
                print("    ", step)
            print("    =>", result.violation.detail)


def test_model_quorum_dial_matches_committee() -> None:
    # The model re-derives the dial on purpose; both must agree for every committee size we
    # support, and the dial must give two quorums an honest member in common.
    for n in range(1, 16):
        assert model_fault_bound(n) == default_fault_bound(n)
        for f_s in range(0, n):
            q = quorum_for(n, f_s)
            assert q == quorum_size(n, f_s)
            assert 2 * q - n >= f_s + 1
            assert 2 * (q - 1) - n < f_s + 1  # one less and the overlap argument fails
    keys = tuple(bytes([i]) * 32 for i in range(4))
    spec = CommitteeSpec("net", "feed", "f", keys, default_fault_bound(4))
    cfg = ModelConfig(n=4)
    assert (spec.quorum, spec.safety_bound) == (cfg.quorum, cfg.f_s)
    assert [spec.leader(v) for v in range(1, 9)] == [cfg.leader(v) for v in range(1, 9)]


@pytest.mark.parametrize("byzantine", [0, 1, 2, 3])
def test_model_rules_safe_for_every_byzantine_placement(
        capsys: pytest.CaptureFixture[str], byzantine: int) -> None:
    # Leaders of views 1, 2, 3 are members 1, 2, 3: these placements cover a Byzantine leader
    # of each view and a Byzantine member that leads none.
    result = Model(ModelConfig(n=4, views=BOUND, byzantine=frozenset({byzantine}))).explore()
    _report(capsys, result)
    assert result.complete
    assert result.violation is None


@pytest.mark.skipif(BOUND >= 3, reason="covered by the bound-3 placement runs")
def test_model_rules_safe_three_views(capsys: pytest.CaptureFixture[str]) -> None:
    # Byzantine member 0 leads no view in 1..3, so three honest leaders chain blocks across
    # nullified views: the deepest parent-rule reasoning that fits the default budget.
    result = Model(ModelConfig(n=4, views=3, byzantine=frozenset({0}))).explore()
    _report(capsys, result)
    assert result.complete
    assert result.violation is None


@pytest.mark.skipif(BOUND < 3, reason="set COALITIOND_MODEL_BOUND=3 for n = 5")
@pytest.mark.parametrize("byzantine", [(1, 2), (2, 3), (3, 4), (0, 4)])
def test_model_rules_safe_n5(capsys: pytest.CaptureFixture[str],
                             byzantine: tuple[int, int]) -> None:
    result = Model(ModelConfig(n=5, views=2, byzantine=frozenset(byzantine))).explore()
    _report(capsys, result)
    assert result.complete
    assert result.violation is None


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_model_finds_fork_when_rules_are_broken(capsys: pytest.CaptureFixture[str],
                                                mutation: str) -> None:
    # Only agreement is checked here (the double-sign check would trivially flag the rule
    # that was relaxed): each broken rule set must lead to two conflicting finalised blocks.
    model = Model(ModelConfig(n=4, views=MUTATION_VIEWS, mutation=mutation))
    result = model.explore(double_sign=False, invariants=frozenset({"agreement"}))
    _report(capsys, result)
    assert result.violation is not None, f"mutation {mutation!r} went undetected"
    assert result.violation.invariant == "agreement"
    assert result.violation.detail.startswith("conflicting finalised blocks")
    assert result.violation.trace[0] == "start"


def test_model_finalize_after_nullify_trace_is_the_expected_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The counterexample must use the broken rule: some member nullifies a view and later
    # finalises a block of that same view.
    model = Model(ModelConfig(n=4, views=2, mutation="finalize-after-nullify"))
    result = model.explore(double_sign=False, invariants=frozenset({"agreement"}))
    _report(capsys, result)
    assert result.violation is not None
    steps = result.violation.trace
    nullified = {(s.split()[1], s.split()[-1]) for s in steps if "nullifies view" in s}
    finalised = {(s.split()[1], s.split()[4]) for s in steps if "finalizes" in s}
    assert nullified & finalised, steps


def test_model_double_sign_and_unique_notarization_checks_can_fail(
        capsys: pytest.CaptureFixture[str]) -> None:
    twice = Model(ModelConfig(n=4, views=1, mutation="notarize-every-proposal")).explore()
    _report(capsys, twice)
    assert twice.violation is not None
    assert twice.violation.invariant == "no-honest-double-sign"
    assert "signed two notarize votes in view 1" in twice.violation.detail
    small_q = Model(ModelConfig(n=4, views=1, mutation="quorum-minus-one")).explore()
    _report(capsys, small_q)
    assert small_q.violation is not None
    assert small_q.violation.invariant == "unique-notarization"


@pytest.mark.parametrize("relaxation", sorted(RELAXATIONS))
def test_model_relaxation_stays_safe(capsys: pytest.CaptureFixture[str],
                                     relaxation: str) -> None:
    # Documents which clauses of protocol.md are not needed for safety (they serve liveness
    # or tidiness): relaxing them must keep every reachable state safe.
    result = Model(ModelConfig(n=4, views=BOUND, mutation=relaxation)).explore()
    _report(capsys, result)
    assert result.complete
    assert result.violation is None


@pytest.mark.parametrize("mutation", [None, "skip-nullification-check", "quorum-minus-one"])
def test_model_reduction_keeps_verdicts(capsys: pytest.CaptureFixture[str],
                                        mutation: str | None) -> None:
    # The plain interleaving semantics (no free-step reduction) must reach the same verdict;
    # Byzantine member 0 (leads no view) keeps the unreduced state space small enough for CI.
    cfg = ModelConfig(n=4, views=2, byzantine=frozenset({0}), mutation=mutation)
    plain = Model(cfg, reduce=False).explore(double_sign=False,
                                             invariants=frozenset({"agreement"}))
    reduced = Model(cfg).explore(double_sign=False, invariants=frozenset({"agreement"}))
    _report(capsys, plain)
    assert plain.complete and reduced.complete
    assert (plain.violation is None) == (reduced.violation is None) == (mutation is None)
    assert plain.states >= reduced.states


def test_model_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown mutation 'nope'"):
        Model(ModelConfig(mutation="nope"))
    with pytest.raises(ValueError, match="Byzantine members alone would form a quorum"):
        Model(ModelConfig(n=4, byzantine=frozenset({0, 1, 2})))
