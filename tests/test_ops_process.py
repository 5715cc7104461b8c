"""What a member process reports about itself: STATUS= refreshed while it runs, the open-file
limit it got (a real `coalitiond run` started under a lowered limit), the data directory's
free space."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from node_harness import write_committee

from coalitiond.ops.process import (
    RECOMMENDED_OPEN_FILES,
    STATUS_INTERVAL_S,
    measure_data_dir,
    refresh_gauges,
    report_status,
    set_committee_gauges,
    status_line,
)
from coalitiond.primitives.metrics import sample_value


class RecordingNotifier:
    """Stands in for systemd's notify socket: records each STATUS= text sent."""

    enabled = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def status(self, text: str) -> bool:
        self.sent.append(text)
        return True


def _status(height: int, **extra: Any) -> dict[str, Any]:
    return {"member": 2, "height": height, "view": height + 1, "members_connected": 4, "n": 4,
            "ready": True, "accepting": True, "diverged": False, "abstaining": False} | extra


def test_status_line_names_height_view_links_and_trouble() -> None:
    assert status_line(_status(64)) == "member 2, height 64, view 65, 4/4 members linked"
    assert status_line(_status(3, diverged=True)).endswith("DIVERGED, not signing")
    assert status_line(_status(3, abstaining=True)).endswith("abstaining (recall)")
    assert status_line(_status(3, ready=False, members_connected=1)) == (
        "member 2, height 3, view 4, 1/4 members linked, not ready")
    assert status_line(_status(3, accepting=False)).endswith("stopping")


async def test_status_is_refreshed_while_the_member_runs_and_only_when_it_changed(
        autojump_clock: object) -> None:
    notifier = RecordingNotifier()
    current = {"height": 0}
    ready_text = status_line(_status(0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(report_status, notifier,  # type: ignore[arg-type]
                                   lambda: _status(current["height"]), sent=ready_text))
        await trio.sleep(STATUS_INTERVAL_S * 3 + 0.1)
        assert notifier.sent == [], "an unchanged status must not be re-sent"
        current["height"] = 64
        await trio.sleep(STATUS_INTERVAL_S)
        assert notifier.sent == ["member 2, height 64, view 65, 4/4 members linked"]
        await trio.sleep(STATUS_INTERVAL_S * 2)
        assert len(notifier.sent) == 1
        current["height"] = 65
        await trio.sleep(STATUS_INTERVAL_S)
        assert notifier.sent[-1] == "member 2, height 65, view 66, 4/4 members linked"
        nursery.cancel_scope.cancel()


def test_data_dir_free_and_size_are_measured(tmp_path: Path) -> None:
    measured = measure_data_dir(tmp_path)
    assert measured is not None
    free, size = measured
    assert 0 < free <= size
    assert sample_value("coalitiond_data_dir_free_bytes") == free
    assert sample_value("coalitiond_data_dir_size_bytes") == size
    assert measure_data_dir(tmp_path / "missing") is None


async def _until(sock: trio.socket.SocketType, needle: bytes) -> None:
    while needle not in await sock.recv(4096):
        pass


@pytest.mark.live
async def test_run_raises_a_lowered_open_files_limit_and_says_what_it_got(
        tmp_path: Path) -> None:
    """As under systemd where LimitNOFILE is capped: soft 256, hard 512. The member raises the
    soft limit to the hard one, says so, and warns that 512 is below the recommendation."""
    committee = write_committee(tmp_path, 4)
    notify_path = tmp_path / "notify.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    await sock.bind(str(notify_path))

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))

    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    proc = subprocess.Popen([sys.executable, "-m", "coalitiond", "run", "--config",
                             str(committee.configs[0])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=lower_limit)
    try:
        with trio.fail_after(60):
            await _until(sock, b"READY=1")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    text = err.decode()
    assert proc.returncode == 0, text
    assert "coalitiond: open files limit 512 (raised from 256), hard limit 512" in text, text
    assert (f"coalitiond: WARNING: open files limit 512 is below the recommended "
            f"{RECOMMENDED_OPEN_FILES}") in text


async def test_gauges_set_only_by_status_are_refreshed_between_scrapes(
        tmp_path: Path, autojump_clock: object) -> None:
    calls: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(refresh_gauges, tmp_path,
                                   lambda: calls.append(trio.current_time()), interval=15.0))
        await trio.sleep(45.5)
        nursery.cancel_scope.cancel()
    assert len(calls) == 4  # at 0, 15, 30, 45 s
    assert sample_value("coalitiond_data_dir_free_bytes") is not None
    set_committee_gauges(7, 5)
    assert (sample_value("coalitiond_committee_members"),
            sample_value("coalitiond_committee_quorum")) == (7, 5)
