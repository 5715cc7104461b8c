"""The notify protocol against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from coalitiond.ops.systemd import Notifier

pytestmark = pytest.mark.live


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_interval_s is None


def test_ready_watchdog_stopping_reach_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with _listener(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        assert n.ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address() -> None:
    name = f"coalitiond-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    with sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() -> None:
    ours = Notifier({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())})
    assert ours.watchdog_interval_s == 5.0
    theirs = Notifier({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"})
    assert theirs.watchdog_interval_s is None


def test_a_vanished_manager_is_not_an_error(tmp_path: Path) -> None:
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False
