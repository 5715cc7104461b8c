"""The ChronicleAnchors contract and the EVM anchor sink against a real anvil (from npm):
quorum counting, conflicts kept as evidence, refusals, gas, resume from chain state, the
confirmation depth, and the sink's one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio
from eth_account.signers.local import LocalAccount
from evm_harness import anvil_chain, funded_account

from coalitiond.components.chronicle import evm_contract
from coalitiond.components.chronicle.anchors import AnchorPublishError
from coalitiond.components.chronicle.evm_contract import (
    ARTIFACT_PATH,
    AnchorContract,
    post_data,
    send_transaction,
)
from coalitiond.components.chronicle.evm_keys import evm_address
from coalitiond.components.chronicle.evm_rpc import JsonRpc, RpcError, hex_int
from coalitiond.components.chronicle.evm_sink import EvmAnchorSink
from coalitiond.components.chronicle.records import ChronicleAnchor
from coalitiond.node.evm_devchain import DevChain
from coalitiond.primitives.errors import OperatorError

pytestmark = [pytest.mark.live]

COMMITTEE = b"\x0c" * 32
D1, D2 = b"\x11" * 32, b"\x22" * 32
#: Measured gas per post (docs/chronicle.md §7 lists them); a change to the contract that
#: costs more fails here and the docs get the new numbers.
MAX_POST_GAS = 125_000
MAX_DEPLOY_GAS = 700_000


async def setup(chain: DevChain, n: int = 4, quorum: int = 3
                ) -> tuple[list[LocalAccount], AnchorContract, int]:
    accounts = [await funded_account(chain) for _ in range(n)]
    deployer = await funded_account(chain)
    address, receipt = await evm_contract.deploy(
        chain.rpc, deployer, chain.chain_id, tuple(evm_address(a) for a in accounts), quorum)
    return accounts, AnchorContract(chain.rpc, address), int(receipt["gasUsed"], 16)


async def post(chain: DevChain, account: LocalAccount, contract: AnchorContract, upto: int,
               digest: bytes) -> dict[str, object]:
    return await send_transaction(chain.rpc, account, chain.chain_id, to=contract.address_hex,
                                  data=post_data(upto, digest), gas=200_000)


async def logs(chain: DevChain, contract: AnchorContract, topic: bytes) -> list[dict[str, str]]:
    out = await chain.rpc.call("eth_getLogs", {"address": contract.address_hex,
                                               "fromBlock": "0x0", "toBlock": "latest",
                                               "topics": ["0x" + topic.hex()]})
    assert isinstance(out, list)
    return out


def sink_for(chain: DevChain, accounts: list[LocalAccount], contract: AnchorContract, me: int,
             **kw: object) -> EvmAnchorSink:
    sink = EvmAnchorSink(JsonRpc([chain.url]), accounts[me], chain_id=chain.chain_id,
                         contract=contract.address,
                         members=tuple(evm_address(a) for a in accounts), me=me, quorum=3,
                         confirmations=1, poll_interval=0.02, **kw)  # type: ignore[arg-type]
    return sink


async def test_contract_counts_q_distinct_members_and_keeps_conflicts(tmp_path: Path) -> None:
    async with anvil_chain(tmp_path) as chain:
        accounts, contract, deploy_gas = await setup(chain)
        assert deploy_gas <= MAX_DEPLOY_GAS
        assert await contract.members() == tuple(evm_address(a) for a in accounts)
        assert await contract.quorum() == 3
        gas = []
        # Two honest posts, one conflicting: nothing confirmed yet.
        for i, d in ((0, D1), (3, D2), (1, D1)):
            r = await post(chain, accounts[i], contract, 5, d)
            gas.append(int(str(r["gasUsed"]), 16))
        assert await contract.confirmed(5) == bytes(32)
        # The third equal digest confirms; the conflicting one counted for nothing.
        r = await post(chain, accounts[2], contract, 5, D1)
        gas.append(int(str(r["gasUsed"]), 16))
        assert await contract.confirmed(5) == D1
        assert await contract.anchored_count() == 1
        assert await contract.posted(5, evm_address(accounts[3])) == D2
        conflicts = await logs(chain, contract, evm_contract.CONFLICT_EVENT)
        assert len(conflicts) == 1
        assert conflicts[0]["topics"][2][-40:] == accounts[3].address[2:].lower()
        assert len(await logs(chain, contract, evm_contract.ANCHORED_EVENT)) == 1
        assert max(gas) <= MAX_POST_GAS, gas
        print("gas: deploy", deploy_gas, "posts", gas)


@pytest.mark.parametrize(("who", "upto", "digest", "error"), [
    ("outsider", 1, D1, "NotMember"),
    (0, 1, bytes(32), "ZeroDigest()"),
    (0, 1, D1, "NotAfterLastPost(1, 2)"),   # the same anchor again
    (0, 0, D1, "NotAfterLastPost(0, 2)"),   # an earlier one
])
async def test_contract_refusals(tmp_path: Path, who: object, upto: int, digest: bytes,
                                 error: str) -> None:
    async with anvil_chain(tmp_path) as chain:
        accounts, contract, _ = await setup(chain)
        await post(chain, accounts[0], contract, 1, D1)
        account = await funded_account(chain) if who == "outsider" else accounts[0]
        sink = sink_for(chain, [account, *accounts[1:]], contract, 0)
        with pytest.raises(AnchorPublishError) as e:
            await sink._send(upto, digest)
        assert f"post(upto_seq={upto}) would revert: {error}" in str(e.value)
        assert "\n" not in str(e.value)
        # Nothing changed on chain.
        assert await contract.posted(1, evm_address(accounts[0])) == D1
        assert await contract.next_seq(evm_address(accounts[0])) == 2


@pytest.mark.parametrize(("members", "quorum", "why"), [
    (0, 1, "1..64 members"), (4, 2, "need n/2 < quorum <= n"), (4, 5, "need n/2 < quorum <= n"),
])
async def test_contract_constructor_refuses_bad_committees(tmp_path: Path, members: int,
                                                           quorum: int, why: str) -> None:
    async with anvil_chain(tmp_path) as chain:
        deployer = await funded_account(chain)
        addrs = tuple(os.urandom(20) for _ in range(members))
        with pytest.raises(RpcError, match=why.replace(".", r"\.")):
            await evm_contract.deploy(chain.rpc, deployer, chain.chain_id, addrs, quorum)


async def test_sink_posts_once_and_resumes_from_chain_state(tmp_path: Path) -> None:
    async with anvil_chain(tmp_path) as chain:
        accounts, contract, _ = await setup(chain)
        sink = sink_for(chain, accounts, contract, 0)
        await sink.prepare()
        assert sink.resume_after() == -1
        await sink.publish(ChronicleAnchor(1, D1), COMMITTEE)
        await sink.publish(ChronicleAnchor(3, D2), COMMITTEE)
        assert sink.sent == 2
        # Publishing again (a restart that lost its memory) sends nothing.
        again = sink_for(chain, accounts, contract, 0)
        await again.prepare()
        assert again.resume_after() == 3   # read from the chain: nextSeq(me) - 1
        await again.publish(ChronicleAnchor(3, D2), COMMITTEE)
        assert again.sent == 0
        nonce = hex_int(await chain.rpc.call("eth_getTransactionCount", accounts[0].address,
                                             "latest"), "nonce")
        assert nonce == 2


async def test_sink_waits_for_the_confirmation_depth(tmp_path: Path) -> None:
    async with anvil_chain(tmp_path) as chain:
        accounts, contract, _ = await setup(chain)
        sink = sink_for(chain, accounts, contract, 0)
        sink.confirmations = 3
        await sink.prepare()
        await sink._send(1, D1)
        await sink._wait_mined()
        assert await contract.posted(1, evm_address(accounts[0])) == D1
        assert not await sink.confirmed(1, D1)      # 1 deep
        await chain.rpc.call("evm_mine")
        assert not await sink.confirmed(1, D1)      # 2 deep
        await chain.rpc.call("evm_mine")
        assert await sink.confirmed(1, D1)          # 3 deep
        # A fresh start resumes only below what is buried deep enough.
        fresh = sink_for(chain, accounts, contract, 0)
        fresh.confirmations = 4
        await fresh.prepare()
        assert fresh.resume_after() == -1
        fresh.confirmations = 3
        await fresh.prepare()
        assert fresh.resume_after() == 1
        await sink.publish(ChronicleAnchor(1, D1), COMMITTEE)
        assert sink.sent == 1


async def test_sink_errors_are_one_line_and_lose_nothing(tmp_path: Path) -> None:
    async with anvil_chain(tmp_path) as chain:
        accounts, contract, _ = await setup(chain)
        members = tuple(evm_address(a) for a in accounts)

        def expect(text: str) -> pytest.RaisesExc[AnchorPublishError]:
            return pytest.raises(AnchorPublishError, match=text)

        # Wrong chain id.
        wrong = EvmAnchorSink(JsonRpc([chain.url]), accounts[0], chain_id=1,
                              contract=contract.address, members=members, me=0, quorum=3)
        with expect(r"chain id 31337, but component.anchor_sink.chain_id is 1$"):
            await wrong.publish(ChronicleAnchor(1, D1), COMMITTEE)
        # Members or quorum other than the contract's.
        other = sink_for(chain, accounts, contract, 0)
        other.quorum = 4
        with expect(r"quorum 3, the committee's is 4$"):
            await other.prepare()
        # No contract there.
        absent = EvmAnchorSink(JsonRpc([chain.url]), accounts[0], chain_id=chain.chain_id,
                               contract=b"\x01" * 20, members=members, me=0, quorum=3)
        with expect("no contract code at that address$"):
            await absent.prepare()
        # Out of funds.
        await chain.fund(accounts[1].address, 1)
        poor = sink_for(chain, accounts, contract, 1)
        with expect(r"holds 1 wei; a post needs up to \d+ wei: out of funds \(fund the "
                    r"account\)$"):
            await poor.publish(ChronicleAnchor(1, D1), COMMITTEE)
        # RPC down.
        port = chain.port
        await chain.stop()
        down = sink_for(chain, accounts, contract, 2)
        with expect(rf"^RPC http://127.0.0.1:{port}: cannot connect \(node down\?\): [^\n]+$"):
            await down.publish(ChronicleAnchor(1, D1), COMMITTEE)
        await chain.start()
        # A key file that is not this member's account is refused at construction.
        with pytest.raises(OperatorError, match=r"its account .* is not this member's address "
                                                r"in component.anchor_sink.members\[1\]"):
            EvmAnchorSink(JsonRpc([chain.url]), accounts[0], chain_id=chain.chain_id,
                          contract=contract.address, members=members, me=1, quorum=3)
        # Nothing was posted by any of them; the healthy sink still posts.
        for a in accounts:
            assert await contract.next_seq(evm_address(a)) == 0
        await sink_for(chain, accounts, contract, 2).publish(ChronicleAnchor(1, D1), COMMITTEE)
        assert await contract.posted(1, members[2]) == D1


def test_artifact_matches_the_abi_the_sink_uses() -> None:
    artifact = json.loads(ARTIFACT_PATH.read_text())
    names = {(x["type"], x.get("name")) for x in artifact["abi"]}
    for kind, name in [("function", "post"), ("function", "posted"), ("function", "confirmed"),
                       ("function", "nextSeq"), ("function", "members"),
                       ("function", "quorum"), ("function", "anchoredCount"),
                       ("event", "Posted"), ("event", "Anchored"), ("event", "Conflict"),
                       ("error", "NotMember"), ("error", "NotAfterLastPost")]:
        assert (kind, name) in names


def test_contract_compiles_reproducibly_with_the_pinned_solc() -> None:
    """Recompile contracts/ChronicleAnchors.sol with the pinned solc-js; the checked-in
    artifact must be byte-identical (runs when node and `make tools` are there)."""
    root = Path(__file__).resolve().parents[1]
    solc = root / ".tools" / "node_modules" / "solc"
    node = shutil.which("node")
    if node is None or not solc.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("node or solc-js missing in CI: `make tools` installs solc-js")
        pytest.skip("node or solc-js (make tools) not installed")
    out = subprocess.run([node, str(root / "contracts" / "compile.js"), "--check"],
                         env={**os.environ, "NODE_PATH": str(root / ".tools" / "node_modules")},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "identical to a fresh compile with solc-js 0.8.30" in out.stdout


def test_evm_keygen_writes_a_0600_key_and_prints_its_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coalitiond.cli import main
    from coalitiond.components.chronicle.evm_keys import load_evm_key_file

    out = tmp_path / "evm.key"
    assert main(["evm-keygen", "--out", str(out)]) == 0
    assert (out.stat().st_mode & 0o777) == 0o600
    assert capsys.readouterr().out.strip() == load_evm_key_file(out).address
    before = out.read_bytes()
    assert main(["evm-keygen", "--out", str(out)]) == 2
    assert "refusing to overwrite an existing key file" in capsys.readouterr().err
    assert out.read_bytes() == before
    out.chmod(0o644)
    from coalitiond.primitives.errors import KeyFileError
    with pytest.raises(KeyFileError, match=r"key file mode is 0644; it must not be readable"):
        load_evm_key_file(out)


@pytest.mark.parametrize(("argv", "message"), [
    (["verify", "--archive", "a", "--anchors", "http://x"],
     "--anchors and --contract go together"),
    (["devnet", "--component", "feed", "--anchor", "evm", "--generate-only"],
     "--anchor evm: only a chronicle anchors (use --component chronicle)"),
])
def test_anchor_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             argv: list[str], message: str) -> None:
    from coalitiond.cli import main

    assert main([*argv, *(["--dir", str(tmp_path)] if argv[0] == "devnet" else [])]) == 2
    assert message in capsys.readouterr().err


async def test_post_estimated_early_still_completes_the_quorum(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Member 1 estimates its gas as the second poster; member 2's post, sent later with a
    higher tip, lands first in the block, so member 1's completes the quorum, which writes
    more. The gas floor keeps it from running out of gas."""
    import coalitiond.components.chronicle.evm_sink as evm_sink_module

    async with anvil_chain(tmp_path) as chain:
        accounts, contract, _ = await setup(chain)
        sinks = [sink_for(chain, accounts, contract, i) for i in range(3)]
        await sinks[0].publish(ChronicleAnchor(1, D1), COMMITTEE)
        await chain.rpc.call("evm_setAutomine", False)
        for s in sinks[1:]:
            await s.prepare()
        await sinks[1]._send(1, D1)

        async def rich_fees(rpc: JsonRpc) -> tuple[int, int]:
            return 10**12, 10**11
        monkeypatch.setattr(evm_sink_module, "fee_caps", rich_fees)
        await sinks[2]._send(1, D1)
        await chain.rpc.call("evm_mine")
        await chain.rpc.call("evm_setAutomine", True)
        for s in sinks[1:]:
            await s._wait_mined()   # raises if the post reverted
        assert await contract.confirmed(1) == D1


async def test_anchor_deploy_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    from coalitiond.cli import main
    from coalitiond.components.chronicle.evm_keys import generate_evm_key, write_evm_key_file

    async with anvil_chain(tmp_path) as chain:
        write_evm_key_file(tmp_path / "deployer.key", generate_evm_key())
        deployer = evm_contract.account_of(bytes.fromhex(
            (tmp_path / "deployer.key").read_text().split()[1]))
        await chain.fund(deployer.address)
        members = [os.urandom(20) for _ in range(4)]
        argv = ["anchor-deploy", "--rpc", chain.url, "--key", str(tmp_path / "deployer.key"),
                *[x for m in members for x in ("--member-address", "0x" + m.hex())]]
        code = await trio.to_thread.run_sync(lambda: main(argv))
        assert code == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert "members 4, quorum 3" in out[0]
        contract = AnchorContract(chain.rpc, bytes.fromhex(out[-1][2:]))
        assert await contract.members() == tuple(members)
        assert await contract.quorum() == 3
