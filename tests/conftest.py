"""Shared test configuration.

`--sim-seeds N` sets how many seeds the simulator campaigns run (default: a short run that
keeps CI under its budget). Randomised tests print their seed; replay with `--sim-seed S`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = REPO.parent / "shared" / "testdata"
TESTDATA = Path(__file__).resolve().parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sim-seeds", type=int, default=None,
                     help="number of simulator seeds per campaign (default: short run)")
    parser.addoption("--sim-seed", type=int, default=None,
                     help="replay exactly one simulator seed")


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> list[int]:
    """Seeds for a simulator campaign: one replayed seed, N seeds, or the short default."""
    one = request.config.getoption("--sim-seed")
    if one is not None:
        return [one]
    n = request.config.getoption("--sim-seeds")
    return list(range(n if n is not None else 20))
