"""Confluence members over real citizen feed committees (real TCP, signatures, SQLite): each
member follows every citizen's certified log, the leader proposes ingests and record
commits, the others vote only for what their own replicas show; a citizen that stops holds up
only the slots that need it (stall mode) and is followed again once it is back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio
from node_harness import Committee, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.components.confluence.component import Confluence
from coalitiond.components.executor import CommandOutcome
from coalitiond.node.member import Member

T = b"\x42" * 20


def confluence_committee(dir: Path, citizens: list[Committee], kind: str,
                         almanac: Committee | None = None) -> Committee:
    c = write_committee(dir, 3, component=kind)
    ids = [cit.member_config(0).committee_spec().committee_id for cit in citizens]
    paths = [cit.configs[0] for cit in citizens]
    partial = ""
    if almanac is not None:
        aid = almanac.member_config(0).committee_spec().committee_id
        partial = ('failure_mode = "partial"\npartial_deadline_ticks = 3\n'
                   f'follow_almanac = "{aid.hex()}"\n')
    for path in c.configs:
        text = path.read_text()
        text = text[:text.index("[component]")] + "[component]\n" + partial + "".join(
            f'[[component.citizens]]\nstable_id = "{i.hex()}"\n' for i in ids)
        if almanac is not None:
            text = text.replace("[node]\n", f'[node]\nalmanac_config = "{almanac.configs[0]}"\n',
                                1)
        text = re.sub(r"(\nlog_level = [^\n]*\n)", "\\1citizen_configs = ["
                      + ", ".join(f'"{p}"' for p in paths) + "]\nsnapshot_interval = 2\n",
                      text, count=1)
        path.write_text(text)
    return c


SIGNERS: dict[Path, EnvelopeSigner] = {}


async def publish_all(committee: Committee, items: list[tuple[str, Any]]) -> None:
    spec = committee.member_config(0).committee_spec()
    signer = SIGNERS.setdefault(committee.dir, EnvelopeSigner(committee.operator,
                                                              spec.committee_id))
    async with client_for(committee) as client:
        for kind, body in items:
            ack, outcome = await client.submit(signer.sign([publish(kind, body)]).raw)
            assert ack.accepted and outcome is not None
            assert CommandOutcome.from_wire(outcome.outcomes[0]).status == "applied"


def component(m: Member) -> Confluence:
    assert isinstance(m.component, Confluence)
    return m.component


def intent(n: int, slot: int) -> tuple[str, Any]:
    return ("intent", {"intent_id": bytes([n]) * 32, "origin": b"\x01" * 20,
                       "targets": [[T, slot]]})


async def test_a_confluence_follows_its_citizens_through_a_citizen_stall(tmp_path: Path) -> None:
    a = write_committee(tmp_path / "a", 3)
    b = write_committee(tmp_path / "b", 4)  # q = 3: two members down stall it
    conf = confluence_committee(tmp_path / "intents", [a, b], "intents")
    with trio.fail_after(240):
        async with in_process(a), in_process(b) as cb, in_process(conf) as cc:
            await publish_all(a, [intent(1, 5), ("slot", {"slot": 5})])
            await publish_all(b, [intent(2, 5), ("slot", {"slot": 5})])
            for m in cc.members():
                await m.wait_until(lambda m: component(m).committed_count >= 1)
            # Citizen b stalls (two of its four members stop): slot 6 cannot be final
            # (stall mode), a is still read.
            for i in (2, 3):
                await cb.stop(i)
            await publish_all(a, [intent(3, 6), ("slot", {"slot": 6})])
            for m in cc.members():
                await m.wait_until(lambda m: component(m).positions[0][2] == 4)
            assert all(component(m).committed_count == 1 for m in cc.members())
            # b is back (the two restart on their own data) and passes slot 6: the route is
            # committed.
            for i in (2, 3):
                await cb.start(i)
            await publish_all(b, [("slot", {"slot": 6})])
            for m in cc.members():
                await m.wait_until(lambda m: component(m).committed_count >= 2)
            roots = {m.executor.state_root() for m in cc.members()
                     if m.height == cc.members()[0].height}
            assert len(roots) == 1
            # A confluence member restarts: it resumes each citizen from its position files
            # (at or below what the confluence committed) and keeps voting for ingests.
            follow = conf.member_config(2).node.data_dir / "follow"
            assert sorted(p.name for p in follow.iterdir()) == sorted(
                c.member_config(0).committee_spec().committee_id.hex() for c in (a, b))
            await cc.stop(2)
            await publish_all(a, [intent(4, 7), ("slot", {"slot": 7})])
            await publish_all(b, [intent(5, 7), ("slot", {"slot": 7})])
            await cc.start(2)
            for m in cc.members():
                await m.wait_until(lambda m: component(m).committed_count >= 3)
            top = max(m.height for m in cc.members())
            for m in cc.members():
                await m.wait_until(lambda m: m.height >= top)
            assert len({m.executor.state_root() for m in cc.members()
                        if m.height == top}) == 1


async def test_a_follower_waiting_on_a_member_that_restarts_asks_again_at_once(
        tmp_path: Path) -> None:
    """A `wait` blocks request to a member that goes away ends when the link does, not after
    the reply timeout (40 s): a restarted citizen member never answers the old request."""
    from coalitiond.node.client import CommitteeClient
    from coalitiond.primitives.errors import OperatorError

    a = write_committee(tmp_path / "a", 3)
    config = a.member_config(0)
    spec = config.committee_spec()
    async with in_process(a) as ca:
        connect = [(m.address.host, m.address.port) for m in config.committee.members]
        async with CommitteeClient.connect(a.operator, spec, connect) as client:
            with trio.fail_after(30):
                await client.manager.wait_until(lambda: len(client.members()) == 3)
            target = client.members()[0]
            index = spec.members.index(target)
            with trio.fail_after(20):  # REPLY_TIMEOUT_S + BLOCKS_WAIT_S = 40 without the rule
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ca.stop, index)
                    try:
                        await client.blocks(10, wait=True, member=target)
                        raise AssertionError("a block 10 that nobody published")
                    except OperatorError as exc:
                        assert "went away before its blocks reply" in str(exc) \
                            or "is not reachable" in str(exc)


async def test_partial_mode_commits_without_a_stalled_citizen_after_the_tick_deadline(
        tmp_path: Path) -> None:
    # A single-member Almanac and citizen b keep the process light.
    # Ticks at the default 1 s: a stamp is proposed once its tick has been the latest for
    # STAMP_SETTLE_S, so intervals below that starve stamps (node/drivers.py).
    almanac = write_committee(tmp_path / "almanac", 1, component="almanac")
    a = write_committee(tmp_path / "a", 3)
    b = write_committee(tmp_path / "b", 1)  # never publishes: stalled for slot purposes
    conf = confluence_committee(tmp_path / "intents", [a, b], "intents", almanac)
    with trio.fail_after(120):
        async with in_process(almanac), in_process(a), in_process(b), \
                in_process(conf) as cc:
            await publish_all(a, [intent(1, 5), ("slot", {"slot": 5})])
            for m in cc.members():
                await m.wait_until(lambda m: component(m).committed_count >= 1)
            for m in cc.members():
                c = component(m)
                assert c.positions[1][2] == 0 and c.watermarks == [5, None]
                assert m.executor.stamp is not None
                assert c.committed_count == 1 and not c.pending


def test_a_citizen_follower_resumes_at_or_below_the_committed_position(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A position file past the citizen height the confluence committed would lack the
    digests of blocks not ingested yet: such files are never resumed from."""
    from coalitiond.commands.envelope import Acl
    from coalitiond.components.confluence.intents import Intents
    from coalitiond.components.executor import Executor
    from coalitiond.node.confluence import CitizenFollower
    from coalitiond.node.drivers import CommitteeFollower
    from coalitiond.node.snapshots import SnapshotStore

    a = write_committee(tmp_path / "a", 3)
    cfg = a.member_config(0)
    spec = cfg.committee_spec()
    confluence = Intents([spec.committee_id])
    executor = Executor(b"\x01" * 32, Acl.allow([]), confluence)
    follower = CitizenFollower(a.keys[0], executor, 0, cfg, spec,
                               position=SnapshotStore(tmp_path / "pos", 3), position_interval=2)
    monkeypatch.setattr(CommitteeFollower, "resume_heights", lambda self: [6, 4, 2])
    confluence.positions[0] = [5, b"\x00" * 32, 3]
    assert follower.resume_heights() == [4, 2]
    confluence.positions[0] = [1, b"\x00" * 32, 0]
    assert follower.resume_heights() == []
