"""Driving one real consensus core by hand in tests (no simulator)."""

from __future__ import annotations

from ..consensus.events import Action, Start, TimerFired, TimerKind
from ..consensus.limits import RECALL_ROUNDS
from ..consensus.voter import Core


def end_recall(core: Core) -> list[Action]:
    """Fire every round of the recall timer: the start-up recall (docs/protocol.md §8) ends
    with the answers it has."""
    return [a for r in range(1, RECALL_ROUNDS + 1)
            for a in core.step(TimerFired(TimerKind.RECALL, r))]


def started(core: Core) -> list[Action]:
    """Start `core` and end its recall on the timer: the actions of all those steps."""
    return [*core.step(Start()), *end_recall(core)]
