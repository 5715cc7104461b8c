"""What one member process tells its operator about itself while it runs.

Three things the daemon's wiring (`ops/daemon.py`) starts next to the member:

* the open-file limit it got: systemd's `LimitNOFILE=65536` (and a container runtime's
  ulimit) is silently lowered to the host's hard limit, so the member raises its soft limit
  to the hard one and says the result on a start-up line, in `/metrics`
  (`coalitiond_process_open_files_limit`) and as a warning when it is below
  `RECOMMENDED_OPEN_FILES`;
* `STATUS=` for systemd, refreshed every `STATUS_INTERVAL_S` whenever the text changed, so
  `systemctl status` shows the member's height now, not the one it had at READY;
* the free and total bytes of the filesystem holding the data directory, every
  `DISK_INTERVAL_S` (`coalitiond_data_dir_free_bytes`, `coalitiond_data_dir_size_bytes`),
  for the "disk almost full" alert (deploy/prometheus/alerts.yaml), with the committee's
  n and q (`coalitiond_committee_members`, `coalitiond_committee_quorum`) for the quorum and
  peers alerts.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

from ..primitives.metrics import gauge
from .systemd import Notifier

#: Below this many open files a member of a large committee with many readers can run out
#: (one per link, per HTTP reader, the store's files); reported as a warning, not refused.
RECOMMENDED_OPEN_FILES: Final = 4096
#: "unlimited" hard limits are capped here when the soft limit is raised.
MAX_OPEN_FILES: Final = 1 << 20
#: How often `STATUS=` is refreshed (sent only when its text changed).
STATUS_INTERVAL_S: Final = 5.0
#: How often the data directory's filesystem is measured.
DISK_INTERVAL_S: Final = 15.0

OPEN_FILES_LIMIT = gauge("process_open_files_limit",
                         "Soft limit on open files this member runs with (after raising it)")
DATA_DIR_FREE = gauge("data_dir_free_bytes",
                      "Bytes available to the member on the data directory's filesystem")
DATA_DIR_SIZE = gauge("data_dir_size_bytes", "Size of the data directory's filesystem")
COMMITTEE_MEMBERS = gauge("committee_members", "Members of this member's committee (n)")
COMMITTEE_QUORUM = gauge("committee_quorum", "Votes a certificate needs (q)")


def set_committee_gauges(n: int, quorum: int) -> None:
    """n and q as metrics, so alert rules compare links and members up against them."""
    COMMITTEE_MEMBERS.set(n)
    COMMITTEE_QUORUM.set(quorum)


def raise_open_files_limit() -> tuple[int, int, int]:
    """Raise the soft open-file limit to the hard one. Returns (before, after, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    after = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            after = target
        except (ValueError, OSError):
            after = soft
    OPEN_FILES_LIMIT.set(after)
    return soft, after, hard


def open_files_lines(before: int, after: int, hard: int) -> list[str]:
    """The start-up lines that say what open-file limit the member got."""
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    raised = f" (raised from {before})" if after != before else ""
    lines = [f"coalitiond: open files limit {after}{raised}, hard limit {hard_text}"]
    if after < RECOMMENDED_OPEN_FILES:
        lines.append(f"coalitiond: WARNING: open files limit {after} is below the "
                     f"recommended {RECOMMENDED_OPEN_FILES}; raise the hard limit (systemd "
                     f"LimitNOFILE, the container's nofile ulimit, /etc/security/limits.conf)")
    return lines


def status_line(status: Mapping[str, Any]) -> str:
    """The one-line summary systemd shows as the unit's `Status:`."""
    parts = [f"member {status['member']}", f"height {status['height']}",
             f"view {status['view']}",
             f"{status['members_connected']}/{status['n']} members linked"]
    if status.get("diverged"):
        parts.append("DIVERGED, not signing")
    elif status.get("abstaining"):
        parts.append("abstaining (recall)")
    elif not status.get("ready"):
        parts.append("not ready")
    if not status.get("accepting", True):
        parts.append("stopping")
    return ", ".join(parts)


async def report_status(notifier: Notifier, status: Callable[[], Mapping[str, Any]], *,
                        interval: float = STATUS_INTERVAL_S, sent: str = "") -> None:
    """Send `STATUS=` every `interval` seconds when its text differs from the last one sent
    (`sent`: what READY carried)."""
    while True:
        await trio.sleep(interval)
        text = status_line(status())
        if text != sent and notifier.status(text):
            sent = text


def measure_data_dir(path: Path) -> tuple[int, int] | None:
    """(free bytes for an unprivileged writer, total bytes), or None if it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    DATA_DIR_FREE.set(free)
    DATA_DIR_SIZE.set(size)
    return free, size


async def refresh_gauges(path: Path, refresh: Callable[[], object], *,
                         interval: float = DISK_INTERVAL_S) -> None:
    """Every `interval`: measure the data directory's filesystem and call `refresh` (the
    member's `status`, which also sets `coalitiond_network_members_connected`), so gauges
    that are not set as things happen are at most one interval old when scraped."""
    while True:
        measure_data_dir(path)
        refresh()
        await trio.sleep(interval)
