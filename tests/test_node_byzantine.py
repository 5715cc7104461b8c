"""Members facing a Byzantine peer or an abusive reader: none of these may stop an honest
member, and nothing unverified may reach its log (regressions of a review's findings)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
from node_harness import all_reach, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.consensus.messages import Message, Proposal, encode_message
from coalitiond.consensus.root_evidence import WRONG_ROOT_KIND, WrongRoot
from coalitiond.consensus.types import Vote, VoteKind
from coalitiond.log.records import FinalizedBlock
from coalitiond.node.member import Member
from coalitiond.testing.byzantine_member import behave
from coalitiond.transport.router import Channel

pytestmark = pytest.mark.live


def _send_raw(member: Member, msg: Message) -> None:
    """What a Byzantine member can do: sign anything and send it to every member."""
    assert member.manager is not None
    router = member.manager.router
    frame = router._frame(Channel.CONSENSUS, encode_message(member.committee, msg))
    for peer, link in list(member.manager.links.items()):
        if peer in member.committee.members:
            link.enqueue(frame)


async def test_a_vote_naming_a_known_digest_under_another_view_is_harmless(
        tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    with trio.fail_after(120):
        async with in_process(committee) as running:
            members = running.members()
            await all_reach(members, 3)
            byzantine = members[0]
            honest_observe = byzantine.seen.observe

            def observe(msg: Message) -> None:
                # For every proposal, a validly signed vote for the same digest, wrong view.
                if isinstance(msg, Proposal):
                    b = msg.block
                    for kind in (VoteKind.FINALIZE, VoteKind.NOTARIZE):
                        _send_raw(byzantine, Vote.sign(byzantine.key, byzantine.committee,
                                                       byzantine.me, kind, b.view + 1, b.digest))
                honest_observe(msg)

            byzantine.seen.observe = observe  # type: ignore[method-assign]
            target = max(m.height for m in members) + 5
            await all_reach(members[1:], target)
            for m in members[1:]:
                assert m.store is not None
                summary = await m.store.run(lambda s: s.audit())
                assert summary.blocks >= target


def _poison(mode: str) -> Any:
    def tamper(blocks: list[FinalizedBlock]) -> list[FinalizedBlock]:
        out = list(blocks)
        if mode == "certificate of the next block":
            for i in range(len(out) - 1):
                if out[i + 1].finalization is not None:
                    out[i] = dataclasses.replace(out[i], finalization=out[i + 1].finalization)
        for i, fb in enumerate(out):
            if mode == "vote for another digest":
                bad = Vote(VoteKind.NOTARIZE, fb.block.epoch, fb.block.view, b"\x42" * 32, 3,
                           b"\x00" * 64)
                out[i] = dataclasses.replace(fb, votes=(*fb.votes, bad))
            elif mode == "garbage signatures":
                out[i] = dataclasses.replace(fb, votes=tuple(
                    dataclasses.replace(v, signature=b"\x01" * 64) for v in fb.votes))
        return out
    return tamper


@pytest.mark.parametrize("mode", ["vote for another digest", "garbage signatures",
                                  "certificate of the next block"])
async def test_catch_up_keeps_only_what_verifies(tmp_path: Path, mode: str) -> None:
    committee = write_committee(tmp_path, 4)
    with trio.fail_after(120):
        async with in_process(committee, start=[0, 1, 2]) as running:
            serving = running.members()
            await all_reach(serving, 5)
            tamper = _poison(mode)
            altered: list[int] = []  # heights of blocks served changed, across all peers
            for m in serving:  # every peer serves poisoned catch-up replies
                assert m.resolver is not None
                honest_read = m.resolver.read_blocks

                def read(s: Any, start: int, count: int, limit: int,
                         honest_read: Any = honest_read) -> list[FinalizedBlock]:
                    honest = honest_read(s, start, count, limit)
                    served = tamper(honest)
                    altered.extend(h.block.height for h, t in zip(honest, served, strict=True)
                                   if h != t)
                    return served

                m.resolver.read_blocks = read  # type: ignore[method-assign]
            late = await running.start(3)
            await all_reach([late], 8)
            assert late.store is not None
            summary = await late.store.run(lambda s: s.audit())  # raises on any bad signature
            assert summary.blocks >= 8
            # The late member was served tampered blocks (else this test shows nothing).
            assert altered, f"mode {mode!r} changed no block served to the late member"


async def test_a_reader_asking_for_more_than_fits_gets_what_fits(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    spec = committee.member_config(0).committee_spec()
    signer = EnvelopeSigner(committee.operator, spec.committee_id, 1)
    # ~60 KiB envelopes: 80 of them are more than one transport message can carry.
    envelopes = [signer.sign([publish("k", {"x": "a" * 480, "k": k, "j": j})
                              for j in range(120)]).raw for k in range(80)]
    with trio.fail_after(180):
        async with in_process(committee) as running, client_for(committee) as client:
            target = client.members()[0]
            heights: list[int] = []

            async def submit(raw: bytes) -> None:
                _, outcome = await client.submit(raw, member=target)
                assert outcome is not None
                heights.append(outcome.height)

            async with trio.open_nursery() as nursery:
                for raw in envelopes:
                    nursery.start_soon(submit, raw)
            reply = await client.blocks(1, max_blocks=256, member=target)
            assert reply.blocks and reply.blocks[0].height == 1
            assert reply.blocks[-1].height < max(heights), "the reply should have been capped"
            # The member is alive and still finalising.
            await all_reach(running.members(), max(heights) + 2)


async def test_a_leader_claiming_wrong_roots_is_refused_and_honest_members_never_diverge(
        tmp_path: Path) -> None:
    """Issue #14, hole 1, with real members: member 0's proposals claim a wrong state root
    for the height it executed. Honest voters refuse them (waiting first if they have not
    executed that height), record wrong-root evidence against member 0, keep finalising on
    the other leaders' views and stay ready; before roots were checked, every honest member
    notarised such a block and went into divergence when it executed the height."""
    committee = write_committee(tmp_path, 4)
    with trio.fail_after(120):
        async with in_process(committee) as running:
            members = running.members()
            await all_reach(members, 3)
            byzantine = members[0]
            assert byzantine.voter is not None
            behave(byzantine.voter, "bad-root")
            honest = members[1:]
            target = max(m.height for m in members) + 12  # spans several of member 0's views
            await all_reach(honest, target)
            for m in honest:
                assert m.diverged is None and m.ready
                assert m.store is not None
                records = await m.store.run(lambda s: s.evidence())
                wrong = [r for r in records if r.kind == WRONG_ROOT_KIND]
                assert wrong and all(r.member == 0 for r in wrong)
                for r in wrong:
                    WrongRoot.decode(r.body).verify(m.committee)
                await m.store.run(lambda s: s.audit())
            # Every finalised block's roots are the ones the honest members executed.
            assert honest[0].store is not None
            blocks = await honest[0].store.run(
                lambda s: [s.block(h) for h in range(1, s.height + 1)])
            claimed = {b.executed_height: b.roots for b in blocks if b.executed_height}
            assert all(honest[0].core is not None and
                       honest[0].core._roots.get(h, r) == r for h, r in claimed.items())
