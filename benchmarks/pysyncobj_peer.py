"""One PySyncObj (Raft) node with an in-process closed-loop load, for `bench_committee`.

The peer a Python user would otherwise pick for a replicated log. Each node process runs
`clients` closed-loop clients, each keeping `window` commands of `size` bytes outstanding;
a command's latency is from the call to the callback that reports it applied. Results go
to `--out` as JSON. Run by `benchmarks/bench_committee.py`; not a test double.
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
    a = p.parse_args()

    conf = SyncObjConf(journalFile=a.journal, appendEntriesUseBatch=True, commandsQueueSize=100_000,
                       dynamicMembershipChange=False)
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
