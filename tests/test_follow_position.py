"""A follower keeps its position (a snapshot of its replica of the followed committee every
K blocks) and a restart resumes from it instead of replaying the followed log from genesis;
a damaged position file is passed over, and one whose roots the followed chain does not
certify stops the replica (which then starts over from genesis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from node_harness import write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import Acl
from coalitiond.components.executor import Executor
from coalitiond.components.feed.component import Feed
from coalitiond.config import load_config
from coalitiond.consensus.types import (
    NOTHING_EXECUTED,
    ZERO_DIGEST,
    Block,
    Certificate,
    CertifiedRoots,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.log.records import FinalizedBlock
from coalitiond.node import wire
from coalitiond.node.drivers import CommitteeFollower
from coalitiond.node.snapshots import SnapshotFile, SnapshotRefused, SnapshotStore


class Followed:
    """A feed committee's certified chain whose blocks claim the true roots (lag one)."""

    def __init__(self, tmp_path: Path) -> None:
        self.committee = write_committee(tmp_path / "followed", 3, component="feed")
        self.config = load_config(self.committee.configs[0], check_key=False)
        self.spec = self.config.committee_spec()
        self.signer = EnvelopeSigner(self.committee.operator, self.spec.committee_id)
        self.head = genesis_block(self.spec)
        self.roots = NOTHING_EXECUTED
        self.blocks: list[FinalizedBlock] = []
        self.log_size = 0

    def grow(self, count: int, reference: Executor) -> None:
        """`reference`: the one replica that computes the true roots (the same each call)."""
        for _ in range(count):
            height = self.head.height + 1
            commands = (self.signer.sign([publish("k", height)]).raw,)
            block = Block.with_roots(self.spec.epoch, height, height, self.head.digest,
                                     self.spec.leader(height), commands, self.roots)
            votes = [Vote.sign(k, self.spec, i, VoteKind.FINALIZE, block.view, block.digest)
                     for i, k in enumerate(self.committee.keys)][:self.spec.quorum]
            self.blocks.append(FinalizedBlock(block, Certificate.from_votes(votes), None,
                                              tuple(votes), ""))
            root = reference.apply_block(height, block.digest, commands).state_root
            self.log_size += 1
            self.roots = CertifiedRoots(height, root, self.log_size, ZERO_DIGEST)
            self.head = block


class Done(Exception):
    """The fake member has nothing more to hand out."""


class Answers:
    """A member that hands out the given blocks from the height asked, then ends the
    follower's loop (Done)."""

    def __init__(self, blocks: list[FinalizedBlock]) -> None:
        self.all = blocks
        self.asked: list[int] = []

    async def blocks(self, start: int, max_blocks: int, wait: bool) -> wire.Blocks:
        self.asked.append(start)
        out = [fb for fb in self.all if start <= fb.block.height < start + max_blocks]
        if not out:
            raise Done
        await trio.lowlevel.checkpoint()
        return wire.Blocks(1, 99, tuple(out))


def follower(f: Followed, position: SnapshotStore) -> CommitteeFollower:
    ours = Executor(b"\x33" * 32, Acl.allow([]), Feed([b"\x01" * 32]))
    return CommitteeFollower(f.committee.keys[0], ours, f.config, f.spec, position=position,
                             position_interval=5)


async def follow(follower_: CommitteeFollower, blocks: list[FinalizedBlock]) -> Answers:
    answers = Answers(blocks)
    client: Any = type("C", (), {"blocks": answers.blocks})()
    with pytest.raises(Done):
        await follower_._follow(client)
    return answers


@pytest.fixture
def followed(tmp_path: Path) -> Followed:
    return Followed(tmp_path)


async def test_a_restarted_follower_resumes_from_its_position(
        followed: Followed, tmp_path: Path) -> None:
    position = SnapshotStore(tmp_path / "position", keep=3)
    first = follower(followed, position)
    reference = first._fresh_replay()
    followed.grow(12, reference)
    await follow(first, followed.blocks)
    assert first.replay.executed_height == 12
    assert position.heights() == [10, 5]

    followed.grow(3, reference)
    again = follower(followed, position)
    again.resume()
    assert again.replay.executed_height == 10
    answers = await follow(again, followed.blocks)
    assert answers.asked[0] == 11  # not 1: nothing before the position is read again
    assert again.replay.executed_height == 15
    assert again.replay.state_root() == followed.roots.state_root
    assert again._unconfirmed is None  # block 11 certified the roots at 10


async def test_a_damaged_position_is_passed_over(
        followed: Followed, tmp_path: Path) -> None:
    position = SnapshotStore(tmp_path / "position", keep=3)
    first = follower(followed, position)
    followed.grow(12, first._fresh_replay())
    await follow(first, followed.blocks)
    path = position.path(10)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    again = follower(followed, position)
    again.resume()
    assert again.replay.executed_height == 5
    answers = await follow(again, followed.blocks)
    assert answers.asked[0] == 6
    assert again.replay.state_root() == followed.roots.state_root


async def test_a_position_the_followed_chain_does_not_certify_is_refused(
        followed: Followed, tmp_path: Path) -> None:
    position = SnapshotStore(tmp_path / "position", keep=3)
    first = follower(followed, position)
    followed.grow(12, first._fresh_replay())
    await follow(first, followed.blocks)
    # Intact and consistent in itself, but it says one entry more than the chain certifies.
    honest = position.read(10)
    r = honest.roots
    position.write(SnapshotFile(honest.committee_id, honest.block,
                                CertifiedRoots(r.height, r.state_root, r.log_size + 1,
                                               r.log_root), honest.executor))
    again = follower(followed, position)
    again.resume()
    assert again.replay.executed_height == 10
    with pytest.raises(SnapshotRefused, match="block 11 certifies"):
        await follow(again, followed.blocks)
