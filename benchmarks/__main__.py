"""Run every benchmark module (or the ones named: `python -m benchmarks store transport`)."""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys
import time
from pathlib import Path


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str]) -> None:
    """`python -m benchmarks [NAME ...] [-- ARGS]`: ARGS go to every named benchmark."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    wanted = set(argv)
    here = Path(__file__).parent
    from coalitiond.primitives.logs import configure

    configure("console", "warning")  # tables on stdout; only problems on stderr
    print(machine_line())
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if not info.name.startswith("bench_"):
            continue
        short = info.name.removeprefix("bench_")
        if wanted and short not in wanted:
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        print(f"\n== {short} ==")
        started = time.perf_counter()
        module.main(extra)
        print(f"({short}: {time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main(sys.argv[1:])
