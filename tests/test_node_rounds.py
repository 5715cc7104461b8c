"""The consensus loop's rounds (Member._round) step every queued input and commit once
before sending: no signature may leave a member before its guard record is durable.

Real members in one process over loopback Noise links, real SQLite files. The store and the
router are wrapped to log, in one global order, every commit (with the guard records it made
durable) and every consensus message sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from node_harness import all_reach, client_for, in_process, write_committee

from coalitiond.client_commands import EnvelopeSigner, publish
from coalitiond.committee import CommitteeSpec
from coalitiond.consensus.messages import (
    Finalization,
    Message,
    Notarization,
    Nullification,
    Proposal,
    decode_message,
)
from coalitiond.consensus.statements import SignedKind
from coalitiond.consensus.types import Vote
from coalitiond.store.sqlite import Store
from coalitiond.transport.router import Channel, Router

#: (event, owner object id, payload): "durable" with the guard records a commit made
#: durable, "sent" with the encoded consensus message.
Log = list[tuple[str, int, Any]]


def _signed_by(msg: Message, member: int) -> set[tuple[int, int, bytes]]:
    """The (view, signed kind, digest) statements of `member` that `msg` carries."""
    if isinstance(msg, Vote):
        return {(msg.view, int(SignedKind.of_vote(msg.kind)), msg.digest)} \
            if msg.signer == member else set()
    if isinstance(msg, Proposal):
        b = msg.block
        return {(b.view, int(SignedKind.PROPOSE), b.digest)} if b.proposer == member else set()
    if isinstance(msg, Notarization | Finalization | Nullification):
        cert = msg.certificate
        if member in cert.signers():
            return {(cert.view, int(SignedKind.of_vote(cert.kind)), cert.digest)}
    return set()


def _instrument(monkeypatch: pytest.MonkeyPatch, log: Log) -> None:
    def durable(name: str) -> Callable[..., Any]:
        original = getattr(Store, name)

        def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)  # returns once COMMIT (fsync) did
            guard: Sequence[Any] = kwargs.get("guard", ())
            log.append(("durable", id(self), [(g.view, int(g.kind), g.digest) for g in guard]))
            return result

        return wrapper

    for name in ("record_event", "append_blocks"):
        monkeypatch.setattr(Store, name, durable(name))

    def sent(name: str) -> Callable[..., Any]:
        original = getattr(Router, name)

        def wrapper(self: Router, channel: Channel, *args: Any) -> Any:
            if channel is Channel.CONSENSUS:
                log.append(("sent", id(self), args[-1]))
            return original(self, channel, *args)

        return wrapper

    for name in ("send_nowait", "broadcast_nowait", "send", "broadcast"):
        monkeypatch.setattr(Router, name, sent(name))


async def test_no_signature_leaves_before_its_guard_record_is_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log: Log = []
    _instrument(monkeypatch, log)
    committee = write_committee(tmp_path, 4)
    spec: CommitteeSpec = committee.member_config(0).committee_spec()
    signer = EnvelopeSigner(committee.operator, spec.committee_id, 1)
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client:
            members = running.members()
            # Bursts of submissions to every member, so rounds hold several inputs; each
            # burst waits for its outcomes, so the run spans many views.
            for burst in range(8):
                async with trio.open_nursery() as nursery:
                    for k in range(6):
                        envelope = signer.sign([publish("round", {"burst": burst, "k": k})])
                        nursery.start_soon(partial(client.submit, envelope.raw,
                                                   member=client.members()[k % 4]))
            top = max(m.height for m in members)
            await all_reach(members, top)
            owner_of_store = {id(m.store.sync): m.me for m in members if m.store is not None}
            owner_of_router = {id(m.manager.router): m.me for m in members
                               if m.manager is not None}

    durable: dict[int, set[tuple[int, int, bytes]]] = {i: set() for i in range(committee.n)}
    checked = 0
    for event, owner, payload in log:
        if event == "durable":
            member = owner_of_store.get(owner)
            if member is not None:
                durable[member].update(payload)
            continue
        member = owner_of_router.get(owner)
        if member is None:
            continue
        statements = _signed_by(decode_message(spec, payload), member)
        missing = statements - durable[member]
        assert not missing, f"member {member} sent {missing} before its guard was durable"
        checked += len(statements)
    assert top >= 8 and checked > 100, f"too little traffic to show anything ({checked})"


async def test_the_log_keeps_finalise_votes_that_arrive_after_the_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    committee = write_committee(tmp_path, 4)  # q = 3
    spec: CommitteeSpec = committee.member_config(0).committee_spec()
    signer = EnvelopeSigner(committee.operator, spec.committee_id, 1)
    # Member 3's finalise votes leave only after its next broadcast: the other three
    # finalise (and store) each block without it, and get its vote afterwards.
    slow: list[int] = []
    held: list[bytes] = []
    original = Router.broadcast_nowait

    def broadcast_nowait(self: Router, channel: Channel, payload: bytes) -> int:
        if slow and id(self) == slow[0] and channel is Channel.CONSENSUS:
            msg = decode_message(spec, payload)
            if isinstance(msg, Vote) and msg.kind.name == "FINALIZE":
                held.append(payload)
                return committee.n - 1
            sent = original(self, channel, payload)
            while held:
                original(self, channel, held.pop(0))
            return sent
        return original(self, channel, payload)

    monkeypatch.setattr(Router, "broadcast_nowait", broadcast_nowait)
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client:
            members = running.members()
            assert members[3].manager is not None
            slow.append(id(members[3].manager.router))
            start = max(m.height for m in members) + 1
            for k in range(8):
                envelope = signer.sign([publish("late", {"k": k})])
                ack, outcome = await client.submit(envelope.raw,
                                                   member=client.members()[k % 3])
                assert ack.accepted and outcome is not None
            top = max(m.height for m in members)
            await all_reach(members, top + 3)  # later commits carry the late votes
            store = members[0].store
            assert store is not None
            signers = await store.run(lambda s: [
                sorted(v.signer for v in fb.votes if v.kind.name == "FINALIZE")
                for fb in s.iter_finalized(start, top)])
    # Member 0 stored each block with the quorum's votes; member 3's came later and the
    # log holds it too.
    assert len(signers) >= 8 and all(s == [0, 1, 2, 3] for s in signers), signers
