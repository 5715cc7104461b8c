"""`coalitiond devnet --duration S`: members start, commit visibly, and afterwards every
archive exports, verifies and agrees; the exit status says whether all of that held."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from node_harness import devnet_base_port

pytestmark = pytest.mark.slow


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
