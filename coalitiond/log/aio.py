"""Thin trio shell around the synchronous Store.

Every call runs on a worker thread behind a CapacityLimiter(1): exactly one store call at a
time, in call order per task, and the trio loop never blocks on SQLite or fsync. Calls are
not abandoned on cancellation (trio's default), so a write is never left half-observed: a
cancelled caller still waits for its transaction to commit or roll back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from ..consensus.types import Block, Certificate, Vote, VoteKind
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from .checkpoint import Checkpoint
from .sqlite import BlockToAppend, EventResult, EvidenceRecord, GuardRecord, SeenRecord, Store

T = TypeVar("T")

#: write_soon writes on the event loop only while its writes average at most this (a
#: commit with its fsync); slower, they go to the worker thread.
INLINE_WRITE_MAX_S: Final = 0.001
#: Weight of the newest write in that moving average.
WRITE_AVERAGE_WEIGHT: Final = 0.2


class AsyncStore:
    def __init__(self, store: Store, limiter: trio.CapacityLimiter) -> None:
        self.sync = store
        self._limiter = limiter
        #: Moving average of write_soon's writes (the thread's include the hand-off), s.
        self._write_seconds = 0.0

    @classmethod
    async def open(cls, path: Path | str, committee: CommitteeSpec | None = None, *,
                   signing_key: SigningKey | None = None, **kwargs: Any) -> AsyncStore:
        limiter = trio.CapacityLimiter(1)
        store = await trio.to_thread.run_sync(
            partial(Store.open, path, committee, signing_key=signing_key, **kwargs),
            limiter=limiter)
        return cls(store, limiter)

    async def run(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` on the store's worker thread (for reads not wrapped below)."""
        return await trio.to_thread.run_sync(fn, self.sync, limiter=self._limiter)

    async def write_soon(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` on the event loop itself when no other store call is running and
        recent inline writes were fast; else on the worker thread as `run` does.

        For short writes on a latency-critical path (a guard record before a vote goes
        out): a worker-thread hand-off costs two context switches, more than a one-row
        commit whose fsync takes a fraction of a millisecond. When fsyncs are slow (a busy
        or throttled disk: several milliseconds each) the loop must not stand still through
        them: the write goes to the worker thread and the loop keeps reading, decoding and
        verifying meanwhile. Either way the call cannot be abandoned half-way, as with
        `run`; holding the limiter keeps it the only store call in progress."""
        if self._write_seconds > INLINE_WRITE_MAX_S:
            # Timed too (hand-off included, a fraction of a millisecond): once the disk is
            # fast again the average falls and writes come back to the loop.
            started = time.perf_counter()
            try:
                return await self.run(fn)
            finally:
                self._note_write(time.perf_counter() - started)
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            return await self.run(fn)
        started = time.perf_counter()
        try:
            return fn(self.sync)
        finally:
            self._limiter.release()
            self._note_write(time.perf_counter() - started)

    def _note_write(self, seconds: float) -> None:
        self._write_seconds += (seconds - self._write_seconds) * WRITE_AVERAGE_WEIGHT

    async def append_block(self, block: Block, finalization: Certificate,
                           votes: Sequence[Vote] = (), *,
                           notarization: Certificate | None = None,
                           verify_signatures: bool = True) -> Checkpoint:
        return await self.run(lambda s: s.append_block(
            block, finalization, votes, notarization=notarization,
            verify_signatures=verify_signatures))

    async def append_blocks(self, items: Sequence[BlockToAppend], *,
                            verify_signatures: bool = True,
                            guard: Sequence[GuardRecord] = (),
                            late_votes: Sequence[tuple[int, Vote]] = (),
                            seen: Sequence[SeenRecord] = (),
                            seen_floor: int | None = None) -> list[Checkpoint]:
        return await self.run(lambda s: s.append_blocks(
            items, verify_signatures=verify_signatures, guard=guard, late_votes=late_votes,
            seen=seen, seen_floor=seen_floor))

    async def guard(self, epoch: int, view: int, kind: VoteKind, digest: bytes) -> None:
        await self.run(lambda s: s.guard(epoch, view, kind, digest))

    async def record_event(self, *, guard: Sequence[GuardRecord] = (),
                           seen: Sequence[SeenRecord] = (),
                           evidence: Sequence[EvidenceRecord] = ()) -> EventResult:
        return await self.run(lambda s: s.record_event(guard=guard, seen=seen,
                                                       evidence=evidence))

    async def highest_signed_view(self, epoch: int) -> int | None:
        return await self.run(lambda s: s.highest_signed_view(epoch))

    async def close(self) -> None:
        await self.run(lambda s: s.close())
