"""Committee benchmark: a real coalitiond committee on loopback vs a PySyncObj (Raft) cluster.

Same closed-loop workload on both, for n = 4, 5, 7, 10: `clients` closed-loop clients per
member, each with `window` commands of `size` bytes outstanding, for `duration` seconds after
a warm-up. coalitiond: one feed `publish` per signed envelope (the worst case for signatures),
submitted round-robin to members over Noise links, latency from submit to the finalised
outcome. PySyncObj: one replicated call per command, latency from the call to its applied
callback; three configurations (benchmarks/pysyncobj_peer.py): tuned (the peer row the
ratios use), tuned with its journal flushed (durable against durable), and stock.

coalitiond rows (`--rows`): closed loop at 1 and at 16 commands per envelope; open loop
(commands offered at fixed arrival times whatever the latency, so p50 is the latency at that
load): the light load (`--light`, 100 commands/s one per envelope), `--open` rates in
envelopes of 16, and the light load with one member killed during the warm-up (`down`).

Printed per row: commands/s, finalised blocks/s, p50/p99 latency, CPU per member (per
finalised block and per command, over the measured window) and peak RSS per member. For the
traced rows (`--trace`, default the light load and the 1-per-envelope closed loop) the members
run with COALITIOND_TRACE (coalitiond/node/trace.py) and the critical-path table per view is
printed, merged from every member's trace (docs/performance.md). Usage: python -m benchmarks
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from coalitiond.cli.devnet import generate_devnet
from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.node.client import CommitteeClient, load_client_config
from coalitiond.node.devnet import coalitiond_command, write_client_config
from coalitiond.node.trace import TRACE_ENV
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


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a live process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
                           rate: float = 0.0, pids: Sequence[int] = (),
                           down: int | None = None) -> dict[str, Any]:
    """Run the load; `down`: the member killed (SIGKILL) a third into the warm-up and never
    submitted to. Returns the measured window's commands, blocks, latencies, per-member CPU
    and its bounds on the monotonic clock (for the traces)."""
    config = load_client_config(write_client_config(dir))
    key = load_key_file(config.key_file)
    latencies: list[float] = []
    measuring = False
    done = 0
    shed = 0
    outstanding = 0
    # A busy machine starts five Python processes slowly: give them their time.
    async with CommitteeClient.open(config, connect_timeout=120) as client:
        with trio.fail_after(60):
            await client.manager.wait_until(lambda: len(client.members()) == n)
        signer = EnvelopeSigner(key, client.committee.committee_id, time.time_ns() // 1000)
        payload = os.urandom(size // 2).hex()[:size]
        members = [m for i, m in enumerate(client.committee.members) if i != down]
        live = len(members)

        async def one_client(c: int) -> None:
            nonlocal done
            k = 0
            while True:
                k += 1
                env = signer.sign([publish("bench", payload)] * per_envelope)
                started = time.perf_counter()
                try:
                    ack, outcome = await client.submit(env.raw, member=members[(c + k) % live])
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
                ack, outcome = await client.submit(env.raw, member=members[k % live])
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
            if down is not None:
                await trio.sleep(warmup / 3)
                os.kill(pids[down], signal.SIGKILL)
                await trio.sleep(warmup * 2 / 3)
            else:
                await trio.sleep(warmup)
            h0 = (await client.status(members[0]))["height"]
            cpu0 = [_proc_cpu(p) for p in pids]
            measuring = True
            t0 = time.perf_counter()
            mono0 = time.monotonic_ns()
            await trio.sleep(duration)
            measuring = False
            elapsed = time.perf_counter() - t0
            mono1 = time.monotonic_ns()
            cpu1 = [_proc_cpu(p) for p in pids]
            h1 = (await client.status(members[0]))["height"]
            nursery.cancel_scope.cancel()
    latencies.sort()
    if shed:
        print(f"  (offered load: {shed} envelopes shed, more than "
              f"{MAX_OPEN_LOOP_OUTSTANDING} outstanding)")
    window_cpu = [b - a for i, (a, b) in enumerate(zip(cpu0, cpu1, strict=True)) if i != down]
    return {"commands": done, "elapsed": elapsed, "blocks": h1 - h0, "latencies": latencies,
            "window_cpu_s": window_cpu, "window_ns": (mono0, mono1)}


def run_coalitiond(n: int, clients: int, window: int, size: int, warmup: float,
                   duration: float, per_envelope: int = 1, rate: float = 0.0,
                   down: int | None = None, traced: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-coalitiond-{n}-") as tmp:
        dir = Path(tmp)
        paths = generate_devnet(n, "feed", dir, _free_base_port(200))
        env = dict(os.environ)
        if traced:
            (dir / "trace").mkdir()
            env[TRACE_ENV] = str(dir / "trace")
        logs = os.environ.get("BENCH_MEMBER_LOGS")  # a directory: keep the members' output
        procs = [subprocess.Popen(coalitiond_command("run", "--config", str(p)),
                                  stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
                                  stderr=subprocess.DEVNULL if not logs else
                                  open(f"{logs}/member-{i}.log", "w"))  # noqa: SIM115
                 for i, p in enumerate(paths)]
        try:
            configure("console", "error")
            result = trio.run(_coalitiond_load, dir, n, clients, window, size, warmup, duration,
                              per_envelope, rate, [p.pid for p in procs], down)
            usage = [_proc_usage(p.pid) for i, p in enumerate(procs) if i != down]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if traced:
            result["critical_path"] = critical_path(
                dir / "trace", n, result["window_ns"], result["window_cpu_s"],
                result["blocks"], down)
    result["cpu_s"] = [u[0] for u in usage]
    result["peak_rss_kib"] = [u[1] for u in usage]
    return result


PEER_MODES = {"peer": "tuned", "peer-fsync": "tuned-flushed", "peer-stock": "stock"}


def run_pysyncobj(n: int, clients: int, window: int, size: int, warmup: float,
                  duration: float, mode: str = "tuned") -> dict[str, Any]:
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
                 str(warmup), "--duration", str(duration), "--out", f"{tmp}/result-{i}.json",
                 "--mode", mode],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait(timeout=warmup + duration + 120)
        results = [json.loads(Path(f"{tmp}/result-{i}.json").read_text()) for i in range(n)]
    latencies = sorted(x for r in results for x in r["latencies"])
    return {"commands": sum(r["commands"] for r in results),
            "elapsed": max(r["elapsed"] for r in results), "blocks": None,
            "latencies": latencies, "cpu_s": [r["cpu_s"] for r in results],
            "window_cpu_s": [r["cpu_s"] for r in results],
            "peak_rss_kib": [r["peak_rss_kib"] for r in results]}


# -- the critical path, from the members' traces (coalitiond/node/trace.py) ---------------

#: Milestones of a view, in path order: (name, where: "leader" or "others" (the median
#: member among the rest), the trace event). Each phase is the time from the milestone
#: before it.
MILESTONES: Final = (
    ("propose", "leader", "built:propose"),
    ("guard write (proposal)", "leader", "guarded:propose"),
    ("send proposal", "leader", "sent:propose"),
    ("network + intake", "others", "received:proposal"),
    ("verify", "others", "verified:proposal"),
    ("vote (step)", "others", "built:notarize"),
    ("guard write (notarize)", "others", "guarded:notarize"),
    ("send vote", "others", "sent:notarize"),
    ("collect (notarization)", "all", "built:finalize"),
    ("guard write (finalize)", "all", "guarded:finalize"),
    ("send finalize vote", "all", "sent:finalize"),
    ("finalise (collect)", "all", "finalized"),
    ("append", "all", "appended"),
    ("execute", "all", "executed"),
    ("outcome", "all", "outcome"),
)
#: Store commits, timed around the call (hand-off and wait included) and inside it.
STORE_CALLS: Final = ("guard", "guard:inside", "append", "append:inside")
#: Traced sections (name in the trace → the phase its CPU is counted under).
CPU_PHASES: Final = {
    "step:propose": "propose", "verify": "verify", "guard": "guard write",
    "step:vote": "vote (step)", "send": "send (encode, queue)",
    "step:collect": "collect (step)", "step:finalized": "finalise (step)",
    "append": "append (+ guard)", "execute": "execute", "outcome": "outcome",
}


def _read_trace(path: Path) -> tuple[dict[tuple[str, int], int], list[tuple[str, int, int, int,
                                                                               str]]]:
    events: dict[tuple[str, int], int] = {}
    sections = []
    for line in path.read_text(encoding="ascii").splitlines():
        f = line.split("\t")
        if f[0] == "E" and len(f) == 4:
            events.setdefault((f[1], int(f[2])), int(f[3]))
        elif f[0] == "C" and len(f) == 6:
            sections.append((f[1], int(f[2]), int(f[3]), int(f[4]), f[5]))
    return events, sections


def critical_path(trace_dir: Path, n: int, window_ns: tuple[int, int],
                  window_cpu_s: list[float], blocks: int, down: int | None) -> dict[str, Any]:
    """Merge the members' traces into the per-view critical path: for each view proposed in
    the measured window and finalised, each milestone's time (at the leader, or the median
    member), the phases between them (median and p90 over views); and the CPU of each traced
    section per member per finalised block."""
    traces = {}
    for i in range(n):
        path = trace_dir / f"member-{i}.trace"
        if i != down and path.exists():
            traces[i] = _read_trace(path)
    lo, hi = window_ns
    leaders = {view: i for i, (events, _) in traces.items() for (name, view), at in events.items()
               if name == "built:propose" and lo <= at <= hi}
    phases: dict[str, list[float]] = {name: [] for name, _, _ in MILESTONES}
    totals: list[float] = []
    for view, leader in sorted(leaders.items()):
        start = next((end - wall for name, _, wall, end, views in traces[leader][1]
                      if name == "step:propose" and str(view) in views.split(",")), None)
        if start is None:
            continue
        previous = start
        times = []
        for name, where, event in MILESTONES:
            at = [events.get((event, view)) for i, (events, _) in traces.items()
                  if where == "all" or (i == leader) == (where == "leader")]
            found = sorted(a for a in at if a is not None)
            if not found:
                break
            times.append((name, found[len(found) // 2]))
        else:
            for name, at_ns in times:
                phases[name].append((at_ns - previous) / 1e6)
                previous = at_ns
            totals.append((previous - start) / 1e6)
    cpu: dict[str, float] = {}
    store_wall: dict[str, list[float]] = {}
    for _, sections in traces.values():
        for name, cpu_ns, wall_ns, end, _ in sections:
            if not lo <= end <= hi:
                continue
            if name in STORE_CALLS:
                store_wall.setdefault(name, []).append(wall_ns / 1e6)
            if name.endswith(":inside"):
                continue
            phase = CPU_PHASES.get(name, name)
            cpu[phase] = cpu.get(phase, 0.0) + cpu_ns / 1e9
    members = max(1, len(traces))
    traced = sum(cpu.values())
    cpu["transport, intake, other (not traced)"] = max(0.0, sum(window_cpu_s) - traced)
    per_block = {k: v / members / max(1, blocks) * 1000 for k, v in cpu.items()}
    return {"views": len(totals), "phases": phases, "totals": totals,
            "cpu_ms_per_block": per_block, "store_wall": store_wall}


def print_critical_path(title: str, cp: dict[str, Any]) -> None:
    def pct(values: list[float], p: float) -> str:
        return "-" if not values else f"{_percentile(sorted(values), p):.2f}"

    print(f"   critical path per view, {title}: {cp['views']} views proposed in the window "
          "and finalised; wall ms from the previous milestone (at the leader, or the median "
          "member), median / p90 over views")
    for name, _, _ in MILESTONES:
        print(f"     {name:<26} {pct(cp['phases'][name], 50):>7} {pct(cp['phases'][name], 90):>7}")
    print(f"     {'propose start → outcome':<26} {pct(cp['totals'], 50):>7} "
          f"{pct(cp['totals'], 90):>7}")
    print("   store commits, wall ms median / p90 / count: "
          + "; ".join(f"{name} {pct(cp['store_wall'].get(name, []), 50)} / "
                      f"{pct(cp['store_wall'].get(name, []), 90)} / "
                      f"{len(cp['store_wall'].get(name, []))}" for name in STORE_CALLS))
    print("   CPU ms per member per finalised block, by traced section:")
    for name, ms in sorted(cp["cpu_ms_per_block"].items(), key=lambda kv: -kv[1]):
        print(f"     {name:<38} {ms:>7.2f}")
    print(f"     {'total':<38} {sum(cp['cpu_ms_per_block'].values()):>7.2f}")


def _row(name: str, r: dict[str, Any]) -> dict[str, Any]:
    lat = r["latencies"]
    cpu = r.get("window_cpu_s") or [0.0]
    mean_cpu = sum(cpu) / len(cpu)
    return {
        "system": name,
        "cmds/s": r["commands"] / r["elapsed"],
        "blocks/s": None if r["blocks"] is None else r["blocks"] / r["elapsed"],
        "p50 ms": _percentile(lat, 50) * 1000,
        "p99 ms": _percentile(lat, 99) * 1000,
        "cpu s/member": max(cpu),  # over the measured window
        "cpu ms/block": None if not r["blocks"] else mean_cpu / r["blocks"] * 1000,
        "cpu us/cmd": None if not r["commands"] else mean_cpu / r["commands"] * 1e6,
        "peak RSS MiB/member": max(r["peak_rss_kib"]) / 1024,
    }


ROWS: Final = ("closed1", "closed16", "light", "open", "down", "peer", "peer-fsync",
               "peer-stock")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="benchmarks committee")
    p.add_argument("--members", default="4,5,7,10")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients per member")
    p.add_argument("--window", type=int, default=4, help="outstanding commands per client")
    p.add_argument("--size", type=int, default=128, help="command payload bytes")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="n=5 only, 5 s")
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"rows to run, of {', '.join(ROWS)}")
    p.add_argument("--per-envelope", type=int, default=16,
                   help="commands per signed envelope in the closed16 row (DESIGN §2.5)")
    p.add_argument("--light", type=float, default=100.0,
                   help="the light load: commands/s offered open-loop, one per envelope "
                        "(the light and down rows)")
    p.add_argument("--open", default="1000,4000",
                   help="open-loop rates (commands/s) offered in envelopes of "
                        "--rate-per-envelope (the open rows)")
    p.add_argument("--rate-per-envelope", type=int, default=16,
                   help="commands per envelope in the open rows")
    p.add_argument("--trace", default="light,closed1",
                   help="rows whose members run traced; their critical path is printed")
    p.add_argument("--repeat", type=int, default=1,
                   help="run every row this many times in turn (interleaved A/B runs)")
    a = p.parse_args(argv)
    sizes = [5] if a.quick else [int(x) for x in a.members.split(",")]
    duration = 5.0 if a.quick else a.duration
    rows = [r for r in a.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown row {unknown[0]!r}; expected some of {', '.join(ROWS)}")
    traced = set(a.trace.split(","))
    print(f"workload: closed loop {a.clients} clients x window {a.window} per member, "
          f"{a.size}-byte commands, {duration:.0f}s after {a.warmup:.0f}s warm-up; "
          f"coalitiond/1 signs 1 command per envelope, /{a.per_envelope} signs "
          f"{a.per_envelope}; light = {a.light:.0f} commands/s offered one per envelope; "
          f"@R/s x{a.rate_per_envelope} offers R commands/s open-loop in envelopes of "
          f"{a.rate_per_envelope}; down = light with one member killed; traced rows: "
          f"{', '.join(sorted(traced))}")
    header = (f"{'n':>2} {'system':<24} {'cmds/s':>8} {'blocks/s':>8} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'CPU s':>6} {'ms/blk':>7} {'us/cmd':>7} {'RSS MiB':>8}")
    print(header)
    for n in sizes:
        for _ in range(a.repeat):
            run_rows(n, rows, traced, a, duration)


def run_rows(n: int, rows: list[str], traced: set[str], a: argparse.Namespace,
             duration: float) -> None:
    print(f"   {conditions_line()}")
    common = (n, a.clients, a.window, a.size, a.warmup, duration)
    results: list[dict[str, Any]] = []
    paths: list[tuple[str, dict[str, Any]]] = []

    def ours(row: str, name: str, **kw: Any) -> None:
        r = run_coalitiond(*common, traced=row in traced, **kw)
        results.append(_row(name, r))
        if "critical_path" in r:
            paths.append((name, r["critical_path"]))

    for row in rows:
        if row == "closed1":
            ours(row, "coalitiond/1")
        elif row == "closed16":
            ours(row, f"coalitiond/{a.per_envelope}", per_envelope=a.per_envelope)
        elif row == "light":
            ours(row, f"@{a.light:.0f}/s x1", rate=a.light)
        elif row == "open":
            for rate in (float(x) for x in a.open.split(",") if x):
                ours(row, f"@{rate:.0f}/s x{a.rate_per_envelope}",
                     per_envelope=a.rate_per_envelope, rate=rate)
        elif row == "down":
            ours(row, f"@{a.light:.0f}/s x1, 1 down", rate=a.light, down=n - 1)
        else:
            mode = PEER_MODES[row]
            results.append(_row(f"pysyncobj {mode}", run_pysyncobj(*common, mode=mode)))
    for r in results:
        def opt(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        print(f"{n:>2} {r['system']:<24} {r['cmds/s']:>8.0f} {opt(r['blocks/s'], '.1f'):>8} "
              f"{r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f} {r['cpu s/member']:>6.1f} "
              f"{opt(r['cpu ms/block'], '.2f'):>7} {opt(r['cpu us/cmd'], '.0f'):>7} "
              f"{r['peak RSS MiB/member']:>8.1f}")
    peer = next((r for r in results if r["system"] == "pysyncobj tuned"), None)
    mine = next((r for r in results if r["system"] == "coalitiond/1"), None)
    if peer is not None and mine is not None:
        print(f"{n:>2} {'ratio':<24} {mine['cmds/s'] / max(peer['cmds/s'], 1e-9):>8.2f} "
              f"{'':>8} {mine['p50 ms'] / peer['p50 ms']:>8.2f} "
              f"{mine['p99 ms'] / peer['p99 ms']:>8.2f}   (coalitiond/1 / pysyncobj tuned)")
    for name, cp in paths:
        print_critical_path(f"n = {n}, {name}", cp)


if __name__ == "__main__":
    main(sys.argv[1:])
