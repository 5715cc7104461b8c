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
from collections.abc import Iterable
from pathlib import Path
from typing import Final, TextIO

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
