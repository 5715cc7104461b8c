"""Consensus timers on trio's clock.

The sans-IO core asks for timers with `SetTimer(kind, view, delay_ms)` and learns of them as
`TimerFired(kind, view)` events; it ignores timers of views it has left, so nothing here
cancels. One task owns the heap; `set` only pushes and wakes it.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..consensus.core import TimerFired, TimerKind
from ..errors import LocalError

#: The core arms a handful of timers per view; anything near this means a bug upstream.
MAX_TIMERS: Final = 4096


class TimerService:
    def __init__(self, fire: Callable[[TimerFired], Awaitable[None]]) -> None:
        self._heap: list[tuple[float, int, TimerKind, int]] = []
        self._seq = 0
        self._fire = fire
        self._wake = trio.Event()

    def set(self, kind: TimerKind, view: int, delay_ms: int) -> None:
        if len(self._heap) >= MAX_TIMERS:
            raise LocalError(f"more than {MAX_TIMERS} consensus timers pending")
        self._seq += 1
        heapq.heappush(self._heap, (trio.current_time() + delay_ms / 1000, self._seq, kind, view))
        self._wake.set()

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        while True:
            if not self._heap:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            deadline, _, kind, view = self._heap[0]
            with trio.move_on_at(deadline):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = trio.Event()  # an earlier timer may have arrived: look again
                continue
            heapq.heappop(self._heap)
            await self._fire(TimerFired(kind, view))
