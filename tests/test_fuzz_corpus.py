"""The fuzz harnesses' committed inputs, replayed on every `make test` (no atheris needed):
each seed of `fuzz/corpus/<harness>/` and each crash input kept in
`fuzz/regressions/<harness>/` goes through its target (`fuzz/targets.py`), which lets out
nothing but a finding. So a decoder that crashed once stays fixed, and the seeds keep
reaching the accepted paths they were written for."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


def _inputs(kind: str) -> list[tuple[str, Path]]:
    return [(name, path) for name in TARGETS
            for path in sorted((FUZZ / kind / name).glob("*"))
            if (FUZZ / kind / name).is_dir() and path.is_file()]


def test_every_harness_has_a_seed_corpus() -> None:
    for name in TARGETS:
        seeds = list((FUZZ / "corpus" / name).glob("*"))
        assert seeds, f"fuzz/corpus/{name}/ is empty: run `python -m fuzz.make_corpus`"
        assert all(p.stat().st_size <= 16 * 1024 for p in seeds), name  # small files


@pytest.mark.parametrize(("harness", "path"), _inputs("corpus") + _inputs("regressions"),
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_committed_input_passes_its_harness(harness: str, path: Path) -> None:
    TARGETS[harness](path.read_bytes())


def test_the_seeds_reach_what_they_were_written_for(tmp_path: Path) -> None:
    """A corpus of refusals only would fuzz the refusal paths: the seeds decode, verify and
    load where they are meant to."""
    from coalitiond.config import load_config
    from coalitiond.consensus import messages as m
    from coalitiond.log.archive import verify_archive
    from coalitiond.node import wire as w
    from fuzz.targets import _committee

    def seeds(name: str) -> list[bytes]:
        return [p.read_bytes() for p in sorted((FUZZ / "corpus" / name).iterdir())]

    for raw in seeds("wire"):
        w.decode_message(raw)
    for raw in seeds("consensus"):
        m.verify_message(_committee(), m.decode_message(_committee(), raw))
    (archive,) = seeds("archive")
    (tmp_path / "a.archive").write_bytes(archive)
    assert verify_archive(tmp_path / "a.archive").summary.height == 2
    loaded = 0
    for i, raw in enumerate(seeds("config")):
        (tmp_path / f"{i}.toml").write_bytes(raw)
        if b"[node]" in raw:
            load_config(tmp_path / f"{i}.toml", check_key=False)
            loaded += 1
    assert loaded >= 3
