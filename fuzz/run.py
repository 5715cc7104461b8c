"""Run one harness under atheris (coverage-guided, libFuzzer):

    python -m fuzz.run HARNESS [libFuzzer flags] [CORPUS_DIR ...]

The target (`fuzz/targets.py`) and every coalitiond module it reaches are imported inside
`atheris.instrument_imports`, by calling the target once on an empty input there, so the
fuzzer sees their branch coverage. An exception the target lets out is a crash: libFuzzer
writes the input to `<artifact_prefix>crash-<sha1>` and exits non-zero.
`fuzz/campaign.py` runs every harness in turn (`make fuzz-smoke`, `make fuzz`).
"""

from __future__ import annotations

import sys


def main() -> None:
    import atheris

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m fuzz.run HARNESS [libFuzzer flags] [corpus dirs]")
    name, argv = sys.argv[1], [sys.argv[0], *sys.argv[2:]]
    with atheris.instrument_imports(include=["coalitiond", "fuzz"]):
        from fuzz.targets import TARGETS

        if name not in TARGETS:
            raise SystemExit(f"unknown harness {name!r} (known: {', '.join(TARGETS)})")
        target = TARGETS[name]
        target(b"")  # imports what the target reaches, instrumented
        target(b"\x01" * 8)

    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
