"""Committee benchmark: a real coalitiond committee on loopback vs a PySyncObj (Raft) cluster.

Same workload on both, for n = 4, 5, 7: `clients` closed-loop clients per member, each with
`window` commands of `size` bytes outstanding, for `duration` seconds after a warm-up.
coalitiond: one feed `publish` per signed envelope (the worst case for signatures), submitted
round-robin to members over Noise links, latency from submit to the finalised outcome.
PySyncObj: one replicated call per command, latency from the call to its applied callback.

Printed per n: finalised blocks/s, commands/s, p50/p99 latency, CPU seconds and peak RSS per
member, and coalitiond/PySyncObj ratios. Also an open-loop row (`--rate`): commands offered at
a fixed rate in envelopes of `--rate-per-envelope`, whatever the latency, so its p50 is the
latency at that load rather than Little's law of a closed loop. Usage: python -m benchmarks
committee [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from coalitiond.cli.devnet import generate_devnet
from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.node.client import CommitteeClient, load_client_config
from coalitiond.node.devnet import coalitiond_command, write_client_config
from coalitiond.primitives.errors import CoalitiondError
from coalitiond.primitives.keys import load_key_file
from coalitiond.primitives.logs import configure


def _free_base_port(span: int) -> int:
    import socket

    for base in range(20000, 60000, 997):
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS KiB) of a live process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    return cpu, peak


def conditions_line(commits: int = 100) -> str:
    """The machine's state right now: load average and the latency of a one-row SQLite
    commit (WAL, synchronous=FULL, as the members' stores) in the directory the members
    use. The committee's latency follows both (docs/performance.md), so every table says
    what they were."""
    import sqlite3

    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        conn = sqlite3.connect(f"{tmp}/probe.sqlite3", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (x BLOB)")
            took = []
            for _ in range(commits):
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t VALUES (?)", (os.urandom(100),))
                conn.execute("COMMIT")
                took.append(time.perf_counter() - started)
        finally:
            conn.close()
    took.sort()
    load = os.getloadavg()[0]
    return (f"conditions: load average {load:.1f}; SQLite commit (WAL, FULL) "
            f"p50 {_percentile(took, 50) * 1000:.2f} ms, p99 {_percentile(took, 99) * 1000:.2f} ms")


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


#: Open-loop submissions in flight at most; beyond it the generator counts a shed envelope
#: instead of piling up tasks (the row then shows the committee did not keep up).
MAX_OPEN_LOOP_OUTSTANDING = 4096


async def _coalitiond_load(dir: Path, n: int, clients: int, window: int, size: int,
                           warmup: float, duration: float, per_envelope: int = 1,
                           rate: float = 0.0) -> dict[str, Any]:
    config = load_client_config(write_client_config(dir))
    key = load_key_file(config.key_file)
    latencies: list[float] = []
    measuring = False
    done = 0
    shed = 0
    outstanding = 0
    async with CommitteeClient.open(config) as client:
        with trio.fail_after(60):
            await client.manager.wait_until(lambda: len(client.members()) == n)
        signer = EnvelopeSigner(key, client.committee.committee_id, time.time_ns() // 1000)
        payload = os.urandom(size // 2).hex()[:size]
        members = client.members()
        status0 = await client.status(members[0])

        async def one_client(c: int) -> None:
            nonlocal done
            k = 0
            while True:
                k += 1
                env = signer.sign([publish("bench", payload)] * per_envelope)
                started = time.perf_counter()
                try:
                    ack, outcome = await client.submit(env.raw, member=members[(c + k) % n])
                except CoalitiondError:
                    continue
                if measuring and ack.accepted and outcome is not None:
                    latencies.append(time.perf_counter() - started)
                    done += per_envelope

        async def one_submission(k: int) -> None:
            nonlocal done, outstanding
            env = signer.sign([publish("bench", payload)] * per_envelope)
            started = time.perf_counter()
            counted = measuring
            try:
                ack, outcome = await client.submit(env.raw, member=members[k % n])
            except CoalitiondError:
                return
            finally:
                outstanding -= 1
            if counted and measuring and ack.accepted and outcome is not None:
                latencies.append(time.perf_counter() - started)
                done += per_envelope

        async def offered_load(nursery: trio.Nursery) -> None:
            # Fixed arrival times (no coordinated omission): envelope k is due at k / rate.
            nonlocal shed, outstanding
            envelopes_per_s = rate / per_envelope
            start = trio.current_time()
            k = 0
            while True:
                await trio.sleep_until(start + k / envelopes_per_s)
                if outstanding >= MAX_OPEN_LOOP_OUTSTANDING:
                    shed += measuring
                else:
                    outstanding += 1
                    nursery.start_soon(one_submission, k)
                k += 1

        async with trio.open_nursery() as nursery:
            if rate > 0:
                nursery.start_soon(offered_load, nursery)
            else:
                for c in range(clients * n * window):
                    nursery.start_soon(one_client, c)
            await trio.sleep(warmup)
            h0 = (await client.status(members[0]))["height"]
            measuring = True
            t0 = time.perf_counter()
            await trio.sleep(duration)
            measuring = False
            elapsed = time.perf_counter() - t0
            h1 = (await client.status(members[0]))["height"]
            nursery.cancel_scope.cancel()
    _ = status0
    latencies.sort()
    if shed:
        print(f"  (offered load: {shed} envelopes shed, more than "
              f"{MAX_OPEN_LOOP_OUTSTANDING} outstanding)")
    return {"commands": done, "elapsed": elapsed, "blocks": h1 - h0, "latencies": latencies}


def run_coalitiond(n: int, clients: int, window: int, size: int, warmup: float,
                   duration: float, per_envelope: int = 1, rate: float = 0.0
                   ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-coalitiond-{n}-") as tmp:
        dir = Path(tmp)
        paths = generate_devnet(n, "feed", dir, _free_base_port(200))
        procs = [subprocess.Popen(coalitiond_command("run", "--config", str(p)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL) for p in paths]
        try:
            configure("console", "error")
            result = trio.run(_coalitiond_load, dir, n, clients, window, size, warmup, duration,
                              per_envelope, rate)
            usage = [_proc_usage(p.pid) for p in procs]
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
    result["cpu_s"] = [u[0] for u in usage]
    result["peak_rss_kib"] = [u[1] for u in usage]
    return result


def run_pysyncobj(n: int, clients: int, window: int, size: int, warmup: float,
                  duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-pysyncobj-{n}-") as tmp:
        base = _free_base_port(n)
        addrs = [f"127.0.0.1:{base + i}" for i in range(n)]
        procs = []
        for i in range(n):
            others = ",".join(a for j, a in enumerate(addrs) if j != i)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.pysyncobj_peer", "--self", addrs[i],
                 "--others", others, "--journal", f"{tmp}/journal-{i}", "--clients",
                 str(clients), "--window", str(window), "--size", str(size), "--warmup",
                 str(warmup), "--duration", str(duration), "--out", f"{tmp}/result-{i}.json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait(timeout=warmup + duration + 120)
        results = [json.loads(Path(f"{tmp}/result-{i}.json").read_text()) for i in range(n)]
    latencies = sorted(x for r in results for x in r["latencies"])
    return {"commands": sum(r["commands"] for r in results),
            "elapsed": max(r["elapsed"] for r in results), "blocks": None,
            "latencies": latencies, "cpu_s": [r["cpu_s"] for r in results],
            "peak_rss_kib": [r["peak_rss_kib"] for r in results]}


def _row(name: str, r: dict[str, Any]) -> dict[str, Any]:
    lat = r["latencies"]
    return {
        "system": name,
        "cmds/s": r["commands"] / r["elapsed"],
        "blocks/s": None if r["blocks"] is None else r["blocks"] / r["elapsed"],
        "p50 ms": _percentile(lat, 50) * 1000,
        "p99 ms": _percentile(lat, 99) * 1000,
        "cpu s/member": max(r["cpu_s"]),
        "peak RSS MiB/member": max(r["peak_rss_kib"]) / 1024,
    }


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="benchmarks committee")
    p.add_argument("--members", default="4,5,7")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients per member")
    p.add_argument("--window", type=int, default=4, help="outstanding commands per client")
    p.add_argument("--size", type=int, default=128, help="command payload bytes")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="n=5 only, 5 s")
    p.add_argument("--per-envelope", type=int, default=16,
                   help="also run coalitiond with this many commands per signed envelope "
                        "(DESIGN §2.5's amortisation; 0 to skip)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="also run coalitiond open-loop: this many commands/s offered at fixed "
                        "arrival times, whatever the latency (0 to skip)")
    p.add_argument("--rate-per-envelope", type=int, default=16,
                   help="commands per envelope in the open-loop run")
    a = p.parse_args(argv)
    sizes = [5] if a.quick else [int(x) for x in a.members.split(",")]
    duration = 5.0 if a.quick else a.duration
    print(f"workload: {a.clients} clients x window {a.window} per member, {a.size}-byte "
          f"commands, {duration:.0f}s after {a.warmup:.0f}s warm-up; coalitiond signs 1 "
          f"command per envelope, coalitiond/{a.per_envelope} signs {a.per_envelope} "
          "(outstanding envelopes stay the same)"
          + (f"; @{a.rate:.0f}/s x{a.rate_per_envelope} offers {a.rate:.0f} commands/s "
             f"open-loop in envelopes of {a.rate_per_envelope}" if a.rate > 0 else ""))
    header = f"{'n':>2} {'system':<14} {'cmds/s':>8} {'blocks/s':>8} {'p50 ms':>8} {'p99 ms':>8} " \
             f"{'cpu s/mbr':>9} {'RSS MiB':>8}"
    print(header)
    for n in sizes:
        print(f"   {conditions_line()}")
        ours = _row("coalitiond", run_coalitiond(n, a.clients, a.window, a.size, a.warmup,
                                                 duration))
        theirs = _row("pysyncobj", run_pysyncobj(n, a.clients, a.window, a.size, a.warmup,
                                                 duration))
        rows = [ours, theirs]
        if a.per_envelope > 1:
            batched = _row(f"coalitiond/{a.per_envelope}",
                           run_coalitiond(n, a.clients, a.window, a.size, a.warmup, duration,
                                          a.per_envelope))
            rows.insert(1, batched)
        if a.rate > 0:
            offered = _row(f"@{a.rate:.0f}/s x{a.rate_per_envelope}",
                           run_coalitiond(n, a.clients, a.window, a.size, a.warmup, duration,
                                          a.rate_per_envelope, a.rate))
            rows.insert(len(rows) - 1, offered)
        for r in rows:
            blocks = "-" if r["blocks/s"] is None else f"{r['blocks/s']:.1f}"
            print(f"{n:>2} {r['system']:<14} {r['cmds/s']:>8.0f} {blocks:>8} "
                  f"{r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f} {r['cpu s/member']:>9.1f} "
                  f"{r['peak RSS MiB/member']:>8.1f}")
        print(f"{n:>2} {'ratio':<14} {ours['cmds/s'] / max(theirs['cmds/s'], 1e-9):>8.2f} "
              f"{'':>8} {ours['p50 ms'] / theirs['p50 ms']:>8.2f} "
              f"{ours['p99 ms'] / theirs['p99 ms']:>8.2f}   (coalitiond / pysyncobj)")


if __name__ == "__main__":
    main(sys.argv[1:])
