"""The flake hunt: run the tests that start live committees, sockets or processes (marker
`live`) many times, in random order, with every core kept busy by a competing process, and
print each test's failure count.

    make flake-hunt N=20                      # 20 runs of every live test, cores busy
    make flake-hunt N=5 FLAKE_ARGS="--quiet-cores -k rounds"
    python tests/flake_hunt.py --runs 20 --seed 1234   # replay one order

One pytest session runs every live test N times (pytest-repeat) in an order shuffled by
pytest-randomly from one seed, printed first: the same seed (and N, jobs and selection)
replays the same order. The competing processes are plain busy loops, one per core, started
before the session and killed after it. A test that fails in any run is a bug to find at its
root (docs/testing.md), never a run to repeat. Exit status: 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Test names longer than this are cut in the table (parameter ids can be long).
NAME_WIDTH = 110


def _busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _test_name(case: ET.Element, runs: int) -> str:
    """`module::test[params]` without pytest-repeat's `-k-N` (or `[k-N]`) suffix."""
    name = case.get("name", "")
    name = re.sub(rf"-\d+-{runs}\]$", "]", name)
    name = re.sub(rf"\[\d+-{runs}\]$", "", name)
    return f"{case.get('classname', '')}::{name}"


def _failure_lines(case: ET.Element, count: int = 6) -> list[str]:
    """The failure's message and the last lines of its traceback: where and why."""
    for child in case:
        if child.tag in ("failure", "error"):
            message = (child.get("message") or "").strip().splitlines()[:1]
            tail = (child.text or "").strip().splitlines()[-count:]
            return [line[:200] for line in message + tail]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each test (default 20)")
    parser.add_argument("--seed", type=int, default=None,
                        help="pytest-randomly seed (default: a new one, printed)")
    parser.add_argument("--jobs", default="auto",
                        help="pytest-xdist workers, as `make test` runs (default auto; 0: one "
                             "process)")
    parser.add_argument("--quiet-cores", action="store_true",
                        help="do not start the competing busy loops")
    parser.add_argument("-m", "--marker", default="live", help="tests to repeat (marker)")
    parser.add_argument("--report", type=Path, default=None,
                        help="keep pytest's JUnit XML report here (default: "
                             ".flake-hunt/report-SEED.xml)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    busy = 0 if args.quiet_cores else (os.cpu_count() or 1)
    print(f"flake hunt: {args.runs} runs of the `{args.marker}` tests, random order "
          f"--seed {seed}, {args.jobs} workers, {busy} competing busy loops", flush=True)

    # SIGTERM (a CI limit, `kill`) unwinds like Ctrl-C, so the busy loops and pytest are
    # stopped too, never left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = args.report or REPO / ".flake-hunt" / f"report-{seed}.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", args.marker, "-p", "randomly",
               f"--randomly-seed={seed}", f"--count={args.runs}", "-n", str(args.jobs),
               "--dist", "worksteal", "-p", "no:cacheprovider", "-q", "--no-header",
               f"--junitxml={report}", *args.pytest_args]
    loops = _busy_loops(busy)
    started = time.monotonic()
    try:
        status = subprocess.run(command, cwd=REPO, check=False).returncode
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()
    elapsed = time.monotonic() - started
    if not report.exists():
        print(f"flake hunt: pytest wrote no report (exit {status})", file=sys.stderr)
        return 2
    cases = list(ET.parse(report).getroot().iter("testcase"))

    runs: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    failure_lines: dict[str, list[str]] = {}
    for case in cases:
        name = _test_name(case, args.runs)
        if any(child.tag == "skipped" for child in case):
            continue
        runs[name] += 1
        if any(child.tag in ("failure", "error") for child in case):
            failures[name] += 1
            failure_lines.setdefault(name, _failure_lines(case))

    shown = {name: name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 1] + "…"
             for name in runs}
    width = max((len(n) for n in shown.values()), default=10)
    print(f"\n{'test':<{width}}  failed/runs")
    for name in sorted(runs, key=lambda n: (-failures[n], n)):
        print(f"{shown[name]:<{width}}  {failures[name]:>3}/{runs[name]}")
    print()
    for name, lines in failure_lines.items():
        print(f"{name} (first failure):")
        for line in lines:
            print(f"    {line}")
    total = sum(failures.values())
    print(f"flake hunt: {len(runs)} tests, {sum(runs.values())} runs, {total} failed, "
          f"{elapsed:.0f} s (--seed {seed}; every failure in full: {report})")
    return 0 if total == 0 and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
