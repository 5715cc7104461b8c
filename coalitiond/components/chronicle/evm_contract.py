"""The `ChronicleAnchors` contract (contracts/ChronicleAnchors.sol) seen from Python: call
encodings, its events and errors, reads over JSON-RPC, and deployment.

The ABI facts the sink needs are written here (selectors are computed from the signatures);
the checked-in artifact `contracts/ChronicleAnchors.json` is read only to deploy (its
bytecode) and by the test that checks both agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ...primitives.errors import OperatorError
from .evm_rpc import JsonRpc, RpcCallError, RpcError, hex_bytes, hex_int

#: Where the checked-in artifact lives (a source checkout; deployment tooling only).
ARTIFACT_PATH: Final = Path(__file__).resolve().parents[3] / "contracts" / "ChronicleAnchors.json"
ZERO32: Final = bytes(32)


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


POST_SIG: Final = "post(uint64,bytes32)"
POSTED_SIG: Final = "posted(uint64,address)"
CONFIRMED_SIG: Final = "confirmed(uint64)"
NEXT_SEQ_SIG: Final = "nextSeq(address)"
MEMBERS_SIG: Final = "members()"
QUORUM_SIG: Final = "quorum()"
ANCHORED_COUNT_SIG: Final = "anchoredCount()"

POSTED_EVENT: Final = keccak(text="Posted(uint64,address,bytes32)")
ANCHORED_EVENT: Final = keccak(text="Anchored(uint64,bytes32)")
CONFLICT_EVENT: Final = keccak(text="Conflict(uint64,address,bytes32,bytes32)")

#: Custom errors: selector -> (name, argument types).
ERRORS: Final = {
    selector("NotMember(address)"): ("NotMember", ("address",)),
    selector("ZeroDigest()"): ("ZeroDigest", ()),
    selector("NotAfterLastPost(uint64,uint64)"): ("NotAfterLastPost", ("uint64", "uint64")),
    selector("BadCommittee(string)"): ("BadCommittee", ("string",)),
    selector("Error(string)"): ("Error", ("string",)),
}


def encode_call(signature: str, types: tuple[str, ...] = (), args: tuple[Any, ...] = ()
                ) -> bytes:
    return selector(signature) + abi_encode(list(types), list(args))


def post_data(upto_seq: int, digest: bytes) -> bytes:
    return encode_call(POST_SIG, ("uint64", "bytes32"), (upto_seq, digest))


def describe_revert(data: str | None) -> str:
    """`NotAfterLastPost(3, 8)` from revert data; `reverted` when there is none."""
    if not data or len(data) < 10:
        return "reverted"
    raw = bytes.fromhex(data[2:])
    known = ERRORS.get(raw[:4])
    if known is None:
        return f"reverted with unknown error 0x{raw[:4].hex()}"
    name, types = known
    try:
        args = abi_decode(list(types), raw[4:])
    except Exception:  # malformed revert data from the node
        return f"{name}(<undecodable>)"
    return f"{name}({', '.join(str(a) for a in args)})"


def address_hex(address: bytes) -> str:
    return to_checksum_address(address)


@dataclass(frozen=True, slots=True)
class Post:
    """One Posted event."""

    upto_seq: int
    member: bytes
    digest: bytes
    block: int


class AnchorContract:
    """Reads of one deployed contract (`block` = an RPC block tag or number)."""

    def __init__(self, rpc: JsonRpc, address: bytes) -> None:
        self.rpc = rpc
        self.address = address
        self.address_hex = address_hex(address)

    async def _call(self, data: bytes, block: int | str = "latest") -> bytes:
        tag = hex(block) if isinstance(block, int) else block
        try:
            out = await self.rpc.call("eth_call", {"to": self.address_hex,
                                                   "data": "0x" + data.hex()}, tag)
        except RpcCallError as e:
            raise RpcError(f"{e} ({describe_revert(e.data)})") from None
        return hex_bytes(out, "eth_call")

    async def _word(self, data: bytes, block: int | str = "latest") -> bytes:
        out = await self._call(data, block)
        if not out and block != "latest":
            return ZERO32  # a block before the contract existed: nothing posted yet
        if len(out) != 32:
            raise RpcError(f"contract {self.address_hex}: unexpected answer of {len(out)} "
                           "bytes (not a ChronicleAnchors contract?)")
        return out

    async def has_code(self) -> bool:
        code = hex_bytes(await self.rpc.call("eth_getCode", self.address_hex, "latest"),
                         "eth_getCode")
        return bool(code)

    async def members(self) -> tuple[bytes, ...]:
        out = await self._call(encode_call(MEMBERS_SIG))
        try:
            (addrs,) = abi_decode(["address[]"], out)
        except Exception:  # not our contract
            raise RpcError(f"contract {self.address_hex}: members() did not answer an "
                           "address list (not a ChronicleAnchors contract?)") from None
        return tuple(bytes.fromhex(a[2:]) for a in addrs)

    async def quorum(self) -> int:
        return int.from_bytes(await self._word(encode_call(QUORUM_SIG)), "big")

    async def anchored_count(self, block: int | str = "latest") -> int:
        return int.from_bytes(await self._word(encode_call(ANCHORED_COUNT_SIG), block), "big")

    async def posted(self, upto_seq: int, member: bytes, block: int | str = "latest") -> bytes:
        return await self._word(encode_call(POSTED_SIG, ("uint64", "address"),
                                            (upto_seq, address_hex(member))), block)

    async def confirmed(self, upto_seq: int, block: int | str = "latest") -> bytes:
        return await self._word(encode_call(CONFIRMED_SIG, ("uint64",), (upto_seq,)), block)

    async def next_seq(self, member: bytes, block: int | str = "latest") -> int:
        word = await self._word(encode_call(NEXT_SEQ_SIG, ("address",),
                                            (address_hex(member),)), block)
        return int.from_bytes(word, "big")

    async def posts(self, from_block: int, to_block: int) -> list[Post]:
        """Every Posted event in the block range (the caller pages long ranges)."""
        logs = await self.rpc.call("eth_getLogs", {
            "address": self.address_hex, "fromBlock": hex(from_block), "toBlock": hex(to_block),
            "topics": ["0x" + POSTED_EVENT.hex()]})
        if not isinstance(logs, list):
            raise RpcError("eth_getLogs: expected a list")
        out = []
        for log in logs:
            topics = log.get("topics", []) if isinstance(log, dict) else []
            if len(topics) != 3:
                raise RpcError("eth_getLogs: a Posted event without its two indexed topics")
            out.append(Post(int(topics[1], 16), hex_bytes(topics[2], "topic")[-20:],
                            hex_bytes(log["data"], "log data")[:32],
                            hex_int(log["blockNumber"], "blockNumber")))
        return out


# ---------------------------------------------------------------------------------------
# Deployment (devnet, tests, operators)


def load_artifact(path: Path = ARTIFACT_PATH) -> dict[str, Any]:
    try:
        artifact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OperatorError(f"{path}: cannot read the contract artifact: {e}") from None
    return artifact


async def send_transaction(rpc: JsonRpc, account: LocalAccount, chain_id: int, *,
                           to: str | None, data: bytes, gas: int | None = None) -> dict[str, Any]:
    """Sign and send one EIP-1559 transaction, then wait (polling) for its receipt. For
    deployment and tooling; the anchor sink has its own, resumable, path."""
    import trio

    tx: dict[str, Any] = {"from": account.address, "data": "0x" + data.hex()}
    if to is not None:
        tx["to"] = to
    if gas is None:
        gas = hex_int(await rpc.call("eth_estimateGas", tx), "eth_estimateGas") * 5 // 4
    fees = await fee_caps(rpc)
    nonce = hex_int(await rpc.call("eth_getTransactionCount", account.address, "pending"),
                    "eth_getTransactionCount")
    signed = account.sign_transaction({
        "chainId": chain_id, "nonce": nonce, "gas": gas, "to": HexStr(to) if to else b"",
        "data": data, "value": 0, "type": 2,
        "maxFeePerGas": fees[0], "maxPriorityFeePerGas": fees[1]})
    tx_hash = await rpc.call("eth_sendRawTransaction", "0x" + signed.raw_transaction.hex())
    while True:
        receipt = await rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is not None:
            if hex_int(receipt.get("status"), "status") != 1:
                raise RpcError(f"transaction {tx_hash} reverted")
            return dict(receipt)
        await trio.sleep(0.05)


async def fee_caps(rpc: JsonRpc) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas): twice the latest base fee plus the node's tip."""
    block = await rpc.call("eth_getBlockByNumber", "latest", False)
    base = hex_int(block.get("baseFeePerGas", "0x0"), "baseFeePerGas") if isinstance(
        block, dict) else 0
    try:
        tip = hex_int(await rpc.call("eth_maxPriorityFeePerGas"), "eth_maxPriorityFeePerGas")
    except RpcCallError:
        tip = 10**9
    return 2 * base + tip, tip


async def deploy(rpc: JsonRpc, deployer: LocalAccount, chain_id: int,
                 members: tuple[bytes, ...], quorum: int) -> tuple[bytes, dict[str, Any]]:
    """Deploy ChronicleAnchors(members, quorum); (contract address, receipt)."""
    bytecode = hex_bytes(load_artifact()["bytecode"], "artifact bytecode")
    args = abi_encode(["address[]", "uint256"],
                          [[address_hex(m) for m in members], quorum])
    receipt = await send_transaction(rpc, deployer, chain_id, to=None, data=bytecode + args)
    return hex_bytes(receipt["contractAddress"], "contractAddress"), receipt


def account_of(secret: bytes) -> LocalAccount:
    acct: LocalAccount = Account.from_key(secret)
    return acct
