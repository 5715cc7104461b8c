"""The critical-path trace (coalitiond/node/trace.py): off unless COALITIOND_TRACE names a
directory, one line per milestone or section in the documented format, and bounded."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from coalitiond.node import trace


def test_lines_follow_the_documented_format() -> None:
    out = io.StringIO()
    tracer = trace.Tracer(out)
    tracer.event("built:propose", 7, at=123)
    cpu0, wall0 = trace.begin()
    tracer.section("step:propose", cpu0, wall0, (7, 8))
    tracer.measured("verify", 5000, wall0, ())
    event, section, measured = out.getvalue().splitlines()
    assert event == "E\tbuilt:propose\t7\t123"
    kind, name, cpu, wall, end, views = section.split("\t")
    assert (kind, name, views) == ("C", "step:propose", "7,8")
    assert int(cpu) >= 0 and int(wall) >= 0 and int(end) >= wall0
    assert measured.split("\t")[:3] == ["C", "verify", "5000"]
    assert measured.split("\t")[5] == ""


def test_a_tracer_writes_at_most_its_limit() -> None:
    out = io.StringIO()
    tracer = trace.Tracer(out, limit=3)
    for view in range(10):
        tracer.event("outcome", view)
    assert len(out.getvalue().splitlines()) == 3


def test_tracing_is_off_without_the_environment_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "TRACER", None)
    monkeypatch.delenv(trace.TRACE_ENV, raising=False)
    assert trace.start_from_environment(2) is None and trace.TRACER is None
    monkeypatch.setenv(trace.TRACE_ENV, str(tmp_path))
    tracer = trace.start_from_environment(2)
    assert tracer is not None and trace.TRACER is tracer
    tracer.event("outcome", 1, at=5)
    tracer.close()
    assert (tmp_path / "member-2.trace").read_text() == "E\toutcome\t1\t5\n"
