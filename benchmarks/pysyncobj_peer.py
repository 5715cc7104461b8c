"""One PySyncObj (Raft) node with an in-process closed-loop load, for `bench_committee`.

The peer a Python user would otherwise pick for a replicated log. Each node process runs
`clients` closed-loop clients, each keeping `window` commands of `size` bytes outstanding;
a command's latency is from the call to the callback that reports it applied. Results go
to `--out` as JSON. Run by `benchmarks/bench_committee.py`; not a test double.

`--mode` picks the configuration (docs/performance.md):

* `stock`: PySyncObj's defaults (100 ms append-entries timer, 50 ms tick) with a journal
  file that is never flushed (mmap writes left to the kernel).
* `tuned`: `appendEntriesPeriod` and `autoTickPeriod` 5 ms, no log compaction, no journal
  (the log lives in memory): the configuration someone chasing latency would deploy.
* `tuned-flushed`: `tuned` with a journal file that is durable before it is relied on, so
  durable is compared with durable. PySyncObj 0.3.17 has no option for it (`FileJournal`
  writes through an mmap and only `msync`s when destroyed), so two hooks here call its
  `flush()` (msync, MS_SYNC): a follower before it acknowledges appended entries, a leader
  after adding a tick's commands and before the next tick counts its own entries toward a
  commit. One flush per acknowledgement or tick, not per entry: the cheapest durable Raft
  this library can be made into.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated


class ReplicatedLog(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, others: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, others, conf)
        self.entries = 0

    @replicated  # type: ignore[misc]
    def append(self, command: bytes) -> int:
        self.entries += 1
        return self.entries


MODES = ("stock", "tuned", "tuned-flushed")
#: The tuned timers: how often the leader sends append-entries and the node ticks, s.
TUNED_PERIOD_S = 0.005
#: "No log compaction" within a benchmark run.
NEVER = 10**9


def configuration(mode: str, journal: str) -> SyncObjConf:
    common: dict[str, Any] = {"appendEntriesUseBatch": True, "commandsQueueSize": 100_000,
                              "dynamicMembershipChange": False}
    if mode == "stock":
        return SyncObjConf(journalFile=journal, **common)
    tuned = dict(common, appendEntriesPeriod=TUNED_PERIOD_S, autoTickPeriod=TUNED_PERIOD_S,
                 logCompactionMinEntries=NEVER, logCompactionMinTime=NEVER)
    if mode == "tuned":
        return SyncObjConf(**tuned)
    _flush_journal_before_use()
    return SyncObjConf(journalFile=journal, **tuned)


def _flush_journal_before_use() -> None:
    """Make PySyncObj's file journal durable before a follower acknowledges entries and
    before a leader's next tick counts its own (see the module docstring)."""
    send_next = SyncObj._SyncObj__sendNextNodeIdx
    check_commands = SyncObj._checkCommandsToApply

    def flushed_send_next(self: Any, node: Any, reset: bool = False, nextNodeIdx: Any = None,
                          success: bool = False) -> None:
        if success:
            self._SyncObj__raftLog.flush()
        send_next(self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)

    def flushed_check_commands(self: Any) -> None:
        check_commands(self)
        self._SyncObj__raftLog.flush()

    SyncObj._SyncObj__sendNextNodeIdx = flushed_send_next
    SyncObj._checkCommandsToApply = flushed_check_commands


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--self", dest="self_addr", required=True)
    p.add_argument("--others", default="")
    p.add_argument("--journal", required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=MODES, default="tuned")
    a = p.parse_args()

    conf = configuration(a.mode, a.journal)
    node = ReplicatedLog(a.self_addr, [o for o in a.others.split(",") if o], conf)
    while not node.isReady():
        time.sleep(0.05)  # benchmark process, not a test: waiting for the cluster to form

    latencies: list[float] = []
    lock = threading.Lock()
    measuring = threading.Event()
    stop = threading.Event()
    payload = os.urandom(a.size)

    def issue() -> None:
        started = time.perf_counter()

        def done(result: Any, error: Any) -> None:
            if measuring.is_set() and error == 0:  # FAIL_REASON.SUCCESS
                with lock:
                    latencies.append(time.perf_counter() - started)
            if not stop.is_set():
                issue()

        node.append(payload, callback=done)

    for _ in range(a.clients * a.window):
        issue()
    time.sleep(a.warmup)
    cpu0 = time.process_time()
    measuring.set()
    t0 = time.perf_counter()
    time.sleep(a.duration)
    measuring.clear()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stop.set()
    with lock:
        lat = sorted(latencies)
    result = {
        "commands": len(lat), "elapsed": elapsed, "cpu_s": cpu,
        "latencies": lat[:: max(1, len(lat) // 5000)],
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    with open(a.out, "w") as f:
        json.dump(result, f)
    time.sleep(0.5)
    node.destroy()


if __name__ == "__main__":
    main()
