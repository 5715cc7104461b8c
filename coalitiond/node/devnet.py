"""The devnet supervisor: N member processes on loopback, a steady load, live progress.

`coalitiond devnet` generates the configs (cli/devnet.py), then this module:
1. starts `coalitiond run` for every member as a child process (logs in DIR/member-<i>.log);
2. connects a client (DIR/client.toml, the operator key) and submits the component's demo
   commands (coalitiond/node/devnet_workloads.py) at a steady rate, round-robin over the
   members; companions (the Almanac a compute committee follows) are started first;
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
import json
import math
import signal
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

from ..primitives.errors import CoalitiondError, OperatorError
from ..primitives.keys import load_key_file
from ..primitives.logs import configure
from .client import ClientConfig, CommitteeClient, load_client_config
from .devnet_workloads import (
    CONFLUENCE_CITIZENS,
    CONFLUENCE_KINDS,
    CitizenLoad,
    Workload,
    summarise,
)

#: How long members get to become reachable before the devnet gives up.
STARTUP_TIMEOUT_S: Final = 60.0
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


def coalitiond_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "coalitiond", *args]


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
        self.client_config: ClientConfig = load_client_config(write_client_config(dir))
        #: `--anchor evm`: (JSON-RPC URL, contract) whose confirmed anchors the status shows.
        self.anchor_chain: tuple[str, bytes] | None = None
        #: Confluences: records committed at the last progress line.
        self._records = 0
        self.run_id = time.time_ns() // 1000

    # -- members ------------------------------------------------------------------------

    async def _run_member(self, i: int, task_status: trio.TaskStatus[None], *,
                          companion: bool = False) -> None:
        config = self.companions[i] if companion else self.configs[i]
        log = config.with_suffix(".log").open("ab")
        try:
            async with trio.open_nursery() as nursery:
                behaviour = None if companion else self.byzantine.get(i)
                command = coalitiond_command("run", "--config", str(config)) \
                    if behaviour is None else [
                        sys.executable, "-m", "coalitiond.testing.byzantine_member",
                        "--behaviour", behaviour, "--config", str(config)]
                process = await nursery.start(lambda task_status: trio.run_process(
                    command,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False,
                    task_status=task_status))
                (self.companion_processes if companion else self.processes)[i] = process
                task_status.started()
        finally:
            log.close()

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
        status = 0
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as members:
                for i in range(len(self.companions)):
                    await members.start(partial(self._run_member, companion=True), i)
                for i in range(len(self.configs)):
                    await members.start(self._run_member, i)
                try:
                    # Members are still starting (imports, key files, listeners): give them
                    # the whole start-up budget, not a client's usual connect timeout.
                    async with CommitteeClient.open(self.client_config,
                                                    connect_timeout=STARTUP_TIMEOUT_S) as client:
                        with trio.move_on_after(STARTUP_TIMEOUT_S):
                            await client.manager.wait_until(
                                lambda: len(client.members()) == len(self.configs))
                        workload = Workload(self.kind, self.dir,
                                            load_key_file(self.client_config.key_file),
                                            client.committee.committee_id)
                        async with trio.open_nursery() as work:
                            if self.kind in CONFLUENCE_KINDS:
                                for k, path in enumerate(self.citizen_clients()):
                                    work.start_soon(self._citizen_load, k, path)
                            elif workload.submits:
                                work.start_soon(self._load, client, workload)
                            work.start_soon(self._report, client)
                            if duration is not None:
                                with trio.move_on_after(duration):
                                    async for _ in signals:
                                        status = 130
                                        break
                            else:
                                async for _ in signals:
                                    break
                            work.cancel_scope.cancel()
                finally:
                    print("devnet: stopping members", file=self.out, flush=True)
                    codes = await self.stop_members()
                    members.cancel_scope.cancel()
        for i in sorted(self.byzantine):
            if codes[i] != 0:  # the attacker's own fate is not the committee's
                print(f"devnet: Byzantine member {i} exited with {codes[i]}", file=self.out)
        bad = [i for i, c in enumerate(codes) if c != 0 and i not in self.byzantine]
        if bad:
            print(f"devnet: members {bad} exited with {[codes[i] for i in bad]}",
                  file=self.out)
            status = status or 1
        if duration is not None and status == 0 and self.byzantine:
            status = await trio.to_thread.run_sync(self.check_honest)
        if duration is not None and status == 0:
            status = await trio.to_thread.run_sync(self.check_archives)
        if duration is not None and status == 0 and self.kind in CONFLUENCE_KINDS:
            status = await trio.to_thread.run_sync(self.check_audit)
        return status

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

    def check_audit(self) -> int:
        """Export citizen 0 of every citizen committee and run `coalitiond audit` on member
        0's confluence archive against them."""
        citizens = []
        for k in range(CONFLUENCE_CITIZENS):
            archive = self.dir / f"citizen{k}.archive"
            r = subprocess.run(coalitiond_command(
                "export", "--data-dir", str(self.dir / f"citizen{k}-0-data"), "--out",
                str(archive), "--config", str(self.dir / f"citizen{k}-0.toml")),
                capture_output=True, text=True, check=False)
            if r.returncode != 0:
                print(f"devnet: citizen {k}: export failed: {r.stderr.strip() or r.stdout}",
                      file=self.out)
                return 1
            citizens += ["--citizen", str(archive)]
        r = subprocess.run(coalitiond_command("audit", "--archive",
                                              str(self.dir / "member-0.archive"), *citizens),
                           capture_output=True, text=True, check=False)
        print(f"devnet: audit: {r.stdout.strip() or r.stderr.strip()}", file=self.out,
              flush=True)
        return 0 if r.returncode == 0 else 1

    # -- after the run: export, verify, agree -------------------------------------------

    def check_honest(self) -> int:
        """With Byzantine members: every honest member was ready and not diverged at its last
        status, and what each recorded as evidence (by kind and accused member)."""
        from ..log.sqlite import Store, store_path

        status = 0
        for i in range(len(self.configs)):
            if i in self.byzantine:
                continue
            last = self.last_status[i]
            if last is None or not last.get("ready") or last.get("diverged"):
                print(f"devnet: honest member {i} was not ready at the end: "
                      f"{'no status' if last is None else last.get('diverged') or 'not ready'}",
                      file=self.out)
                status = 1
            with Store.open(store_path(self.dir / f"member-{i}-data"), read_only=True) as s:
                found: dict[tuple[str, int], int] = {}
                for record in s.evidence():
                    key = (record.kind, record.member)
                    found[key] = found.get(key, 0) + 1
            against_honest = sorted({m for _, m in found} - set(self.byzantine))
            if against_honest:
                print(f"devnet: member {i} recorded evidence against honest members "
                      f"{against_honest}", file=self.out)
                status = 1
            summary = ", ".join(f"{kind} x{count} against member {m}"
                                for (kind, m), count in sorted(found.items())) or "none"
            print(f"devnet: honest member {i}: ready; evidence: {summary}", file=self.out)
        return status

    def check_archives(self) -> int:
        archives = []
        for i in range(len(self.configs)):
            archive = self.dir / f"member-{i}.archive"
            data_dir = self.dir / f"member-{i}-data"
            steps = [("export", coalitiond_command("export", "--data-dir", str(data_dir),
                                                   "--out", str(archive),
                                                   "--config", str(self.configs[i]))),
                     ("verify", coalitiond_command("verify", "--archive", str(archive)))]
            for what, cmd in steps:
                r = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    print(f"devnet: member {i}: {what} failed: {r.stderr.strip() or r.stdout}",
                          file=self.out)
                    return 1
            archives.append(archive)
            print(f"devnet: member {i}: archive {archive.name} verifies", file=self.out)
        for a, b in itertools.combinations(archives, 2):
            r = subprocess.run(coalitiond_command("verify", "--archive", str(a), "--against",
                                                  str(b)),
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                print(f"devnet: {a.name} and {b.name} disagree:\n{r.stdout}{r.stderr}",
                      file=self.out)
                return 1
        print(f"devnet: all {len(archives)} archives verify and agree on their common prefix",
              file=self.out, flush=True)
        if self.anchor_chain is not None and not self.check_anchors(archives[0]):
            return 1
        print(json.dumps({"finalised": self.progress.finalized,
                          "refused": self.progress.refused,
                          "p50_ms": _ms_value(self.progress.percentile(50)),
                          "p99_ms": _ms_value(self.progress.percentile(99))}),
              file=self.out, flush=True)
        return 0


    def check_anchors(self, archive: Path) -> bool:
        """`verify --anchors` on one archive: every anchor the chain confirmed is the
        archive's, no member posted another digest, and only a tail (anchors committed as
        the devnet stopped) may be unconfirmed."""
        from ..components.chronicle.evm_rpc import JsonRpc, RpcError
        from ..integrator.anchor_check import CONFIRMED, MISSING, check_anchors, render
        from ..log import AuditFailure

        assert self.anchor_chain is not None
        url, contract = self.anchor_chain
        try:
            report = trio.run(lambda: check_anchors(archive, JsonRpc([url]), contract))
        except (AuditFailure, RpcError) as e:
            print(f"devnet: cannot check the anchors: {e}", file=self.out)
            return False
        print(render(report), file=self.out, flush=True)
        statuses = [a.status for a in report.anchors]
        tail = len(statuses) - statuses[::-1].index(CONFIRMED) if CONFIRMED in statuses else 0
        ok = (all(s == CONFIRMED for s in statuses[:tail])
              and all(s == MISSING for s in statuses[tail:])
              and not report.wrong_posts() and not report.stray)
        print(f"devnet: anchors on chain {'agree with' if ok else 'DISAGREE with'} the archive "
              f"({tail} confirmed, {len(statuses) - tail} still unconfirmed at the stop)",
              file=self.out, flush=True)
        return ok


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


def _ms_value(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


def run_devnet(dir: Path, configs: list[Path], *, duration: float | None, rate: float,
               commands_per_envelope: int, kind: str = "feed",
               companions: Sequence[Path] = (), byzantine: dict[int, str] | None = None,
               anchor_chain: tuple[str, bytes] | None = None) -> int:
    if rate <= 0:
        raise OperatorError("--rate must be positive")
    # The supervisor's own transport chatter (dials before members listen) is noise here;
    # each member's log is in DIR/member-<i>.log.
    configure("console", "warning")
    devnet = Devnet(dir, configs, rate=rate, commands_per_envelope=commands_per_envelope,
                    kind=kind, companions=companions, byzantine=byzantine)
    devnet.anchor_chain = anchor_chain
    result: Any = trio.run(devnet.run, duration)
    return int(result)
