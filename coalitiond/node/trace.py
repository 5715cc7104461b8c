"""A per-member trace of the consensus path, for the committee benchmark's critical-path table.

Off unless the environment variable `COALITIOND_TRACE` names a directory when the consensus
loop starts; then the member appends one line per milestone and per timed section to
`<dir>/member-<index>.trace` (docs/performance.md, "Critical path"). When off, every call
site costs one global load and a comparison with None.

Lines are tab-separated text:

* `E name view mono_ns`: a milestone of view `view` reached at `time.monotonic_ns()` (one
  clock for every process of the machine, so the members' traces merge on it).
* `C name cpu_ns wall_ns mono_ns views`: a timed section (CPU of the thread that ran it,
  wall time, when it ended) and the comma-separated views it worked for.

At most MAX_TRACE_LINES lines (about 60 bytes each) are written; later ones are dropped, so
a long run cannot fill the disk. The file is written through Python's buffer and flushed at
exit.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, TextIO, TypeVar

from ..consensus.events import Action, Finalized, PersistSignerGuard
from ..consensus.statements import SignedKind
from ..log.sqlite import BlockToAppend, Store
from ..log.sqlite import GuardRecord as StoreGuardRecord

#: Environment variable naming the directory traces are written to.
TRACE_ENV: Final = "COALITIOND_TRACE"
#: Lines one member writes at most (~60 bytes each: ~120 MB at most).
MAX_TRACE_LINES: Final = 2_000_000


class Tracer:
    def __init__(self, out: TextIO, limit: int = MAX_TRACE_LINES) -> None:
        self._out = out
        self._left = limit

    def event(self, name: str, view: int, at: int | None = None) -> None:
        """Milestone `name` of `view`, reached now (or at monotonic ns `at`)."""
        if self._left > 0:
            self._left -= 1
            self._out.write(f"E\t{name}\t{view}\t{time.monotonic_ns() if at is None else at}\n")

    def measured(self, name: str, cpu_ns: int, wall0: int, views: Iterable[int] = ()) -> None:
        """A section whose CPU was measured elsewhere (on a worker thread)."""
        if self._left > 0:
            self._left -= 1
            now = time.monotonic_ns()
            self._out.write(f"C\t{name}\t{cpu_ns}\t{now - wall0}\t{now}\t"
                            f"{','.join(map(str, views))}\n")

    def section(self, name: str, cpu0: int, wall0: int, views: Iterable[int] = ()) -> None:
        """Close a section begun at `cpu0 = time.thread_time_ns()`, `wall0 =
        time.monotonic_ns()` on this thread."""
        if self._left > 0:
            self._left -= 1
            now = time.monotonic_ns()
            self._out.write(f"C\t{name}\t{time.thread_time_ns() - cpu0}\t{now - wall0}\t{now}\t"
                            f"{','.join(map(str, views))}\n")

    def close(self) -> None:
        self._left = 0
        self._out.close()


#: The member's tracer, or None (the default: no tracing).
TRACER: Tracer | None = None


def start_from_environment(member: int) -> Tracer | None:
    """Open this member's trace file if TRACE_ENV is set (once per process)."""
    global TRACER
    directory = os.environ.get(TRACE_ENV)
    if not directory or TRACER is not None:
        return TRACER
    out = (Path(directory) / f"member-{member}.trace").open("w", encoding="ascii",
                                                              buffering=1 << 16)
    TRACER = Tracer(out)
    atexit.register(TRACER.close)
    return TRACER


def begin() -> tuple[int, int]:
    """(thread CPU ns, monotonic ns) now: the start of a section."""
    return time.thread_time_ns(), time.monotonic_ns()


# -- what the consensus loop traces (node/voter.py) --------------------------------------

_KIND_NAMES: Final = {SignedKind.PROPOSE: "propose", SignedKind.NOTARIZE: "notarize",
                      SignedKind.FINALIZE: "finalize", SignedKind.NULLIFY: "nullify"}


def trace_step(actions: Sequence[Action], began: tuple[int, int], view: int) -> None:
    """The core's step of a round: what it built (signed statements, finalised blocks)."""
    tracer = TRACER
    assert tracer is not None
    built = [(f"built:{_KIND_NAMES[a.kind]}", a.view) for a in actions
             if isinstance(a, PersistSignerGuard)]
    built += [("finalized", a.block.view) for a in actions if isinstance(a, Finalized)]
    kinds = {name.split(":")[-1] for name, _ in built}
    section = ("step:propose" if "propose" in kinds else
               "step:vote" if kinds & {"notarize", "finalize", "nullify"} else
               "step:finalized" if "finalized" in kinds else "step:collect")
    tracer.section(section, *began, sorted({v for _, v in built}) or (view,))
    for name, v in built:
        tracer.event(name, v)


_T = TypeVar("_T")
#: The last store call's (thread CPU ns, wall ns) inside the call, when tracing.
_last_store_call = (0, 0)


def store_call(fn: Callable[[Store], _T]) -> Callable[[Store], _T]:
    """`fn`, timed on whichever thread runs it when tracing (else `fn` itself)."""
    if TRACER is None:
        return fn

    def timed(s: Store) -> _T:
        global _last_store_call
        cpu0, wall0 = begin()
        try:
            return fn(s)
        finally:
            cpu1, wall1 = begin()
            _last_store_call = (cpu1 - cpu0, wall1 - wall0)
    return timed


def trace_durable(guard: Sequence[StoreGuardRecord], appended: Sequence[BlockToAppend],
                   began: tuple[int, int], journal: bool = False) -> None:
    """The round's store commit: its CPU and wall time inside the store call, and the wall
    time around it (a hand-off to the worker thread and waiting for it included); or the
    guard journal's write (on the loop)."""
    tracer = TRACER
    assert tracer is not None
    views = sorted({g.view for g in guard} | {i.block.view for i in appended})
    name = "append" if appended else "guard"
    if journal:
        tracer.section(name, *began, views)
        tracer.section(f"{name}:inside", *began, views)
    else:
        cpu_ns, wall_ns = _last_store_call
        tracer.measured(name, cpu_ns, began[1], views)
        tracer.measured(f"{name}:inside", 0, time.monotonic_ns() - wall_ns, views)
    for g in guard:
        tracer.event(f"guarded:{_KIND_NAMES[SignedKind(int(g.kind))]}", g.view)
    for item in appended:
        tracer.event("appended", item.block.view)


def trace_sent(guard: Sequence[StoreGuardRecord], began: tuple[int, int]) -> None:
    tracer = TRACER
    assert tracer is not None
    tracer.section("send", *began, sorted({g.view for g in guard}))
    for g in guard:
        tracer.event(f"sent:{_KIND_NAMES[SignedKind(int(g.kind))]}", g.view)
