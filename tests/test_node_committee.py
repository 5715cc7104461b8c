"""A committee of real members in one process: real TCP on loopback, real SQLite files,
real signatures. Waits are event-driven (finalisations, link changes), never fixed sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from node_harness import all_reach, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import Envelope
from coalitiond.components.executor import CommandOutcome
from coalitiond.log.chain import ChainVerifier
from coalitiond.log.sqlite import Store, store_path
from coalitiond.node.client import RefusedByMember
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode
from coalitiond.verify import verify_inclusion

pytestmark = pytest.mark.live


def _signer(committee_id: bytes, key: SigningKey, nonce: int = 1) -> EnvelopeSigner:
    return EnvelopeSigner(key, committee_id, nonce)


def _heads(dir: Path, n: int) -> list[list[bytes]]:
    out = []
    for i in range(n):
        s = Store.open(store_path(dir / f"member-{i}-data"))
        try:
            out.append([fb.block.digest for fb in s.iter_finalized()])
        finally:
            s.close()
    return out


async def test_commands_are_finalised_acknowledged_and_logged_identically(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    spec = committee.member_config(0).committee_spec()
    signer = _signer(spec.committee_id, committee.operator)
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client:
            results = []
            envelopes = []
            for k in range(6):
                envelope = signer.sign([publish("k", {"n": k, "j": j}) for j in range(k % 3 + 1)])
                member = client.members()[k % committee.n]
                ack, outcome = await client.submit(envelope.raw, member=member)
                assert ack.accepted and ack.reason is None
                assert ack.envelope_id == envelope.envelope_id
                assert outcome is not None and len(outcome.outcomes) == k % 3 + 1
                assert all(CommandOutcome.from_wire(o).status == "applied" for o in outcome.outcomes)
                results.append(outcome)
                envelopes.append(envelope)
            # Log indices are distinct and increase in submission order (one client, waited).
            indices = [o.log_index for o in results]
            assert indices == sorted(set(indices))
            top = max(o.height for o in results)
            await all_reach(running.members(), top)
            # The reported log index is the leaf holding exactly that envelope, and an
            # inclusion proof for it verifies against the member's current root.
            store = running.members()[0].store
            assert store is not None
            for outcome, envelope in zip(results, envelopes, strict=True):
                leaf, proof, size, root = await store.run(
                    lambda s, i=outcome.log_index: (s.entry(i), s.inclusion_proof(i), s.size,
                                                    s.root()))
                assert decode(leaf)[-1] == envelope.raw
                assert verify_inclusion(leaf, outcome.log_index, size, proof, root)

            # tail: every block comes with a certificate that verifies against the committee.
            verifier = ChainVerifier(spec)
            final = []
            height = 1
            while height <= top:
                reply = await client.blocks(height)
                for fb in reply.blocks:
                    final.extend(verifier.feed(fb))
                    height = fb.height + 1
            seen = [Envelope.decode(c).envelope_id for fb in final for c in fb.block.commands]
            for outcome, k in zip(results, range(6), strict=True):
                assert seen.count(CommandOutcome.from_wire(outcome.outcomes[0]).envelope_id) == 1, f"envelope {k} logged once"
    heads = _heads(tmp_path, committee.n)
    shortest = min(len(h) for h in heads)
    assert shortest >= top
    assert all(h[:shortest] == heads[0][:shortest] for h in heads)


async def test_refused_commands_say_why_and_change_nothing(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    spec = committee.member_config(0).committee_spec()
    outsider = SigningKey.generate()
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client:
            before = [m.log_size for m in running.members()]
            cases = {
                "not admitted": _signer(spec.committee_id, outsider).sign([publish("k", 1)]).raw,
                "wrong committee": _signer(b"\x07" * 32, committee.operator)
                .sign([publish("k", 1)]).raw,
                "malformed": b"\x83not an envelope",
            }
            good = _signer(spec.committee_id, committee.operator).sign([publish("k", 1)])
            forged = bytearray(good.raw)
            forged[-5] ^= 0x01  # inside the signature
            cases["bad signature"] = bytes(forged)
            reasons = {}
            for name, raw in cases.items():
                ack, outcome = await client.submit(raw)
                assert not ack.accepted and outcome is None, name
                reasons[name] = ack.reason
            assert "admit" in reasons["not admitted"]
            assert "committee" in reasons["wrong committee"]
            assert "malformed" in reasons["malformed"]
            assert "signature" in reasons["bad signature"]
            # The same valid envelope twice: applied once, the replay is refused by dedup.
            ack, outcome = await client.submit(good.raw)
            assert ack.accepted and outcome is not None
            assert CommandOutcome.from_wire(outcome.outcomes[0]).status == "applied"
            ack2, outcome2 = await client.submit(good.raw)
            refused = (not ack2.accepted) or (outcome2 is not None
                                              and CommandOutcome.from_wire(outcome2.outcomes[0]).status == "refused")
            assert refused, "a replayed envelope must not be applied twice"
            assert all(m.log_size >= b for m, b in zip(running.members(), before, strict=True))


async def test_a_restarted_member_catches_up_and_rejoins(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    spec = committee.member_config(0).committee_spec()
    signer = _signer(spec.committee_id, committee.operator)
    with trio.fail_after(180):
        async with in_process(committee) as running, client_for(committee) as client:
            await all_reach(running.members(), 2)
            await running.stop(3)  # q = 3 of 4: the others keep finalising
            last = 0
            for k in range(5):
                live = [p for p in client.members() if p != committee.keys[3].public]
                _, outcome = await client.submit(
                    signer.sign([publish("k", k)]).raw, member=live[0])
                assert outcome is not None
                last = outcome.height
            lagging_from = last
            member3 = await running.start(3)
            await member3.wait_until(lambda m: m.height >= lagging_from)
            # It executed what it fetched to the same state as everyone else.
            await all_reach(running.members(), lagging_from)
            # Every command so far is at or below `lagging_from` and later blocks are empty,
            # so every member, the restarted one included, holds the same state root.
            assert len({m.state_root for m in running.members()}) == 1
            # And it takes part again: a block after its return finalises everywhere.
            _, outcome = await client.submit(signer.sign([publish("k", 99)]).raw)
            assert outcome is not None
            await all_reach(running.members(), outcome.height)
    heads = _heads(tmp_path, committee.n)
    shortest = min(len(h) for h in heads)
    assert all(h[:shortest] == heads[0][:shortest] for h in heads)


async def test_a_member_whose_state_diverged_serves_no_reads(tmp_path: Path) -> None:
    committee = write_committee(tmp_path, 4)
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client:
            await all_reach(running.members(), 1)
            diverged = running.members()[2]
            diverged.diverged = "height 1: a block claims state root 00, ours is 01"
            assert not diverged.ready
            with pytest.raises(RefusedByMember, match="state diverged: height 1"):
                await client.blocks(1, member=diverged.key.public)
            reply = await client.blocks(1, member=running.members()[0].key.public)
            assert reply.blocks  # the others still serve
