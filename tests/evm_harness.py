"""Shared pieces of the EVM anchor tests: a real anvil (from npm, `make tools`), a deployed
ChronicleAnchors contract, member EVM keys and a Chronicle committee configured for it.

Tests that need anvil skip when it is absent, except in CI (CI=true), where its absence is a
failure: `.ci/run` installs it through the Makefile.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from node_harness import Committee, free_ports, write_committee

from coalitiond.components.chronicle import evm_contract
from coalitiond.components.chronicle.evm_keys import (
    evm_address,
    generate_evm_key,
    load_evm_key_file,
    write_evm_key_file,
)
from coalitiond.config.template import EvmAnchorTemplate, _evm_sink
from coalitiond.node.evm_devchain import DevChain, find_anvil


def need_anvil() -> Path:
    anvil = find_anvil()
    if anvil is None:
        if os.environ.get("CI") == "true":
            pytest.fail("anvil is not installed, and CI must run the EVM anchor tests: "
                        "`make tools` installs it from npm (contracts/package.json)")
        pytest.skip("anvil not installed (run `make tools`)")
    return anvil


@asynccontextmanager
async def anvil_chain(dir: Path) -> AsyncIterator[DevChain]:
    need_anvil()
    chain = DevChain(free_ports(1)[0], dir / "anvil-state.json")
    await chain.start()
    try:
        yield chain
    finally:
        await chain.stop()


async def funded_account(chain: DevChain) -> LocalAccount:
    account = evm_contract.account_of(generate_evm_key())
    await chain.fund(account.address)
    return account


@dataclass
class EvmCommittee:
    committee: Committee
    contract: bytes
    accounts: list[LocalAccount]
    deploy_gas: int


async def evm_committee(dir: Path, chain: DevChain, n: int = 4, *, anchor_every: int = 2,
                        confirmations: int = 1) -> EvmCommittee:
    """Member EVM keys (0600 files), the contract deployed for them with the committee's q,
    and member configs whose anchor sink is that contract."""
    dir.mkdir(parents=True, exist_ok=True)
    accounts = []
    for i in range(n):
        write_evm_key_file(dir / f"evm-{i}.key", generate_evm_key())
        account = load_evm_key_file(dir / f"evm-{i}.key")
        await chain.fund(account.address)
        accounts.append(account)
    members = tuple(evm_address(a) for a in accounts)
    committee = write_committee(dir, n, component="chronicle")
    quorum = committee.member_config(0).committee_spec().quorum
    deployer = await funded_account(chain)
    contract, receipt = await evm_contract.deploy(chain.rpc, deployer, chain.chain_id, members,
                                                  quorum)
    for i, path in enumerate(committee.configs):
        sink = "\n".join(_evm_sink(EvmAnchorTemplate(chain.url, chain.chain_id, contract,
                                                     members, f"evm-{i}.key", confirmations)))
        text = path.read_text()
        text = text.replace('kind = "file"\npath = "anchors.jsonl"', sink, 1)
        text = text.replace("anchor_every = 1000", f"anchor_every = {anchor_every}", 1)
        assert 'kind = "evm"' in text and f"anchor_every = {anchor_every}" in text
        path.write_text(text)
    return EvmCommittee(committee, contract, accounts, int(receipt["gasUsed"], 16))
