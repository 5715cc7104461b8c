"""The devnet supervisor: N member processes on loopback, a steady load, live progress.

The checks after the run (archives, honest members, audit, anchors) are in
`devnet_checks.py`; the load of each component kind in `devnet_workloads.py`.

`coalitiond devnet` generates the configs (cli/devnet.py), then this module:
1. checks that every port the members will bind is free (a busy one fails at once, naming the
   port and `--base-port`), then starts `coalitiond run` for every member as a child process
   (logs in DIR/member-<i>.log) and waits, member by member and saying which, until each
   reports READY=1 over the systemd notify protocol (a socket of the supervisor's own, in
   the child's `$NOTIFY_SOCKET`): the same moment it would tell systemd it is ready. A member
   that exits before the devnet stops it (at start or later) ends the devnet with its exit
   status and the last line of its log;
2. once every member is ready, connects a client (DIR/client.toml, the operator key) and
   submits the component's demo commands (coalitiond/node/devnet_workloads.py) at a steady
   rate, round-robin over the members; companions (the Almanac a compute committee
   follows) are started first;
3. prints one progress line a second: height, commands/s, submit-to-final latency, members
   up, and the component's own numbers (ticks, cards, entries and anchors, requests and
   grants);
4. on Ctrl-C, or after `--duration`, stops the load and SIGTERMs the members; with
   `--duration` it then exports each member's archive, verifies each with `coalitiond
   verify`, and checks every pair agrees on their common prefix. Exit 0 only if all holds.

Every child and task is owned by one nursery; nothing outlives the supervisor.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from ..config import load_config
from ..primitives.errors import CoalitiondError, OperatorError
from ..primitives.keys import load_key_file
from ..primitives.logs import configure
from . import devnet_checks
from .client import ClientConfig, CommitteeClient, load_client_config
from .devnet_checks import coalitiond_command
from .devnet_workloads import (
    CONFLUENCE_CITIZENS,
    CONFLUENCE_KINDS,
    CitizenLoad,
    Workload,
    summarise,
)

#: How long a member that is still running gets to report READY=1 before the devnet gives up
#: (only a bound on a broken start: the devnet waits for the READY, not for a time).
STARTUP_TIMEOUT_S: Final = 120.0
#: Bytes read back from the end of a member's log for its last line.
LAST_LINE_BYTES: Final = 4096
#: Characters of that last line the devnet prints.
LAST_LINE_CHARS: Final = 400
#: One notify datagram at most (sd_notify messages are a few short assignments).
NOTIFY_DATAGRAM_BYTES: Final = 4096
#: How long a member gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 15.0
#: Submissions in flight at once (each waits for its outcome).
MAX_IN_FLIGHT: Final = 256
LATENCY_WINDOW: Final = 4096


def write_client_config(dir: Path) -> Path:
    path = dir / "client.toml"
    text = ("# The devnet's client: the operator key is the feed publisher and the ACL's client.\n"
            "[client]\n"
            "key_file = \"operator.key\"\n"
            "committee_config = \"member-0.toml\"\n")
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def busy_port(configs: Sequence[Path]) -> str | None:
    """The first port a member of `configs` will bind (listen, then metrics) that something
    else holds, as one line naming it and `--base-port`; None when all are free. Bound the
    way the member binds (SO_REUSEADDR), so a port left in TIME_WAIT by the previous run
    is not taken for busy."""
    for path in configs:
        node = load_config(path, check_key=False).node
        for what, address in (("listen", node.listen), ("metrics", node.metrics)):
            if address is None:
                continue
            with socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET,
                               socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((address.host, address.port))
                except OSError as e:
                    return (f"port {address.port} is already in use ({path.stem}'s {what} "
                            f"address {address.host}:{address.port}: {e.strerror}); "
                            "stop what holds it or pick other ports with --base-port")
    return None


def last_line(path: Path, since: int = 0) -> str:
    """The last non-blank line written to `path` after byte offset `since` (bounded)."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(since, end - LAST_LINE_BYTES))
            tail = f.read()
    except OSError as e:
        return f"(cannot read {path.name}: {e.strerror})"
    lines = [ln for ln in tail.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return "(nothing in its log)"
    return lines[-1].strip()[:LAST_LINE_CHARS]


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    submitted: int = 0
    finalized: int = 0
    refused: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


class Devnet:
    def __init__(self, dir: Path, configs: list[Path], *, rate: float, commands_per_envelope: int,
                 kind: str = "feed", companions: Sequence[Path] = (),
                 byzantine: dict[int, str] | None = None, out: TextIO = sys.stdout) -> None:
        self.kind = kind
        self.dir = dir
        self.configs = configs
        #: Other committees' members this devnet starts first and stops last.
        self.companions = list(companions)
        self.rate = rate
        self.commands_per_envelope = commands_per_envelope
        self.out = out
        self.processes: list[trio.Process | None] = [None] * len(configs)
        self.companion_processes: list[trio.Process | None] = [None] * len(self.companions)
        self.progress = Progress()
        #: Members run as Byzantine test members: {index: catalogue behaviour}.
        self.byzantine = dict(byzantine or {})
        #: The last status of each member, by index (None: never answered).
        self.last_status: list[dict[str, Any] | None] = [None] * len(configs)
        #: (is a companion, index) -> set when that member reported READY=1, or exited.
        self.ready: dict[tuple[bool, int], trio.Event] = {}
        #: Set once the devnet is stopping its members: exits after this are expected.
        self.stopping = False
        #: Why the devnet stopped early (an honest member exited): the line to print.
        self.failure: str | None = None
        #: Cancelled when an honest member exits before the devnet stops it.
        self.work_scope = trio.CancelScope()
        self.client_config: ClientConfig = load_client_config(write_client_config(dir))
        #: `--anchor evm`: (JSON-RPC URL, contract) whose confirmed anchors the status shows.
        self.anchor_chain: tuple[str, bytes] | None = None
        #: Confluences: records committed at the last progress line.
        self._records = 0
        self.run_id = time.time_ns() // 1000

    # -- members ------------------------------------------------------------------------

    def _name(self, i: int, companion: bool) -> str:
        return self.companions[i].stem if companion else f"member {i}"

    async def _run_member(self, i: int, task_status: trio.TaskStatus[None], *,
                          companion: bool = False) -> None:
        config = self.companions[i] if companion else self.configs[i]
        ready = self.ready[(companion, i)] = trio.Event()
        log_path = config.with_suffix(".log")
        log = log_path.open("ab")
        since = log.seek(0, os.SEEK_END)
        # The member's READY=1 arrives on a notify socket of our own (abstract: no file).
        notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"coalitiond-devnet-{os.getpid()}-{id(self):x}-{int(companion)}-{i}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["NOTIFY_SOCKET"] = "@" + name
        try:
            await notify.bind("\0" + name)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._await_ready, notify, ready)
                behaviour = None if companion else self.byzantine.get(i)
                command = coalitiond_command("run", "--config", str(config)) \
                    if behaviour is None else [
                        sys.executable, "-m", "coalitiond.testing.byzantine_member",
                        "--behaviour", behaviour, "--config", str(config)]
                process = await nursery.start(lambda task_status: trio.run_process(
                    command, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False,
                    task_status=task_status))
                (self.companion_processes if companion else self.processes)[i] = process
                task_status.started()
                await process.wait()
                was_ready = ready.is_set()
                ready.set()
                if not self.stopping:
                    log.flush()
                    self._exited(i, companion, process.returncode, was_ready,
                                 last_line(log_path, since))
                nursery.cancel_scope.cancel()
        finally:
            notify.close()
            log.close()

    @staticmethod
    async def _await_ready(notify: trio.socket.SocketType, ready: trio.Event) -> None:
        while not ready.is_set():
            datagram = await notify.recv(NOTIFY_DATAGRAM_BYTES)
            if b"READY=1" in datagram.split(b"\n"):
                ready.set()

    def _exited(self, i: int, companion: bool, code: int | None, was_ready: bool,
                line: str) -> None:
        """A member exited before the devnet stopped it: an honest one (or a companion)
        stops the devnet with its reason; a Byzantine one is reported at the end."""
        when = "while running" if was_ready else "at start"
        if not companion and i in self.byzantine:
            print(f"devnet: Byzantine member {i} exited {when} with status {code}: {line}",
                  file=self.out, flush=True)
            return
        log = (self.companions[i] if companion else self.configs[i]).with_suffix(".log")
        if self.failure is None:
            self.failure = (f"devnet: {self._name(i, companion)} exited {when} with status "
                            f"{code}; last line of {log.name}: {line}")
        self.work_scope.cancel()

    async def wait_ready(self) -> bool:
        """Wait for every companion, then every member, to report READY=1, saying which one
        is awaited. False (with `failure` set) if one is not ready in STARTUP_TIMEOUT_S."""
        started = time.monotonic()
        order = [(True, i) for i in range(len(self.companions))] + \
            [(False, i) for i in range(len(self.configs))]
        for companion, i in order:
            event = self.ready[(companion, i)]
            if not event.is_set():
                config = load_config(self.companions[i] if companion else self.configs[i],
                                     check_key=False)
                print(f"devnet: waiting for {self._name(i, companion)} "
                      f"({config.node.listen.host}:{config.node.listen.port}) to be ready",
                      file=self.out, flush=True)
            with trio.move_on_after(STARTUP_TIMEOUT_S):
                await event.wait()
            if not event.is_set():
                log = (self.companions[i] if companion else self.configs[i]).with_suffix(".log")
                self.failure = (f"devnet: {self._name(i, companion)} is running but not ready "
                                f"after {STARTUP_TIMEOUT_S:.0f}s; last line of {log.name}: "
                                f"{last_line(log)}")
                return False
        print(f"devnet: all {len(self.configs)} members ready after "
              f"{time.monotonic() - started:.1f}s; starting the load", file=self.out, flush=True)
        return True

    async def stop_members(self) -> list[int | None]:
        codes = await self._stop(self.processes)
        await self._stop(self.companion_processes)
        return codes

    @staticmethod
    async def _stop(processes: list[trio.Process | None]) -> list[int | None]:
        for p in processes:
            if p is not None and p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for p in processes:
            if p is None:
                codes.append(None)
                continue
            with trio.move_on_after(STOP_TIMEOUT_S):
                await p.wait()
            if p.returncode is None:
                p.kill()
                await p.wait()
            codes.append(p.returncode)
        return codes

    # -- load and progress --------------------------------------------------------------

    async def _submit_one(self, client: CommitteeClient, envelope: bytes, commands: int,
                          member: bytes, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            started = time.monotonic()
            try:
                ack, outcome = await client.submit(envelope, member=member)
            except CoalitiondError:
                self.progress.refused += 1
                return
            if not ack.accepted or outcome is None:
                self.progress.refused += 1
                return
            self.progress.finalized += commands
            self.progress.latencies.append(time.monotonic() - started)

    async def _load(self, client: CommitteeClient, workload: Workload) -> None:
        limiter = trio.CapacityLimiter(MAX_IN_FLIGHT)
        rounds = itertools.count()
        sent = itertools.count()
        interval = 1.0 / self.rate
        next_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            while True:
                members = client.members()
                if members:
                    for envelope, commands in workload.round(next(rounds),
                                                             self.commands_per_envelope):
                        self.progress.submitted += commands
                        await limiter.acquire()  # backpressure: never more than MAX_IN_FLIGHT
                        limiter.release()
                        nursery.start_soon(self._submit_one, client, envelope, commands,
                                           members[next(sent) % len(members)], limiter)
                        next_at += interval
                        await trio.sleep_until(next_at)
                else:
                    next_at += interval
                    await trio.sleep_until(next_at)

    async def _report(self, client: CommitteeClient) -> None:
        last_finalized, last_t = 0, time.monotonic()
        while True:
            await trio.sleep(1.0)
            heights, up, best = [], 0, {}
            for member in client.members():
                with trio.move_on_after(2.0):
                    try:
                        status = await client.status(member)
                    except CoalitiondError:
                        continue  # the member went away between listing and asking
                    heights.append(int(status.get("height", 0)))
                    if member in client.committee.members:
                        self.last_status[client.committee.members.index(member)] = status
                    if heights[-1] == max(heights):
                        best = status
                    up += 1
            now = time.monotonic()
            p = self.progress
            rate = (p.finalized - last_finalized) / (now - last_t)
            last_finalized, last_t = p.finalized, now
            p50, p99 = p.percentile(50), p.percentile(99)
            line = (f"t={now - p.started:6.1f}s height={max(heights, default=0):6d} "
                    f"commands/s={rate:7.1f} finalised={p.finalized:7d} refused={p.refused} "
                    f"latency p50={_ms(p50)} p99={_ms(p99)} members up={up}/{len(self.configs)}")
            activity = summarise(self.kind, best)
            if activity:
                line += f" | {self.kind}: {activity}"
            if self.anchor_chain is not None:
                line += f" | on chain: {await _confirmed_anchors(*self.anchor_chain)}"
            records = (best.get("component_head") or {}).get("committed")
            if self.kind in CONFLUENCE_KINDS and isinstance(records, int):
                what = "routed" if self.kind == "intents" else "attestations"
                line += f" {what}/s={records - self._records:.0f}"
                self._records = records
            print(line, file=self.out, flush=True)

    async def run(self, duration: float | None) -> int:
        print(f"devnet: starting {len(self.configs)} members (logs in {self.dir}/member-*.log)",
              file=self.out, flush=True)
        interrupted = False

        async def watch_signals(signals: Any) -> None:
            nonlocal interrupted
            async for _ in signals:
                interrupted = True
                self.stopping = True  # the members got the signal too: their exits are ours
                self.work_scope.cancel()
                return

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as members:
                members.start_soon(watch_signals, signals)
                for i in range(len(self.companions)):
                    await members.start(partial(self._run_member, companion=True), i)
                for i in range(len(self.configs)):
                    await members.start(self._run_member, i)
                try:
                    with self.work_scope:
                        if await self.wait_ready():
                            await self._work(duration)
                finally:
                    self.stopping = True
                    print("devnet: stopping members", file=self.out, flush=True)
                    codes = await self.stop_members()
                    members.cancel_scope.cancel()
        status = 130 if interrupted and duration is not None else 0
        if self.failure is not None:
            print(self.failure, file=self.out, flush=True)
            status = 1
        for i in sorted(self.byzantine):
            if codes[i] != 0:  # the attacker's own fate is not the committee's
                print(f"devnet: Byzantine member {i} exited with {codes[i]}", file=self.out)
        bad = [i for i, c in enumerate(codes) if c != 0 and i not in self.byzantine]
        if bad:
            print(f"devnet: members {bad} exited with {[codes[i] for i in bad]}",
                  file=self.out)
            status = status or 1
        if duration is not None and status == 0 and self.byzantine:
            status = await trio.to_thread.run_sync(devnet_checks.check_honest, self)
        if duration is not None and status == 0:
            status = await trio.to_thread.run_sync(devnet_checks.check_archives, self)
        if duration is not None and status == 0 and self.kind in CONFLUENCE_KINDS:
            status = await trio.to_thread.run_sync(devnet_checks.check_audit, self)
        return status

    async def _work(self, duration: float | None) -> None:
        """The load and the progress lines, for `duration` seconds (None: until a signal)."""
        # Every member is ready (it listens): the client's links come up at once.
        async with CommitteeClient.open(self.client_config,
                                        connect_timeout=STARTUP_TIMEOUT_S) as client:
            with trio.move_on_after(STARTUP_TIMEOUT_S):
                await client.manager.wait_until(
                    lambda: len(client.members()) == len(self.configs))
            workload = Workload(self.kind, self.dir, load_key_file(self.client_config.key_file),
                                client.committee.committee_id)
            async with trio.open_nursery() as work:
                if self.kind in CONFLUENCE_KINDS:
                    for k, path in enumerate(self.citizen_clients()):
                        work.start_soon(self._citizen_load, k, path)
                elif workload.submits:
                    work.start_soon(self._load, client, workload)
                work.start_soon(self._report, client)
                if duration is None:
                    await trio.sleep_forever()
                await trio.sleep(duration)  # the devnet's own run time, not a wait for state
                work.cancel_scope.cancel()

    # -- confluences: citizens' load and the audit --------------------------------------

    def citizen_clients(self) -> list[Path]:
        """A client config per citizen feed committee (the operator key publishes)."""
        out = []
        for k in range(CONFLUENCE_CITIZENS):
            path = self.dir / f"client-citizen{k}.toml"
            text = ("[client]\nkey_file = \"operator.key\"\n"
                    f"committee_config = \"citizen{k}-0.toml\"\n")
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
            out.append(path)
        return out

    async def _citizen_load(self, k: int, path: Path) -> None:
        config = load_client_config(path)
        load = CitizenLoad(self.kind, k, load_key_file(config.key_file),
                           config.committee.committee_id, self.run_id)
        limiter = trio.CapacityLimiter(MAX_IN_FLIGHT)
        interval = CONFLUENCE_CITIZENS / self.rate
        async with CommitteeClient.open(config, connect_timeout=STARTUP_TIMEOUT_S) as client, \
                trio.open_nursery() as nursery:
            next_at = trio.current_time()
            for n in itertools.count():
                members = client.members()
                if members:
                    for envelope in load.round(n):
                        self.progress.submitted += 1
                        await limiter.acquire()
                        limiter.release()
                        nursery.start_soon(self._submit_one, client, envelope, 1,
                                           members[n % len(members)], limiter)
                next_at += interval
                await trio.sleep_until(next_at)


async def _confirmed_anchors(url: str, contract: bytes) -> str:
    from ..components.chronicle.evm_contract import AnchorContract
    from ..components.chronicle.evm_rpc import JsonRpc, RpcError

    try:
        with trio.move_on_after(2.0):
            count = await AnchorContract(JsonRpc([url], timeout=2.0), contract).anchored_count()
            return f"{count} anchors confirmed"
    except RpcError as e:
        return f"unreachable ({e})"
    return "no answer"


def _ms(x: float | None) -> str:
    return "   -  " if x is None else f"{x * 1000:5.0f}ms"


def run_devnet(dir: Path, configs: list[Path], *, duration: float | None, rate: float,
               commands_per_envelope: int, kind: str = "feed",
               companions: Sequence[Path] = (), byzantine: dict[int, str] | None = None,
               anchor_chain: tuple[str, bytes] | None = None) -> int:
    if rate <= 0:
        raise OperatorError("--rate must be positive")
    busy = busy_port([*companions, *configs])
    if busy is not None:
        raise OperatorError(f"devnet: {busy}")
    # The supervisor's own transport chatter (dials before members listen) is noise here;
    # each member's log is in DIR/member-<i>.log.
    configure("console", "warning")
    devnet = Devnet(dir, configs, rate=rate, commands_per_envelope=commands_per_envelope,
                    kind=kind, companions=companions, byzantine=byzantine)
    devnet.anchor_chain = anchor_chain
    result: Any = trio.run(devnet.run, duration)
    return int(result)
