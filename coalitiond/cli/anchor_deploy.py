"""`coalitiond anchor-deploy --rpc URL --key EVM_KEY --member-address 0x… (per member)`: deploy
the ChronicleAnchors contract (contracts/) for a Chronicle committee and print its address.

The members' EVM addresses are given in member order; the quorum defaults to the committee
quorum of that many members with the default fault bound (`--quorum` overrides). Put the printed address into every member's
`[component.anchor_sink] contract` (it is consensus content: part of the committee id).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from ..components.chronicle.evm_contract import address_hex, deploy
from ..components.chronicle.evm_keys import load_evm_key_file
from ..components.chronicle.evm_rpc import JsonRpc, RpcError, hex_int
from ..primitives.errors import OperatorError

NAME = "anchor-deploy"
HELP = "deploy the Chronicle anchor contract for a committee and print its address"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc", required=True, help="the chain's JSON-RPC URL")
    parser.add_argument("--key", required=True, type=Path,
                        help="EVM key file of the (funded) deploying account")
    parser.add_argument("--member-address", action="append", default=[],
                        help="a member's EVM address (0x + 40 hex), in member order")
    parser.add_argument("--quorum", type=int, default=None, help="distinct members per anchor")


def _address(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise OperatorError(f"--member-address {text!r}: expected 0x and 40 hex characters")
    return raw


def run(args: argparse.Namespace) -> int:
    members = tuple(_address(a) for a in args.member_address)
    if not members:
        raise OperatorError("give every member's EVM address with --member-address (in "
                            "member order)")
    quorum = args.quorum
    if quorum is None:
        from ..primitives.committee import default_fault_bound, quorum_size
        n = len(members)
        quorum = quorum_size(n, default_fault_bound(n))
    account = load_evm_key_file(args.key)

    async def go() -> bytes:
        rpc = JsonRpc([args.rpc])
        chain_id = hex_int(await rpc.call("eth_chainId"), "eth_chainId")
        address, receipt = await deploy(rpc, account, chain_id, members, quorum)
        print(f"deployed on chain {chain_id} in block {int(receipt['blockNumber'], 16)} "
              f"({int(receipt['gasUsed'], 16)} gas); members {len(members)}, quorum {quorum}")
        return address

    try:
        address = trio.run(go)
    except RpcError as e:
        raise OperatorError(f"deploy failed: {e}") from None
    print(address_hex(address))
    return 0
