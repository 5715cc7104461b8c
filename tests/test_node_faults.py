"""Five real member processes on loopback under load, through faults (issue: daemon end to
end, item 6): kill -9 and restart, SIGSTOP/SIGCONT, and one member's links cut for a while.
Afterwards every archive verifies, all agree on their common prefix, and every acknowledged
command is in the log exactly once.

Links are cut with a TCP switchboard owned by the test: member i's configuration lists
member j at a proxy port unique to the ordered pair (i, j), so the test can sever and refuse
every connection of one member. Nothing in the daemon knows about it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio
from node_harness import free_ports, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import Envelope
from coalitiond.log.sqlite import Store, store_path
from coalitiond.node.client import CommitteeClient

pytestmark = [pytest.mark.slow, pytest.mark.live]

N = 5


class Switchboard:
    """Forwards pair (i, j) connections to member j; can cut every link of one member."""

    def __init__(self, n: int) -> None:
        self.n = n
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        self.port = dict(zip(pairs, free_ports(len(pairs)), strict=True))
        self.target: dict[int, int] = {}
        self.cut_members: set[int] = set()
        self.live: dict[tuple[int, int], list[trio.SocketStream]] = {p: [] for p in pairs}

    def address(self, i: int, j: int, port_j: int) -> str:
        self.target[j] = port_j
        return f"127.0.0.1:{self.port[(i, j)]}"

    def cut(self, member: int) -> None:
        self.cut_members.add(member)
        for (i, j), streams in self.live.items():
            if member in (i, j):
                for s in streams:
                    s.socket.close()
                streams.clear()

    def heal(self, member: int) -> None:
        self.cut_members.discard(member)

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for pair, port in self.port.items():
                listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
                nursery.start_soon(trio.serve_listeners,
                                   lambda s, pair=pair: self._forward(pair, s), listeners)
            task_status.started()

    async def _forward(self, pair: tuple[int, int], inbound: trio.SocketStream) -> None:
        i, j = pair
        if i in self.cut_members or j in self.cut_members:
            await inbound.aclose()
            return
        try:
            outbound = await trio.open_tcp_stream("127.0.0.1", self.target[j])
        except OSError:
            await inbound.aclose()
            return
        self.live[pair] += [inbound, outbound]

        async def pump(a: trio.SocketStream, b: trio.SocketStream) -> None:
            try:
                while data := await a.receive_some(65536):
                    await b.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, inbound, outbound)
            nursery.start_soon(pump, outbound, inbound)
        for s in (inbound, outbound):
            if s in self.live[pair]:
                self.live[pair].remove(s)
            await trio.aclose_forcefully(s)


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "coalitiond", "run", "--config", str(config)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


async def _caught_up(client: CommitteeClient, member: bytes, height: int) -> None:
    """Event-driven: the member holds a `wait` request until it has `height` (or 10 s)."""
    while True:
        reply = await client.blocks(height, max_blocks=1, wait=True, member=member)
        if reply.tip_height >= height:
            return


async def test_committee_survives_kill_stop_and_cut_links(tmp_path: Path) -> None:
    board = Switchboard(N)
    committee = write_committee(tmp_path, N, address_of=board.address)
    spec = committee.member_config(0).committee_spec()
    procs = [_start(committee.configs[i], tmp_path / f"member-{i}.log") for i in range(N)]
    acknowledged: list[bytes] = []
    signer = EnvelopeSigner(committee.operator, spec.committee_id, 1)
    nonce = itertools.count()
    try:
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                await nursery.start(board.serve)
                # The test's deadline bounds the whole run; the client keeps none of its own
                # (five processes start on a busy machine before any link is up).
                async with CommitteeClient.open(committee.client_config(),
                                                connect_timeout=None,
                                                reply_timeout=None) as client:
                    await client.manager.wait_until(lambda: len(client.members()) == N)
                    peers = list(spec.members)

                    async def load(k: int, avoid: set[int]) -> int:
                        """Submit k commands to members not in `avoid`; all must finalise."""
                        top = 0
                        for _ in range(k):
                            target = next(p for idx, p in enumerate(peers) if idx not in avoid
                                          and p in client.members())
                            env = signer.sign([publish("fault", {"n": next(nonce)})])
                            ack, outcome = await client.submit(env.raw, member=target)
                            assert ack.accepted, ack.reason
                            assert outcome is not None
                            acknowledged.append(ack.envelope_id)
                            top = max(top, outcome.height)
                        return top

                    await load(5, set())

                    # kill -9 member 1: q = 4 of 5 keep finalising.
                    procs[1].send_signal(signal.SIGKILL)
                    procs[1].wait()
                    top = await load(5, {1})
                    procs[1] = _start(committee.configs[1], tmp_path / "member-1.log")
                    await client.manager.wait_until(lambda: peers[1] in client.members())
                    await _caught_up(client, peers[1], top)

                    # SIGSTOP member 2, then SIGCONT: it catches up.
                    procs[2].send_signal(signal.SIGSTOP)
                    top = await load(5, {2})
                    procs[2].send_signal(signal.SIGCONT)
                    await client.manager.wait_until(lambda: peers[2] in client.members())
                    await _caught_up(client, peers[2], top)

                    # Cut every link of member 3 for a while, then heal.
                    board.cut(3)
                    top = await load(5, {3})
                    board.heal(3)
                    await _caught_up(client, peers[3], top)
                    top = await load(3, set())
                    for p in peers:
                        await _caught_up(client, p, top)
                nursery.cancel_scope.cancel()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0] * N, f"members exited with {codes} (logs in {tmp_path})"

    archives = []
    for i in range(N):
        archive = tmp_path / f"member-{i}.archive"
        for cmd in (["export", "--data-dir", str(tmp_path / f"member-{i}-data"), "--out",
                     str(archive)], ["verify", "--archive", str(archive)]):
            r = subprocess.run([sys.executable, "-m", "coalitiond", *cmd], capture_output=True,
                               text=True, check=False, env=os.environ.copy())
            assert r.returncode == 0, f"member {i}: {cmd[0]}: {r.stdout}{r.stderr}"
        archives.append(archive)
    for a, b in itertools.combinations(archives, 2):
        r = subprocess.run([sys.executable, "-m", "coalitiond", "verify", "--archive", str(a),
                            "--against", str(b)], capture_output=True, text=True, check=False)
        assert r.returncode == 0, f"{a.name} vs {b.name}: {r.stdout}{r.stderr}"

    store = Store.open(store_path(tmp_path / "member-0-data"))
    try:
        logged = Counter(Envelope.decode(c).envelope_id
                         for fb in store.iter_finalized() for c in fb.block.commands)
    finally:
        store.close()
    missing = [e.hex()[:16] for e in acknowledged if logged[e] != 1]
    assert not missing, f"acknowledged but not logged exactly once: {missing}"
