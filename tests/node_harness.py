"""Builds committees for daemon tests: keys, member configs on free loopback ports, a
client config; and runs members in-process (one trio nursery) or as real processes."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from coalitiond.cli.init import load_or_create_key
from coalitiond.config import MemberConfig, load_config
from coalitiond.config.template import MemberLine, TemplateInput, render_member_config
from coalitiond.node.client import ClientConfig, CommitteeClient, load_client_config
from coalitiond.node.member import Member
from coalitiond.primitives.crypto import SigningKey

#: Ports handed out below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
#: 32768+ by default): outgoing connections of the members under test draw from that range
#: and could take a port between our probe and the member binding it.
PORT_RANGE = (20000, 32000)


def _worker_ports() -> range:
    """This test process's own part of PORT_RANGE: with pytest-xdist each worker gets a
    disjoint slice, so no worker can bind a port another handed out between its probe and
    its member's bind. Without xdist, the whole range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    lo, hi = PORT_RANGE
    size = (hi - lo) // max(workers, 1)
    return range(lo + index * size, lo + (index + 1) * size)


class _PortCursor:
    """Hands out this process's ports in turn, each once until the slice wraps around, so a
    port is not reused while its last owner's sockets may still be closing. The starting
    point depends on the process id: two test runs side by side start far apart."""

    def __init__(self) -> None:
        self.ports = _worker_ports()
        self.next = self.ports.start + (os.getpid() * 7919) % len(self.ports)

    def take(self, count: int, *, also_at: int | None = None) -> int:
        """The first port of a run of `count` consecutive ports that all bind now (and, with
        `also_at`, the run of `count` at that offset from it too); the cursor moves past."""
        for _ in range(len(self.ports)):
            start = self.next
            top = start + count + (also_at or 0)
            if top > self.ports.stop:
                self.next = self.ports.start
                continue
            runs = [range(start, start + count)]
            if also_at is not None:
                runs.append(range(start + also_at, start + also_at + count))
            busy = next((p for run in runs for p in run if not _bindable(p)), None)
            self.next = (busy + 1) if busy is not None else top
            if busy is None:
                return start
        raise RuntimeError(f"no {count} free ports in {self.ports}")


def _bindable(port: int) -> bool:
    # Without SO_REUSEADDR: a port with connections still in TIME_WAIT is passed over.
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_cursor: _PortCursor | None = None


def _ports() -> _PortCursor:
    global _cursor
    if _cursor is None:
        _cursor = _PortCursor()
    return _cursor


def free_ports(n: int, *, consecutive: bool = False) -> list[int]:
    """`n` ports that are free now, from this process's slice (consecutive if asked)."""
    if consecutive:
        start = _ports().take(n)
        return list(range(start, start + n))
    return [_ports().take(1) for _ in range(n)]


def devnet_base_port(members: int, *, span: int | None = None) -> int:
    """A `--base-port` for `coalitiond devnet`: base..base+span-1 (members, and the Almanac a
    compute devnet starts at base+20) and base+100..base+100+span-1 (metrics) all free."""
    return _ports().take(members if span is None else span, also_at=100)


@dataclass
class Committee:
    dir: Path
    configs: list[Path]
    keys: list[SigningKey]
    operator: SigningKey
    client_config_path: Path
    listen_ports: list[int]

    @property
    def n(self) -> int:
        return len(self.configs)

    def member_config(self, i: int) -> MemberConfig:
        return load_config(self.configs[i])

    def client_config(self) -> ClientConfig:
        return load_client_config(self.client_config_path)


def write_committee(dir: Path, n: int, *, component: str = "feed",
                    address_of: Callable[[int, int, int], str] | None = None,
                    timing: str = "") -> Committee:
    """`address_of(i, j, port_j)`: the address member i's config lists for member j
    (default: j's own listen port) — lets a test put a fault-injecting proxy in between."""
    dir.mkdir(parents=True, exist_ok=True)
    operator = load_or_create_key(dir / "operator.key")
    keys = [load_or_create_key(dir / f"member-{i}.key") for i in range(n)]
    ports = free_ports(n)
    paths = []
    for i in range(n):
        lines = [MemberLine(k.public, address_of(i, j, ports[j]) if address_of and i != j
                            else f"127.0.0.1:{ports[j]}", f"m{j}")
                 for j, k in enumerate(keys)]
        text = render_member_config(TemplateInput(
            kind=component, committee_name=f"test-{component}", network_name="test",
            key_file=f"member-{i}.key", data_dir=f"member-{i}-data",
            listen=f"127.0.0.1:{ports[i]}", members=lines, clients=[operator.public],
            citizen_operator=operator.public))
        if timing:
            text = text.replace("[committee.timing]", "[committee.timing]\n" + timing, 1)
        path = dir / f"member-{i}.toml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    client = dir / "client.toml"
    client.write_text('[client]\nkey_file = "operator.key"\ncommittee_config = "member-0.toml"\n'
                      + "connect = [" + ", ".join(f'"127.0.0.1:{p}"' for p in ports) + "]\n")
    return Committee(dir, paths, keys, operator, client, ports)


@dataclass
class RunningMember:
    member: Member
    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)


class InProcessCommittee:
    """Members as tasks of one nursery; each can be stopped and restarted on its data."""

    def __init__(self, committee: Committee, nursery: trio.Nursery) -> None:
        self.committee = committee
        self.nursery = nursery
        self.running: dict[int, RunningMember] = {}

    async def start(self, i: int) -> Member:
        config = self.committee.member_config(i)
        member = Member(config, self.committee.keys[i])
        scope = trio.CancelScope()
        running = RunningMember(member, scope)

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                with scope:
                    await member.run(task_status=task_status)
            finally:
                running.done.set()

        await self.nursery.start(run)
        self.running[i] = running
        return member

    async def stop(self, i: int) -> None:
        running = self.running.pop(i)
        running.scope.cancel()
        await running.done.wait()

    def members(self) -> list[Member]:
        return [r.member for _, r in sorted(self.running.items())]


@asynccontextmanager
async def in_process(committee: Committee, start: Sequence[int] | None = None
                     ) -> AsyncIterator[InProcessCommittee]:
    async with trio.open_nursery() as nursery:
        c = InProcessCommittee(committee, nursery)
        for i in (range(committee.n) if start is None else start):
            await c.start(i)
        try:
            yield c
        finally:
            for i in list(c.running):
                await c.stop(i)


async def all_reach(members: Sequence[Member], height: int, *, timeout: float = 60.0) -> None:
    """Wait (event-driven, no polling) until every member has finalised `height`; past the
    deadline, fail naming where each member stands."""
    with trio.move_on_after(timeout):
        for m in members:
            await m.wait_until(lambda m: m.height >= height)
        return
    raise AssertionError(f"members did not all reach height {height} within {timeout} s: "
                         f"heights {[m.height for m in members]}, views "
                         f"{[m.core.view if m.core else None for m in members]}")


@asynccontextmanager
async def client_for(committee: Committee) -> AsyncIterator[CommitteeClient]:
    # The test's own deadline bounds every exchange: the client keeps none of its own.
    async with CommitteeClient.open(committee.client_config(), connect_timeout=None,
                                    reply_timeout=None) as client:
        with trio.fail_after(30):
            await client.manager.wait_until(lambda: len(client.members()) == committee.n)
        yield client
