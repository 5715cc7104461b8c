"""Drivers' defences: a follower never trusts the member it reads from, never dies of it,
and a stamp is voted for only when this member verified exactly that Almanac block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from node_harness import all_reach, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import Acl, Envelope
from coalitiond.commands.member import MemberCommand
from coalitiond.components.executor import STAMP_OP, Executor, Stamp
from coalitiond.components.feed.component import Feed
from coalitiond.config import load_config
from coalitiond.consensus.events import CommandSubmitted
from coalitiond.consensus.types import Block, Certificate, Vote, VoteKind, genesis_block
from coalitiond.log.records import FinalizedBlock
from coalitiond.node import wire
from coalitiond.node.drivers import AlmanacFollower, Driver
from coalitiond.node.member import Member
from coalitiond.primitives.errors import RemoteError

pytestmark = pytest.mark.live


class Almanac:
    def __init__(self, tmp_path: Path) -> None:
        self.committee = write_committee(tmp_path / "almanac", 3, component="almanac")
        self.config = load_config(self.committee.configs[0], check_key=False)
        self.spec = self.config.committee_spec()

    def certified(self, height: int, parent: bytes) -> FinalizedBlock:
        block = Block(self.spec.epoch, height, height, parent, 0, (), height - 1, b"\x00" * 32)
        votes = [Vote.sign(k, self.spec, i, VoteKind.FINALIZE, block.view, block.digest)
                 for i, k in enumerate(self.committee.keys)][:self.spec.quorum]
        return FinalizedBlock(block, Certificate.from_votes(votes), None, tuple(votes), "")


def follower(almanac: Almanac) -> AlmanacFollower:
    ours = Executor(b"\x33" * 32, Acl.allow([]), Feed([b"\x01" * 32]),
                    follow_almanac=almanac.spec.committee_id)
    return AlmanacFollower(almanac.committee.keys[0], ours, almanac.config, almanac.spec)


class Answers:
    """A member that answers every blocks? with what the test gives it."""

    def __init__(self, blocks: list[FinalizedBlock]) -> None:
        self.blocks = blocks
        self.asked: list[int] = []

    async def blocks_(self, start: int, max_blocks: int, wait: bool) -> wire.Blocks:
        self.asked.append(start)
        out, self.blocks = self.blocks, []
        if not out:
            await trio.sleep_forever()
        return wire.Blocks(1, 99, tuple(out))


async def test_a_certified_block_that_skips_ahead_is_refused_not_applied(tmp_path: Path) -> None:
    almanac = Almanac(tmp_path)
    f = follower(almanac)
    # A genuine certified block, but of height 3 when height 1 was asked for.
    answers = Answers([almanac.certified(3, b"\x09" * 32)])
    client: Any = type("C", (), {"blocks": answers.blocks_})()
    with pytest.raises(RemoteError, match="does not link"):
        await f._follow(client)
    assert answers.asked == [1] and f.replay.executed_height == 0


async def test_linked_blocks_are_replayed_and_remembered(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    almanac = Almanac(tmp_path)
    f = follower(almanac)
    first = almanac.certified(1, genesis_block(almanac.spec).digest)
    second = almanac.certified(2, first.block.digest)
    answers = Answers([first, second])
    client: Any = type("C", (), {"blocks": answers.blocks_})()
    with trio.move_on_after(1):  # virtual time: the member then has nothing more to say
        await f._follow(client)
    assert f.replay.executed_height == 2
    assert f.verified[2] == (second.block.digest, None)  # no tick yet


def test_stamps_are_voted_for_only_when_verified_here(tmp_path: Path) -> None:
    almanac = Almanac(tmp_path)
    f = follower(almanac)
    f.verified[5] = (b"\x05" * 32, 2)

    def stamp(seq: int, height: int, block: bytes) -> MemberCommand:
        return MemberCommand.make(b"\x33" * 32, STAMP_OP,
                                  Stamp(almanac.spec.committee_id, seq, height, block).to_args())

    assert f.vote_check(stamp(2, 5, b"\x05" * 32)) is None
    assert "not verified here" in (f.vote_check(stamp(2, 6, b"\x05" * 32)) or "")
    assert "the stamp says" in (f.vote_check(stamp(3, 5, b"\x05" * 32)) or "")
    assert "the stamp says" in (f.vote_check(stamp(2, 5, b"\x06" * 32)) or "")


# -- a command no honest member would vote for never stalls the committee ----------------


class RefuseMarked(Driver):
    """Stands in for a vote-time check (e.g. a provider quote failing DCAP here): refuses
    every envelope whose first command publishes kind "poison"."""

    checks_envelopes = True

    def __init__(self, refusals: list[bytes]) -> None:
        self.refusals = refusals

    def vote_check(self, command: Any) -> str | None:
        if isinstance(command, Envelope) and command.commands[0].args.get("kind") == "poison":
            self.refusals.append(command.envelope_id)
            return "poison: refused by this member's check"
        return None


async def test_a_refused_command_is_not_queued_and_never_stalls_proposals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Member._build_drivers
    refusals: list[bytes] = []
    monkeypatch.setattr(Member, "_build_drivers",
                        lambda self: [*original(self), RefuseMarked(refusals)])
    committee = write_committee(tmp_path / "c", 3)
    spec = committee.member_config(0).committee_spec()
    signer = EnvelopeSigner(committee.operator, spec.committee_id)
    poison = signer.sign([publish("poison", 1)]).raw
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client:
            ack, _ = await client.submit(poison, wait=False)
            assert not ack.accepted and ack.reason == "poison: refused by this member's check"
            assert len(refusals) == 1  # at submission, by the member the client reached
            # A member that queued it anyway (as if its own check had passed at the time,
            # e.g. collateral that expired since) proposes it; nobody votes for that block,
            # every member drops it from its batch, and the committee carries on.
            for member in running.members():
                assert member.core is not None
                member.core.step(CommandSubmitted(poison))
            for k in range(3):
                ack, outcome = await client.submit(signer.sign([publish("k", k)]).raw)
                assert ack.accepted and outcome is not None
            await all_reach(running.members(), outcome.height)
            for member in running.members():
                assert member.core is not None and member.core.pending_commands == 0
            # The poisoned proposal was made and refused: checks after the injection are
            # checks of a proposal carrying it (the submission path was bypassed) ...
            assert len(refusals) > 1
            # ... and no member's log holds it.
            for member in running.members():
                commands = await member.store.run(
                    lambda s: [c for h in range(1, s.height + 1) for c in s.block(h).commands])
                assert commands and poison not in commands
