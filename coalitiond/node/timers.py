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

from ..consensus.events import TimerFired, TimerKind

#: The core arms a handful of timers per view; beyond this the oldest views' are dropped.
MAX_TIMERS: Final = 4096


class TimerService:
    def __init__(self, fire: Callable[[TimerFired], Awaitable[None]]) -> None:
        self._heap: list[tuple[float, int, TimerKind, int]] = []
        self._seq = 0
        self._fire = fire
        self._wake = trio.Event()
        self._pending: set[tuple[TimerKind, int]] = set()

    def set(self, kind: TimerKind, view: int, delay_ms: int) -> None:
        """Arm a timer; one per (kind, view) is pending at a time (a second request for the
        same timer before the first fired adds nothing: the core treats both alike)."""
        if (kind, view) in self._pending:
            return
        if len(self._heap) >= MAX_TIMERS:
            # Far behind: the oldest views' timers are the ones the core ignores anyway.
            self._drop_oldest_views()
        self._seq += 1
        heapq.heappush(self._heap, (trio.current_time() + delay_ms / 1000, self._seq, kind, view))
        self._pending.add((kind, view))
        self._wake.set()

    def _drop_oldest_views(self) -> None:
        keep = sorted(self._heap, key=lambda t: -t[3])[: MAX_TIMERS // 2]
        self._heap = keep
        heapq.heapify(self._heap)
        self._pending = {(k, v) for _, _, k, v in self._heap}

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
            self._pending.discard((kind, view))
            await self._fire(TimerFired(kind, view))
