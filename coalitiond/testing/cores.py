"""Driving one real consensus core by hand in tests (no simulator)."""

from __future__ import annotations

from collections.abc import Callable

from ..consensus.events import (
    Action,
    BlockValidated,
    Event,
    Start,
    TimerFired,
    TimerKind,
    ValidateBlock,
)
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


class AnsweringCore(Core):
    """A core stepped as the shell steps it (node/voter.py): every `ValidateBlock` it emits
    is answered at once with `BlockValidated` (valid unless `refuses(commands)`), and the
    actions of that answer follow in the same list. For tests of everything but validation."""

    refuses: Callable[[tuple[bytes, ...]], bool] = staticmethod(lambda commands: False)

    def step(self, event: Event) -> list[Action]:
        out: list[Action] = []
        pending: list[Event] = [event]
        while pending:
            actions = super().step(pending.pop(0))
            out.extend(actions)
            pending.extend(BlockValidated(a.view, a.digest, not self.refuses(a.commands))
                           for a in actions if isinstance(a, ValidateBlock))
        return out
