"""The EVM anchor sink: each Chronicle member posts `(upto_seq, digest)` to the committee's
`ChronicleAnchors` contract (contracts/ChronicleAnchors.sol) from its own account.

What it posts is derived from chain state plus the Chronicle's own log, never from local
memory alone:

* `prepare()` (before the first publish, and again after any failure) checks the chain id,
  that the contract exists, and that its member list and quorum are the committee's; then
  reads `nextSeq(me)` at the confirmation depth: every anchor below it is posted and buried,
  so `resume_after()` tells the publisher to start above it.
* `publish(anchor)` first reads `posted(upto_seq, me)`: already there (a post that landed
  before a crash or a lost answer) means nothing is sent; it only waits for the depth. A
  member's posts must strictly increase on chain (`NotAfterLastPost`), so even a lost race
  cannot post twice.
* Sending: nonce = the account's *mined* transaction count, so a post still pending from
  before (a restart, a chain that was down) is replaced, not duplicated; fees from the latest
  base fee and the node's tip, raised by 25 % on every resend of the same nonce; gas from
  `eth_estimateGas` (a revert there is reported with the contract's error) plus 25 %; the
  balance is checked first.
* Confirmation: `posted(upto_seq, me)` read at block `latest - confirmations + 1` equals the
  digest.

Every failure is an `AnchorPublishError` with one line (RPC down, wrong chain, out of funds,
reverted, not mined in time); the publisher retries with backoff. None of this runs on the
consensus path: the publisher is its own task and a dead chain only grows the anchor lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import trio
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr

from ...primitives.errors import OperatorError
from ...primitives.logs import get_logger
from .anchors import AnchorPublishError, AnchorSink
from .evm_contract import (
    ZERO32,
    AnchorContract,
    address_hex,
    describe_revert,
    fee_caps,
    post_data,
)
from .evm_keys import evm_address
from .evm_rpc import JsonRpc, RpcCallError, hex_int
from .records import ChronicleAnchor

log = get_logger(__name__)

DEFAULT_POLL_INTERVAL_S: Final = 1.0
#: How long one attempt waits for its transaction to be mined and buried before it gives up
#: (the publisher retries; a resend of the same nonce raises the fee).
DEFAULT_ATTEMPT_TIMEOUT_S: Final = 120.0
#: Resends of one nonce raise both fee caps by this factor (nodes want >= 10 %).
FEE_BUMP_NUM: Final = 5
FEE_BUMP_DEN: Final = 4
#: eth_estimateGas times this (the estimate is tight; a post costs 61k to 125k gas).
GAS_MARGIN_NUM: Final = 5
GAS_MARGIN_DEN: Final = 4
#: Gas limit floor of a post: the costliest path measured is 125k (a member's first post
#: that also completes the quorum); see docs/chronicle.md §7.
MIN_POST_GAS: Final = 160_000


@dataclass(slots=True)
class _Sent:
    """The last transaction this process sent (for a fee bump on resend)."""

    upto_seq: int
    nonce: int
    max_fee: int
    tip: int
    tx_hash: str


class EvmAnchorSink(AnchorSink):
    def __init__(self, rpc: JsonRpc, account: LocalAccount, *, chain_id: int,
                 contract: bytes, members: tuple[bytes, ...], me: int, quorum: int,
                 confirmations: int = 2, poll_interval: float = DEFAULT_POLL_INTERVAL_S,
                 attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT_S) -> None:
        if not 0 <= me < len(members):
            raise OperatorError(f"component.anchor_sink.members: lists {len(members)} "
                                f"addresses; member {me} has none")
        self.address = evm_address(account)
        if members[me] != self.address:
            raise OperatorError(
                f"component.anchor_sink.key_file: its account {account.address} is not this "
                f"member's address in component.anchor_sink.members[{me}] "
                f"({address_hex(members[me])})")
        self.rpc = rpc
        self.account = account
        self.chain_id = chain_id
        self.contract = AnchorContract(rpc, contract)
        self.members = members
        self.me = me
        self.quorum = quorum
        self.confirmations = confirmations
        self.poll_interval = poll_interval
        self.attempt_timeout = attempt_timeout
        self._prepared = False
        self._resume = -1
        self._sent: _Sent | None = None
        #: Transactions this process sent (tests: no double post).
        self.sent = 0
        #: Posts sent or found pending (its own, from before a restart); `wait_attempts`.
        self.attempts = 0
        self._attempt_event = trio.Event()

    # -- state checks -------------------------------------------------------------------

    async def prepare(self) -> None:
        chain = hex_int(await self.rpc.call("eth_chainId"), "eth_chainId")
        if chain != self.chain_id:
            raise AnchorPublishError(f"RPC {self.rpc.urls[0]}: chain id {chain}, but "
                                     f"component.anchor_sink.chain_id is {self.chain_id}")
        where = f"contract {self.contract.address_hex} on chain {chain}"
        if not await self.contract.has_code():
            raise AnchorPublishError(f"{where}: no contract code at that address")
        members = await self.contract.members()
        if members != self.members:
            raise AnchorPublishError(f"{where}: its members are not component.anchor_sink."
                                     f"members ({len(members)} vs {len(self.members)} "
                                     "addresses, or another order)")
        quorum = await self.contract.quorum()
        if quorum != self.quorum:
            raise AnchorPublishError(f"{where}: quorum {quorum}, the committee's is "
                                     f"{self.quorum}")
        depth = await self._depth_block()
        nxt = await self.contract.next_seq(self.address, depth) if depth >= 0 else 0
        self._resume = nxt - 1
        self._prepared = True
        log.info("anchors.evm.ready", contract=self.contract.address_hex, chain_id=chain,
                 account=self.account.address, resume_after=self._resume)

    def resume_after(self) -> int:
        return self._resume

    async def wait_attempts(self, count: int) -> None:
        """Return once this process has posted (or found its post pending) `count` times."""
        while self.attempts < count:
            await self._attempt_event.wait()

    async def _latest(self) -> int:
        return hex_int(await self.rpc.call("eth_blockNumber"), "eth_blockNumber")

    async def _depth_block(self) -> int:
        """The newest block buried `confirmations` deep (-1: the chain is not that long)."""
        return await self._latest() - self.confirmations + 1

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, anchor: ChronicleAnchor, committee_id: bytes) -> None:
        try:
            if not self._prepared:
                await self.prepare()
            with trio.move_on_after(self.attempt_timeout):
                await self._publish(anchor)
                return
        except AnchorPublishError:
            self._prepared = False  # the chain may have changed under us: check it again
            raise
        self._prepared = False
        raise AnchorPublishError(f"post of upto_seq {anchor.upto_seq} not mined and "
                                 f"{self.confirmations} deep within "
                                 f"{self.attempt_timeout:g} s; will resend")

    async def _publish(self, anchor: ChronicleAnchor) -> None:
        upto, digest = anchor.upto_seq, anchor.digest
        while True:
            if await self.confirmed(upto, digest):
                self._resume = max(self._resume, upto)
                self._sent = None
                log.info("anchors.evm.confirmed", upto_seq=upto)
                return
            current = await self.contract.posted(upto, self.address)
            if current == digest:
                await trio.sleep(self.poll_interval)  # mined, not yet deep enough
                continue
            if current != ZERO32:
                log.error("anchors.evm.own_conflict", upto_seq=upto, posted=current.hex(),
                          committed=digest.hex(),
                          error=f"account {self.account.address} already posted another "
                                f"digest for upto_seq {upto}; the chain keeps it")
                return
            nxt = await self.contract.next_seq(self.address)
            if nxt > upto:
                log.error("anchors.evm.skipped", upto_seq=upto,
                          error=f"account {self.account.address} already posted upto_seq "
                                f"{nxt - 1}; upto_seq {upto} can no longer be posted")
                return
            sent = await self._send(upto, digest)
            self.attempts += 1
            self._attempt_event.set()
            self._attempt_event = trio.Event()
            if sent:
                await self._wait_mined()
            else:
                log.info("anchors.evm.pending", upto_seq=upto)
                await trio.sleep(self.poll_interval)

    async def confirmed(self, upto: int, digest: bytes) -> bool:
        """Our post of `digest` for `upto` is in the chain `confirmations` blocks deep."""
        depth = await self._depth_block()
        return depth >= 0 and await self.contract.posted(upto, self.address, depth) == digest

    async def _own_post_pending(self, upto: int) -> bool:
        """The node estimates against its pending state: a post of ours for `upto` still
        pending there (sent before a restart) makes a new one revert. It is waited for, never
        sent twice."""
        pending = await self.contract.next_seq(self.address, "pending")
        mined = await self.contract.next_seq(self.address)
        return mined <= upto < pending

    async def _send(self, upto: int, digest: bytes) -> bool:
        """Send our post; False when one of ours is already pending (nothing sent)."""
        me = self.account.address
        data = post_data(upto, digest)
        call = {"from": me, "to": self.contract.address_hex, "data": "0x" + data.hex()}
        try:
            estimate = hex_int(await self.rpc.call("eth_estimateGas", call), "eth_estimateGas")
        except RpcCallError as e:
            reason = describe_revert(e.data)
            if reason.startswith("NotAfterLastPost(") and await self._own_post_pending(upto):
                return False
            detail = "" if e.data else f" ({e})"
            raise AnchorPublishError(f"post(upto_seq={upto}) would revert: {reason}{detail}"
                                     ) from None
        # The estimate depends on the order the members' posts land in (the quorum-reaching
        # post writes more): never below the costliest path, unused gas is not charged.
        gas = max(estimate * GAS_MARGIN_NUM // GAS_MARGIN_DEN, MIN_POST_GAS)
        nonce = hex_int(await self.rpc.call("eth_getTransactionCount", me, "latest"),
                        "eth_getTransactionCount")
        max_fee, tip = await fee_caps(self.rpc)
        last = self._sent
        if last is not None and last.nonce == nonce:
            max_fee = max(max_fee, last.max_fee * FEE_BUMP_NUM // FEE_BUMP_DEN)
            tip = max(tip, last.tip * FEE_BUMP_NUM // FEE_BUMP_DEN)
        balance = hex_int(await self.rpc.call("eth_getBalance", me, "latest"), "eth_getBalance")
        if balance < gas * max_fee:
            raise AnchorPublishError(f"account {me} holds {balance} wei; a post needs up to "
                                     f"{gas * max_fee} wei: out of funds (fund the account)")
        signed = self.account.sign_transaction({
            "chainId": self.chain_id, "nonce": nonce, "gas": gas,
            "to": HexStr(self.contract.address_hex), "value": 0, "data": data, "type": 2,
            "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip})
        tx_hash = "0x" + signed.hash.hex().removeprefix("0x")
        self._sent = _Sent(upto, nonce, max_fee, tip, tx_hash)
        try:
            await self.rpc.call("eth_sendRawTransaction", "0x" + signed.raw_transaction.hex())
        except RpcCallError as e:
            text = str(e).lower()
            if "insufficient funds" in text:
                raise AnchorPublishError(f"account {me}: out of funds ({e})") from None
            if "already known" not in text:
                raise
        self.sent += 1
        log.info("anchors.evm.sent", upto_seq=upto, nonce=nonce, tx=tx_hash, gas=gas)
        return True

    async def _wait_mined(self) -> None:
        assert self._sent is not None
        while True:
            receipt = await self.rpc.call("eth_getTransactionReceipt", self._sent.tx_hash)
            if isinstance(receipt, dict):
                if hex_int(receipt.get("status"), "status") != 1:
                    block = hex_int(receipt.get("blockNumber"), "blockNumber")
                    raise AnchorPublishError(f"post of upto_seq {self._sent.upto_seq} "
                                             f"reverted in block {block} (tx "
                                             f"{self._sent.tx_hash})")
                return
            # Replaced or pending: the state read at the top of the loop decides.
            nonce = hex_int(await self.rpc.call("eth_getTransactionCount", self.account.address,
                                                "latest"), "eth_getTransactionCount")
            if nonce > self._sent.nonce:
                return
            await trio.sleep(self.poll_interval)
