"""`coalitiond run`: one member process, from configuration to clean exit.

SIGTERM or SIGINT: stop taking client commands, tell systemd STOPPING=1, cancel the member
(a store write in progress completes first: worker-thread writes are never abandoned), close
the store, exit 0.
"""

from __future__ import annotations

import signal
import sys
from functools import partial
from typing import Final

import trio

from ..config import MemberConfig
from ..node.member import Member
from ..primitives.crypto import SigningKey
from ..primitives.logs import get_logger
from .http import OpsApp, serve_ops
from .process import (
    open_files_lines,
    raise_open_files_limit,
    refresh_gauges,
    report_status,
    set_committee_gauges,
    status_line,
)
from .read_api import ReadApi, ReadSource
from .systemd import Notifier

log = get_logger(__name__)

#: SIGTERM waits this long for consensus to reach a quiet point before cancelling.
DRAIN_S: Final = 0.5


def startup_lines(config: MemberConfig, member: Member) -> list[str]:
    c = member.committee
    lines = [
        f"coalitiond: member {member.me} of {c.summary()}",
        f"coalitiond: safety holds with up to {c.safety_bound} Byzantine members "
        f"(f_s = 2q - n - 1); progress needs {c.quorum} of {c.n} up "
        f"(tolerates {c.liveness_bound} down)",
        f"coalitiond: peer id {member.key.public.hex()}, listening on "
        f"{config.node.listen.host}:{config.node.listen.port}, data in {config.node.data_dir}",
    ]
    for i, m in enumerate(config.committee.members):
        lines.append(f"coalitiond:   member {i}: {m.peer_id.hex()[:16]} {m.address.host}:"
                     f"{m.address.port} {m.operator}".rstrip())
    if config.attestation.mode == "none":
        lines.append("coalitiond: WARNING: attestation = \"none\": members are not "
                     "TDX-attested (development only)")
    return lines


async def run_member(config: MemberConfig, key: SigningKey, *, guard_lost: bool = False,
                     notifier: Notifier | None = None) -> None:
    notifier = notifier or Notifier()
    member = Member(config, key, guard_lost=guard_lost)
    # systemd's LimitNOFILE (or a container's ulimit) is silently capped by the host's hard
    # limit: raise the soft limit to the hard one and say what the member got.
    before, after, hard = raise_open_files_limit()
    for line in startup_lines(config, member) + open_files_lines(before, after, hard):
        print(line, file=sys.stderr, flush=True)
    log.info("process.open_files", limit=after, raised_from=before, hard=hard)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(member.run)
            if config.node.metrics is not None:
                # The read API (docs/api.md) next to /metrics, /healthz, /readyz, /status.
                app = ReadApi(ReadSource.for_member(member)).install(
                    OpsApp(status=member.status, ready=lambda: member.ready))
                bind = f"{config.node.metrics.host}:{config.node.metrics.port}"
                await nursery.start(serve_ops, app, bind)
            if notifier.watchdog_interval_s:
                nursery.start_soon(_watchdog, notifier, notifier.watchdog_interval_s, member)
            set_committee_gauges(member.committee.n, member.committee.quorum)
            nursery.start_soon(refresh_gauges, config.node.data_dir, member.status)
            ready_status = status_line(member.status())
            notifier.ready(ready_status)
            if notifier.enabled:
                # READY's STATUS= goes stale at once: refresh it while the member runs.
                nursery.start_soon(partial(report_status, notifier, member.status,
                                           sent=ready_status))
            log.info("member.ready", member=member.me, height=member.height)
            async for signum in signals:
                log.info("member.stopping", signal=signal.Signals(signum).name)
                notifier.stopping()
                member.stop_accepting()
                await trio.sleep(DRAIN_S)
                nursery.cancel_scope.cancel()
                break
    log.info("member.stopped", height=member.height)


async def _watchdog(notifier: Notifier, interval: float, member: Member) -> None:
    """Ping systemd only while the consensus loop is alive: it steps at least once per
    view timeout (the core's view timer, backed off at most 2^max_backoff_exponent times
    after consecutive nullifications), so a loop stuck for longer than that stops the
    pings and systemd restarts the member."""
    c = member.core_config
    stuck_after = 2 * c.view_timeout_ms * 2 ** c.max_backoff_exponent / 1000 + interval
    while True:
        last = member.last_step_at
        if last is not None and trio.current_time() - last <= stuck_after:
            notifier.watchdog()
        await trio.sleep(interval)
