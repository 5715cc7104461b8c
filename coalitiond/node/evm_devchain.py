"""A local EVM chain (anvil) for `coalitiond devnet --anchor evm` and the anchor tests.

anvil comes from npm (`@foundry-rs/anvil-linux-amd64`, pinned in contracts/package.json),
installed by `make tools` into `.tools/node_modules`. `find_anvil()` looks there, then at
`$COALITIOND_ANVIL`, then on PATH. `DevChain` starts it on one loopback port with a state
file (`--state`: loaded at start, written at a clean stop), so a stopped chain comes back
with its blocks and contracts; `fund` sets balances (`anvil_setBalance`, a dev-chain-only
method). Never part of a production configuration: a member only ever talks JSON-RPC.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Final

import trio

from ..components.chronicle.evm_rpc import JsonRpc, RpcError
from ..primitives.errors import OperatorError

ANVIL_NPM_BIN: Final = (Path(__file__).resolve().parents[2] / ".tools" / "node_modules"
                        / ".bin" / "anvil")
DEVNET_CHAIN_ID: Final = 31337
#: How long a started anvil has to answer eth_chainId.
START_TIMEOUT_S: Final = 30.0


def find_anvil() -> Path | None:
    for candidate in (ANVIL_NPM_BIN, os.environ.get("COALITIOND_ANVIL")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("anvil")
    return Path(found) if found else None


class DevChain:
    """One anvil process; `start`/`stop` may be repeated (the state file carries over)."""

    def __init__(self, port: int, state: Path, *, chain_id: int = DEVNET_CHAIN_ID,
                 anvil: Path | None = None, log_path: Path | None = None) -> None:
        binary = anvil or find_anvil()
        if binary is None:
            raise OperatorError("anvil not found: run `make tools` (installs it from npm into "
                                ".tools/), or set COALITIOND_ANVIL")
        self.binary = binary
        self.port = port
        self.state = state
        self.chain_id = chain_id
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.rpc = JsonRpc([self.url], timeout=5.0)
        self.process: trio.Process | None = None

    async def start(self) -> None:
        assert self.process is None, "already running"
        args = [str(self.binary), "--port", str(self.port), "--host", "127.0.0.1",
                "--chain-id", str(self.chain_id), "--state", str(self.state),
                "--accounts", "0", "--silent"]
        if self.log_path is not None:
            with open(self.log_path, "ab") as out:
                self.process = await trio.lowlevel.open_process(args, stdout=out, stderr=out)
        else:
            self.process = await trio.lowlevel.open_process(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with trio.move_on_after(START_TIMEOUT_S):
            while True:
                if self.process.poll() is not None:
                    raise OperatorError(f"anvil exited with {self.process.returncode} at start "
                                        f"(port {self.port} busy?)")
                try:
                    await self.rpc.call("eth_chainId")
                    return
                except RpcError:
                    await trio.sleep(0.02)
        raise OperatorError(f"anvil did not answer on {self.url} within {START_TIMEOUT_S:g} s")

    async def stop(self) -> None:
        """SIGTERM (anvil writes its state file), then wait for it to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.poll() is None:
                process.kill()
                await process.wait()

    async def fund(self, address: str, wei: int = 10**20) -> None:
        await self.rpc.call("anvil_setBalance", address, hex(wei))


# ---------------------------------------------------------------------------------------
# `coalitiond devnet --component chronicle --anchor evm`


class BlockingDevChain:
    """anvil for the devnet's command line, which runs several trio loops in turn: started
    and stopped without one (subprocess), talked to inside each loop through `url`."""

    def __init__(self, port: int, state: Path, log_path: Path) -> None:
        binary = find_anvil()
        if binary is None:
            raise OperatorError("--anchor evm: anvil not found: run `make tools` (installs it "
                                "from npm into .tools/), or set COALITIOND_ANVIL")
        self.args = [str(binary), "--port", str(port), "--host", "127.0.0.1", "--chain-id",
                     str(DEVNET_CHAIN_ID), "--state", str(state), "--accounts", "0", "--silent"]
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=out)

        async def ready() -> None:
            rpc = JsonRpc([self.url], timeout=2.0)
            with trio.move_on_after(START_TIMEOUT_S):
                while True:
                    if self.process is not None and self.process.poll() is not None:
                        raise OperatorError(f"anvil exited at start (port busy?); see "
                                            f"{self.log_path}")
                    try:
                        await rpc.call("eth_chainId")
                        return
                    except RpcError:
                        await trio.sleep(0.05)
            raise OperatorError(f"anvil did not answer on {self.url}")

        trio.run(ready)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def prepare_evm_anchors(dir: Path, url: str, members: int, quorum: int
                        ) -> tuple[bytes, tuple[bytes, ...]]:
    """Member EVM keys (`evm-<i>.key`, kept across runs), funded; the anchor contract,
    deployed once per chain state (its address kept in `anchor-contract.txt`). Returns
    (contract, member addresses)."""
    from ..components.chronicle.evm_contract import AnchorContract, deploy
    from ..components.chronicle.evm_keys import (
        evm_address,
        generate_evm_key,
        load_evm_key_file,
        write_evm_key_file,
    )

    def account(path: Path) -> Any:
        if not path.exists():
            write_evm_key_file(path, generate_evm_key())
        return load_evm_key_file(path)

    accounts = [account(dir / f"evm-{i}.key") for i in range(members)]
    deployer = account(dir / "evm-deployer.key")
    addresses = tuple(evm_address(a) for a in accounts)
    saved = dir / "anchor-contract.txt"

    async def go() -> bytes:
        rpc = JsonRpc([url])
        for a in (*accounts, deployer):
            await rpc.call("anvil_setBalance", a.address, hex(10**21))
        if saved.exists():
            known = bytes.fromhex(saved.read_text().strip().removeprefix("0x"))
            contract = AnchorContract(rpc, known)
            if await contract.has_code() and await contract.members() == addresses \
                    and await contract.quorum() == quorum:
                return known
        address, _ = await deploy(rpc, deployer, DEVNET_CHAIN_ID, addresses, quorum)
        saved.write_text("0x" + address.hex() + "\n")
        return address

    return trio.run(go), addresses
