"""Every harness in turn under atheris, one process at a time:

    python -m fuzz.campaign --seconds S [--harness NAME ...] [--work DIR]

Each harness reads its committed seed corpus `fuzz/corpus/<harness>/` (never written to)
and writes what it discovers to `<work>/<harness>/corpus/`, crashes to
`<work>/<harness>/crash-*`. At the end: one line per harness with the inputs run (libFuzzer's
`number_of_executed_units`), the time, inputs per second and new corpus entries, and every
crash. Exit 1 if any harness crashed or failed to run.

`make fuzz-smoke` runs it for 3 s a harness (the whole smoke stays under a minute; CI);
`make fuzz FUZZ_SECONDS=S` is the long campaign (docs/verification.md reports one).
A crash found becomes a regression input in `fuzz/regressions/<harness>/` (replayed by
`tests/test_fuzz_corpus.py`) and a fix.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.targets import MAX_INPUT, MAX_INPUT_BY_HARNESS, TARGETS

HERE = Path(__file__).resolve().parent
#: Beyond the run time: libFuzzer's start-up (instrumenting imports) and final merge.
GRACE_S = 120


def run_one(name: str, seconds: int, work: Path) -> tuple[str, int, float, int, list[Path]]:
    out = work / name
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / name
    argv = [sys.executable, "-m", "fuzz.run", name, f"-max_total_time={seconds}",
            f"-max_len={MAX_INPUT_BY_HARNESS.get(name, MAX_INPUT)}", f"-artifact_prefix={out}/", "-print_final_stats=1",
            "-rss_limit_mb=2048", "-timeout=30", str(corpus), str(seeds)]
    started = time.monotonic()
    try:
        env = {**os.environ, "COALITIOND_FUZZ_SCRATCH": str(out / "scratch")}
        r = subprocess.run(argv, cwd=HERE.parent, capture_output=True, text=True, env=env,
                           timeout=seconds + GRACE_S, check=False)
        log = r.stdout + r.stderr
        code = r.returncode
    except subprocess.TimeoutExpired as e:
        # TimeoutExpired carries bytes, whatever `text` said.
        log = "".join(x.decode("utf-8", "replace") if isinstance(x, bytes) else x or ""
                      for x in (e.stdout, e.stderr)) + "\n(timed out)"
        code = -1
    elapsed = time.monotonic() - started
    (out / "fuzz.log").write_text(log, encoding="utf-8", errors="replace")
    units = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    inputs = int(units[-1]) if units else 0
    crashes = sorted(out.glob("crash-*")) + sorted(out.glob("timeout-*")) + \
        sorted(out.glob("oom-*"))
    status = "ok" if code == 0 and not crashes else f"FAILED (exit {code})"
    return status, inputs, elapsed, len(list(corpus.iterdir())), crashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="run time per harness")
    parser.add_argument("--harness", action="append", choices=list(TARGETS),
                        help="only these harnesses (repeatable; default: all)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where new corpus entries, crashes and logs go (default: a "
                             "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    names = args.harness or list(TARGETS)
    failed = False
    shm = Path("/dev/shm")  # memory-backed: the file harnesses write every input
    with tempfile.TemporaryDirectory(prefix="coalitiond-fuzz-",
                                     dir=shm if shm.is_dir() else None) as tmp:
        work = args.work or Path(tmp)
        print(f"fuzz: {len(names)} harnesses, {args.seconds} s each, work in {work}",
              flush=True)
        for name in names:
            status, inputs, elapsed, found, crashes = run_one(name, args.seconds, work)
            print(f"fuzz: {name:18s} {status:8s} inputs={inputs:<10d} "
                  f"time={elapsed:6.1f}s inputs/s={inputs / max(elapsed, 1e-9):8.0f} "
                  f"new_corpus={found}", flush=True)
            for crash in crashes:
                print(f"fuzz:   {name}: {crash} ({crash.stat().st_size} bytes): replay with "
                      f"`python -m fuzz.run {name} {crash}`", flush=True)
                if args.work is None:  # keep the input: the temporary directory goes away
                    keep = Path.cwd() / f"fuzz-{name}-{crash.name}"
                    keep.write_bytes(crash.read_bytes())
                    print(f"fuzz:   kept as {keep}", flush=True)
            if status != "ok":
                failed = True
                tail = (work / name / "fuzz.log").read_text(errors="replace").splitlines()
                print("\n".join(f"fuzz:   | {line}" for line in tail[-25:]), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
