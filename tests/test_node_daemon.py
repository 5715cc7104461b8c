"""`coalitiond run` as a real process: start-up lines, systemd notify, SIGTERM -> exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from node_harness import write_committee

pytestmark = pytest.mark.live


async def _datagrams(sock: trio.socket.SocketType, until: bytes) -> list[bytes]:
    got = []
    while True:
        data = await sock.recv(4096)
        got.append(data)
        if until in data:
            return got


async def test_run_notifies_systemd_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    notify_path = tmp_path / "notify.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    await sock.bind(str(notify_path))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([sys.executable, "-m", "coalitiond", "run", "--config",
                             str(committee.configs[0])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        with trio.fail_after(60):
            ready = await _datagrams(sock, b"READY=1")
        assert any(b"READY=1" in d for d in ready)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            stopping = await _datagrams(sock, b"STOPPING=1")
        assert any(b"WATCHDOG=1" in d for d in ready + stopping)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, err.decode()
    text = err.decode()
    assert "n=4 q=3; safe against 1 Byzantine, live with 1 down" in text
    assert "safety holds with up to 1 Byzantine members" in text
    assert "progress needs 3 of 4 up (tolerates 1 down)" in text
    assert 'attestation = "none"' in text  # loud in development mode


def test_run_refuses_a_bad_config_with_one_line(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    text = committee.configs[0].read_text().replace("[node]", "[node]\nbogus = 1", 1)
    committee.configs[0].write_text(text)
    r = subprocess.run([sys.executable, "-m", "coalitiond", "run", "--config",
                        str(committee.configs[0])], capture_output=True, text=True, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "node.bogus" in lines[0] and "unknown key" in lines[0], r.stderr


def test_a_tdx_gated_member_without_a_ticket_refuses_to_start(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    text = committee.configs[0].read_text().replace(
        'mode = "none"',
        'mode = "tdx"\nmrtd = ["' + "ab" * 48 + '"]\ncollateral_cache = "collateral"', 1)
    committee.configs[0].write_text(text)
    r = subprocess.run([sys.executable, "-m", "coalitiond", "run", "--config",
                        str(committee.configs[0])], capture_output=True, text=True, check=False,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("coalitiond: error: ") and "tdx.ticket: no attestation ticket" in last
    assert "attest quote" in last


def test_a_key_that_is_not_a_member_is_refused(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    from coalitiond.primitives.crypto import SigningKey
    from coalitiond.primitives.keys import write_key_file

    write_key_file(tmp_path / "member-0.key", SigningKey.generate(), overwrite=True)
    r = subprocess.run([sys.executable, "-m", "coalitiond", "run", "--config",
                        str(committee.configs[0])], capture_output=True, text=True, check=False,
                       timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("coalitiond: error: ") and "member" in lines[0], r.stderr


def test_a_listen_address_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    committee = write_committee(tmp_path, 4)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", committee.listen_ports[0]))
        busy.listen()
        r = subprocess.run([sys.executable, "-m", "coalitiond", "run", "--config",
                            str(committee.configs[0])], capture_output=True, text=True,
                           check=False, timeout=60)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("coalitiond: error: ") and "cannot listen" in last, r.stderr
    assert f"127.0.0.1:{committee.listen_ports[0]}" in last
