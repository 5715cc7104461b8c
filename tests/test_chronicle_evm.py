"""The Chronicle's on-chain anchor path against a real local chain (anvil from npm): the
contract, the EVM sink under a live committee (chain outage, member restart mid-anchor, one
member posting wrong digests), and `verify --anchors`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from evm_harness import anvil_chain, evm_committee
from node_harness import client_for, in_process

import coalitiond.node.member as member_module
from coalitiond.cli import main as cli_main
from coalitiond.commands.client import EnvelopeSigner
from coalitiond.components.chronicle import evm_contract
from coalitiond.components.chronicle.anchors import make_sink
from coalitiond.components.chronicle.evm_contract import AnchorContract
from coalitiond.components.chronicle.evm_rpc import JsonRpc, hex_int
from coalitiond.components.chronicle.evm_sink import EvmAnchorSink
from coalitiond.components.chronicle.records import append_command
from coalitiond.integrator.anchor_check import CONFIRMED, check_anchors
from coalitiond.log import Store, store_path
from coalitiond.log.archive import export_archive
from coalitiond.node.drivers import AnchorPublishing
from coalitiond.node.member import Member
from coalitiond.testing.evm_anchors import WrongDigestSink, wrong_digest

pytestmark = [pytest.mark.live]

#: Member 3 posts wrong digests (a test double, coalitiond/testing/evm_anchors.py).
BYZANTINE = 3


def publisher_of(member: Member) -> Any:
    for d in member.drivers.drivers:
        if isinstance(d, AnchorPublishing):
            return d.publisher
    raise AssertionError("no anchor publisher")


def speed_up(member: Member) -> EvmAnchorSink:
    """Tests' timing knobs: poll the chain and back off in tens of milliseconds."""
    pub = publisher_of(member)
    pub.initial_backoff = pub.max_backoff = 0.05
    sink = pub.sink
    assert isinstance(sink, EvmAnchorSink)
    sink.poll_interval = 0.02
    return sink


async def tx_count(rpc: JsonRpc, address: str, tag: str = "latest") -> int:
    return hex_int(await rpc.call("eth_getTransactionCount", address, tag), "nonce")


async def test_evm_anchors_survive_chain_outage_and_member_restart_and_expose_a_liar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    async with anvil_chain(tmp_path) as chain:
        evm = await evm_committee(tmp_path / "c", chain)
        committee = evm.committee
        real_make_sink = make_sink

        def make_sink_with_liar(sink: Any, **kw: Any) -> Any:
            made = real_make_sink(sink, **kw)
            if kw.get("member_index") == BYZANTINE:
                assert isinstance(made, EvmAnchorSink)
                return WrongDigestSink(made.rpc, made.account, chain_id=made.chain_id,
                                       contract=made.contract.address, members=made.members,
                                       me=made.me, quorum=made.quorum, confirmations=1)
            return made

        monkeypatch.setattr(member_module, "make_sink", make_sink_with_liar)
        contract = AnchorContract(chain.rpc, evm.contract)
        spec = committee.member_config(0).committee_spec()
        signer = EnvelopeSigner(committee.operator, spec.committee_id)

        async def append(client: Any, count: int) -> None:
            for i in range(count):
                env = signer.sign([append_command("note", b"\x01" * 32, {"i": i})])
                ack, outcome = await client.submit(env.raw)
                assert ack.accepted and outcome is not None

        async def all_published(running: Any, upto: int) -> None:
            for m in running.members():
                await publisher_of(m).wait_published(upto)

        with trio.fail_after(90):
            async with in_process(committee) as running, client_for(committee) as client:
                for m in running.members():
                    speed_up(m)
                # Anchors 1 and 3 (anchor_every = 2).
                await append(client, 4)
                await all_published(running, 3)
                assert await contract.anchored_count() == 2

                # The chain goes away: the committee keeps committing, the lag grows.
                await chain.stop()
                await append(client, 4)  # each waited for its finalised outcome
                committed = [publisher_of(m).committed_upto for m in running.members()]
                lagging = [publisher_of(m).lag_entries for m in running.members()]
                assert 7 in committed and max(lagging) >= 2, (committed, lagging)
                await chain.start()
                await all_published(running, 7)

                # Member 1 stops with its post for anchor 9 sent but not mined, and starts
                # again while that post is still pending: it must replace it (same nonce),
                # not add a second one.
                await chain.rpc.call("evm_setAutomine", False)
                addr1 = evm.accounts[1].address
                before = speed_up(running.members()[1])
                mined_before = await tx_count(chain.rpc, addr1)
                await append(client, 2)
                await before.wait_attempts(before.attempts + 1)
                assert await tx_count(chain.rpc, addr1, "pending") == mined_before + 1
                await running.stop(1)
                restarted_member = await running.start(1)
                restarted = speed_up(restarted_member)
                await restarted.wait_attempts(1)
                # It found its own post pending: nothing sent, nothing failed.
                assert restarted.sent == 0 and publisher_of(restarted_member).failures == 0
                assert await tx_count(chain.rpc, addr1, "pending") == mined_before + 1
                assert await contract.posted(9, bytes.fromhex(addr1[2:])) == bytes(32)
                await chain.rpc.call("evm_setAutomine", True)
                await chain.rpc.call("evm_mine")
                await all_published(running, 9)
                assert restarted.sent == 0

        # Every member posted each of the 5 anchors exactly once (one transaction each:
        # no double post, not even a reverted one), and each is confirmed.
        for account in evm.accounts:
            assert await tx_count(chain.rpc, account.address) == 5, account.address
        assert await contract.anchored_count() == 5

        # The archive's recomputation agrees with the chain; the liar is exposed.
        with Store.open(store_path(committee.dir / "member-0-data")) as store:
            export_archive(store, tmp_path / "a.cda",
                           config_text=committee.configs[0].read_text())
        report = await check_anchors(tmp_path / "a.cda", chain.rpc, evm.contract)
        assert [a.upto_seq for a in report.anchors] == [1, 3, 5, 7, 9]
        assert all(a.status == CONFIRMED and a.chain_digest == a.digest
                   for a in report.anchors)
        for a in report.anchors:
            assert [a.members[i] for i in range(3)] == ["ok"] * 3
            assert a.members[BYZANTINE] == "wrong:" + wrong_digest(a.digest).hex()
            # The conflicting digest is kept on chain, and counted for nothing.
            assert await contract.posted(a.upto_seq, evm_contract.hex_bytes(
                evm.accounts[BYZANTINE].address, "a")) == wrong_digest(a.digest)
            votes = await contract._word(evm_contract.encode_call(
                "votes(uint64,bytes32)", ("uint64", "bytes32"),
                (a.upto_seq, wrong_digest(a.digest))))
            assert int.from_bytes(votes, "big") == 1
        assert report.wrong_posts() == {BYZANTINE: [1, 3, 5, 7, 9]}
        conflicts = await chain.rpc.call("eth_getLogs", {
            "address": contract.address_hex, "fromBlock": "0x0", "toBlock": "latest",
            "topics": ["0x" + evm_contract.CONFLICT_EVENT.hex()]})
        assert {int(c["topics"][1], 16) for c in conflicts} == {1, 3, 5, 7, 9}

        # The CLI says the same.
        code = await trio.to_thread.run_sync(lambda: cli_main(
            ["verify", "--archive", str(tmp_path / "a.cda"), "--anchors", chain.url,
             "--contract", "0x" + evm.contract.hex()]))
        assert code == 0
        out = capsys.readouterr().out
        assert "5 recomputed from the archive; 5 confirmed, 0 missing, 0 conflicting" in out
        assert "member 0: 5 ok, 0 absent, 0 wrong" in out
        assert "member 3: 0 ok, 0 absent, 5 wrong" in out
        assert "member 3 posted digests that are not the archive's at upto_seq 1, 3, 5, 7, 9" \
            in out
