"""The integrator CLI as real processes against a committee: submit, tail, status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from node_harness import in_process, write_committee

pytestmark = pytest.mark.live


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([sys.executable, "-m", "coalitiond", *args],
                                  capture_stdout=True, capture_stderr=True, check=False)


async def test_submit_tail_and_status(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    client = str(committee.client_config_path)
    with trio.fail_after(180):
        async with in_process(committee):
            r = await _cli("submit", "--config", client, "--kind", "greeting",
                           "--body", '{"hello": "world"}')
            assert r.returncode == 0, r.stderr.decode()
            result = json.loads(r.stdout)
            assert result["accepted"] and result["status"] == "applied"
            height = result["height"]

            r = await _cli("tail", "--config", client, "--from", "1")
            assert r.returncode == 0, r.stderr.decode()
            blocks = [json.loads(line) for line in r.stdout.decode().splitlines()]
            assert [b["height"] for b in blocks] == list(range(1, len(blocks) + 1))
            ours = [b for b in blocks if b["height"] == height]
            assert ours, f"tail did not print height {height}"
            commands = [c for e in ours[0]["entries"] for c in e["commands"]]
            assert {"op": "publish", "args": {"kind": "greeting", "body": {"hello": "world"}}} \
                in commands
            assert ours[0]["certificate"]["kind"] in ("finalize", "notarize")
            assert len(ours[0]["certificate"]["signers"]) >= 3

            # A generous --timeout: a fresh process on a busy machine; only a member that
            # never answers may be listed as unreachable.
            r = await _cli("status", "--config", client, "--timeout", "120")
            assert r.returncode == 0, r.stderr.decode()
            statuses = json.loads(r.stdout)
            assert [s["member"] for s in statuses] == [0, 1, 2, 3]
            assert all(s["height"] >= height and s["q"] == 3 for s in statuses)


async def test_submit_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    r = await _cli("submit", "--config", str(committee.client_config_path), "--kind", "k",
                   "--body", "{not json")
    assert r.returncode == 2
    assert r.stderr.decode().strip().startswith("coalitiond: error: --body: not valid JSON")
    r = await _cli("submit", "--config", str(tmp_path / "missing.toml"), "--kind", "k",
                   "--body", "1")
    assert r.returncode == 2
    assert "missing.toml: file not found" in r.stderr.decode()
    r = await _cli("status", "--config", str(committee.client_config_path), "--timeout", "0")
    assert r.returncode == 2
    assert r.stderr.decode().strip() == \
        "coalitiond: error: --timeout must be a positive number of seconds, got 0.0"



async def test_submit_and_tail_wait_as_long_as_timeout_says(tmp_path: Path) -> None:
    """`--timeout S` replaces the fixed 10 s connect (and 30 s reply) deadlines of `submit`
    and `tail`: with no member up, each gives up after S and says so on one line."""
    committee = write_committee(tmp_path, 4)  # nothing started: no member listens
    client = str(committee.client_config_path)
    for args in (("submit", "--kind", "k", "--body", "1"), ("tail", "--from", "1")):
        r = await _cli(args[0], "--config", client, "--timeout", "0.5", *args[1:])
        assert r.returncode == 2, r.stderr.decode()
        (line,) = r.stderr.decode().splitlines()
        assert line.startswith("coalitiond: error: could not reach any committee member at "
                               "127.0.0.1:") and line.endswith(" within 0.5s"), line
        r = await _cli(args[0], "--config", client, "--timeout", "-1", *args[1:])
        assert r.returncode == 2
        assert r.stderr.decode().strip() == \
            "coalitiond: error: --timeout must be a positive number of seconds, got -1.0"
