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
    # The load starts only once every member said READY=1.
    lines = out.splitlines()
    assert lines.index(progress[0]) > lines.index(
        next(line for line in lines if line.startswith("devnet: all 4 members ready"))), out
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


def _devnet(d: Path, base: int, *extra: str, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    """`coalitiond devnet` in its own process group: if the test's bound ends the wait, the
    devnet and every member it started are killed, not left running."""
    import os
    import signal

    argv = [sys.executable, "-m", "coalitiond", "devnet", "--members", "3", "--component",
            "feed", "--dir", str(d), "--base-port", str(base), *extra]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"devnet still running after {timeout}s:\n{out}\n{err}"
                                 ) from None
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def test_a_busy_port_fails_at_once_naming_the_port_and_base_port(tmp_path: Path) -> None:
    """Something already listens on member 2's metrics port: the devnet starts no member and
    says, on one line, which port and what to change (it used to run on with one member
    short, past --duration)."""
    import socket

    d = tmp_path / "devnet"
    base = devnet_base_port(3)
    busy = base + 100 + 2
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        r = _devnet(d, base, "--duration", "600")
    assert r.returncode == 2, f"{r.stdout}\n{r.stderr}"
    (error,) = r.stderr.splitlines()
    assert error.startswith(f"coalitiond: error: devnet: port {busy} is already in use "
                            f"(member-2's metrics address 127.0.0.1:{busy}"), error
    assert "--base-port" in error
    # Nothing was started; the generated keys and configs are intact.
    assert not list(d.glob("member-*.log"))
    assert (d / "member-2.toml").is_file() and (d / "member-2.key").is_file()


def test_a_member_that_exits_at_start_stops_the_devnet_with_its_reason(tmp_path: Path) -> None:
    """Member 1's store is not a database: it exits at start. The devnet stops at once (not
    after --duration) with the member's exit status and the last line of its log, and leaves
    its data as it was."""
    d = tmp_path / "devnet"
    base = devnet_base_port(3)
    assert _devnet(d, base, "--generate-only").returncode == 0
    damaged = d / "member-1-data" / "log.sqlite3"
    damaged.write_bytes(b"not a database " * 16)
    r = _devnet(d, base, "--duration", "600")
    out = r.stdout
    assert r.returncode == 1, f"{out}\n{r.stderr}"
    (line,) = [x for x in out.splitlines() if x.startswith("devnet: member 1 exited")]
    assert line.startswith("devnet: member 1 exited at start with status 2; last line of "
                           "member-1.log: coalitiond: error: "), line
    assert "store damaged" in line and "not a readable SQLite database" in line, line
    assert "devnet: waiting for member" in out and not any(
        x.startswith("t=") for x in out.splitlines()), out  # no load was started
    assert damaged.read_bytes() == b"not a database " * 16
