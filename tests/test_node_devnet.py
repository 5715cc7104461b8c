"""`coalitiond devnet --duration S`: members start, commit visibly, and afterwards every
archive exports, verifies and agrees; the exit status says whether all of that held."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from node_harness import devnet_base_port

pytestmark = [pytest.mark.slow, pytest.mark.live]


def test_devnet_with_duration_commits_and_checks_archives(tmp_path: Path) -> None:
    d = tmp_path / "devnet"
    r = subprocess.run([sys.executable, "-m", "coalitiond", "devnet", "--members", "4",
                        "--component", "feed", "--dir", str(d), "--duration", "6",
                        "--rate", "40", "--base-port", str(devnet_base_port(4))],
                       capture_output=True, text=True, timeout=300, check=False)
    out = r.stdout
    assert r.returncode == 0, f"{out}\n{r.stderr}"
    progress = [line for line in out.splitlines() if line.startswith("t=")]
    assert progress, out
    assert "members up=4/4" in progress[-1]
    final_height = int(progress[-1].split("height=")[1].split()[0])
    assert final_height > 0
    assert "all 4 archives verify and agree on their common prefix" in out
    for i in range(4):
        assert (d / f"member-{i}.archive").is_file()


def _progress_value(line: str, key: str) -> int:
    return int(line.split(f" {key}=")[1].split()[0])


@pytest.mark.parametrize(("component", "shows"), [
    # The Almanac ticks by itself (no load), about once a second.
    ("almanac", lambda line: _progress_value(line, "seq") >= 1),
    # Both catalogued citizens' cards are published (and republished every round).
    ("atlas", lambda line: _progress_value(line, "count") == 2
     and _progress_value(line, "changes") > 2),
    # Entries, and anchors every 200 entries handed to each member's file sink.
    ("chronicle", lambda line: _progress_value(line, "anchors") >= 1),
    # Providers registered, requests granted, and the block stamped with the followed
    # Almanac's ticks (the devnet starts a 3-member Almanac alongside).
    ("compute", lambda line: _progress_value(line, "providers") == 3
     and _progress_value(line, "next_grant_seq") > 0 and _progress_value(line, "tick") >= 1),
])
def test_devnet_shows_each_components_activity(tmp_path: Path, component: str,
                                               shows: object) -> None:
    d = tmp_path / component
    rate = {"chronicle": "120", "compute": "4"}.get(component, "20")
    # Compute grants wait for the first tick of the Almanac started alongside: give it time
    # on a loaded 2-core machine.
    duration = "15" if component == "compute" else "7"
    r = subprocess.run([sys.executable, "-m", "coalitiond", "devnet", "--members", "3",
                        "--component", component, "--dir", str(d), "--duration", duration,
                        "--rate", rate, "--base-port", str(devnet_base_port(3, span=23))],
                       capture_output=True, text=True, timeout=300, check=False)
    out = r.stdout
    assert r.returncode == 0, f"{out}\n{r.stderr}"
    progress = [line for line in out.splitlines() if line.startswith("t=")]
    assert progress and f"| {component}: " in progress[-1], out
    assert callable(shows) and shows(progress[-1]), progress[-1]
    assert "all 3 archives verify and agree on their common prefix" in out
    if component == "chronicle":
        anchors = (d / "member-0-data" / "anchors.jsonl").read_text().splitlines()
        assert anchors and '"upto_seq":199' in anchors[0]
