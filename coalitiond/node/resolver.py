"""Blocks between members: fetching the ones we miss (catch-up) and serving the ones we hold.

Fetching: the voter asks for a range (the core's FetchBlocks, through a channel of one:
when a fetch is under way the core asks again if still behind); the fetcher asks connected
members in turn, checks everything a reply holds on a worker thread (`check_fetched`)
before the core sees it, and hands the chain to the voter's inbox (BlocksFetched).

Nullifications by view (docs/protocol.md §9) are fetched by the core itself (it picks the
peer, sends `nullifications?` and times the answer out), over the consensus channel; what
the shell adds is `SolicitedNullifications`: an answer is verified only if it answers a
request the core sent to that member, so no peer can make us spend signature checks on
certificates we did not ask for.

Serving: `blocks?` requests from the sync channel (catch-up) and the client channel
(readers, queued here by the mempool's client intake) each have their own bounded queue and
server, so readers cannot crowd out catch-up. A `wait` request for a block we do not hold
yet is parked until the voter reports progress (`wake_parked`) or it times out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from ..commands.envelope import CommandRefused
from ..components.executor import Executor
from ..consensus.events import BlocksFetched, FetchBlocks
from ..consensus.messages import (
    Message,
    NullificationsAnswer,
    NullificationsRequest,
    verify_fetched,
)
from ..consensus.types import Block, Certificate, VoteKind
from ..log.aio import AsyncStore
from ..log.base import BelowBase
from ..log.records import FinalizedBlock
from ..log.sqlite import Store
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import encode
from ..primitives.errors import LocalError, RemoteError
from ..primitives.identity import digest as blake3_digest
from ..primitives.identity import short
from ..primitives.logs import get_logger
from ..primitives.metrics import counter
from ..transport.router import Channel, Router
from . import wire
from .inbox import VoterInput
from .journal import BlockJournal
from .verifier import CheckedEnvelopes, Prechecked, decoded_messages

log = get_logger(__name__)

#: Pending block-range requests (tail, catch-up service) and parked "wait" requests.
MAX_BLOCK_REQUESTS: Final = 256
MAX_PARKED_REQUESTS: Final = 256
#: Bytes kept free in a "blocks" reply for its own header and the transport's framing.
REPLY_HEADROOM: Final = 64 * 1024
#: How long catch-up waits for one peer before asking the next.
FETCH_TIMEOUT_S: Final = 5.0

CATCHUP = counter("sync_fetches_total", "Catch-up fetches, by result", ("result",))
BLOCK_REQUESTS_DROPPED = counter("blocks_requests_dropped_total",
                                 "blocks? requests dropped because their queue was full",
                                 ("channel",))


class SolicitedNullifications:
    """The open `nullifications?` request the core sent each member (docs/protocol.md §9):
    at most one per member, so at most n entries. `asked` is called by the voter when the
    request leaves; `admit` by the verifier before it checks any signature of an answer. An
    answer consumes its sender's entry whatever it holds, so each request lets in at most
    one answer (dict operations only: `admit` may run on the verifier's worker thread)."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[int, int]] = {}

    def asked(self, member: int, request: NullificationsRequest) -> None:
        self._open[member] = (request.first, request.last)

    def admit(self, member: int, msg: Message) -> bool:
        """False for an answer nobody asked this member for; True for anything else."""
        if not isinstance(msg, NullificationsAnswer):
            return True
        return self._open.pop(member, None) == (msg.first, msg.last)


@dataclass(frozen=True, slots=True)
class _BlockRequest:
    channel: Channel
    peer: bytes
    request: wire.BlocksRequest
    received_at: float


class Resolver:
    """Catch-up (the fetcher) and the block servers of one member.

    `height` and `diverged` are read at each use from the voter's status: the height of the
    last block executed, and why our state disagrees with the chain (None while it agrees).
    """

    def __init__(self, committee: CommitteeSpec, own_peer: bytes, executor: Executor,
                 store: AsyncStore, router: Router, member_links: Callable[[], list[bytes]],
                 journal: BlockJournal, checked: CheckedEnvelopes,
                 inbox: trio.MemorySendChannel[VoterInput],
                 height: Callable[[], int], diverged: Callable[[], str | None],
                 snapshot_requests: Callable[[bytes, wire.SnapshotRequest], None] | None = None
                 ) -> None:
        self.committee = committee
        self.own_peer = own_peer
        self.executor = executor
        self.store = store
        self.router = router
        self.member_links = member_links
        self.journal = journal
        self.checked = checked
        self.inbox = inbox
        self.height = height
        self.diverged = diverged
        #: Where `snapshot?` requests go (node/state_sync.py's server); None: refused.
        self.snapshot_requests = snapshot_requests
        self._block_requests = {
            c: trio.open_memory_channel[_BlockRequest | None](MAX_BLOCK_REQUESTS)
            for c in (Channel.SYNC, Channel.CLIENT)}
        #: The voter's fetch requests (the core's FetchBlocks): one at a time.
        self.fetch_requests, self._fetch_recv = trio.open_memory_channel[FetchBlocks](1)
        self._fetch_replies: dict[tuple[bytes, int],
                                  trio.MemorySendChannel[wire.Blocks | wire.Refused]] = {}
        self._next_request_id = 1

    # -- intake ---------------------------------------------------------------------------

    def queue_block_request(self, channel: Channel, peer: bytes,
                            request: wire.BlocksRequest) -> None:
        try:
            self._block_requests[channel][0].send_nowait(
                _BlockRequest(channel, peer, request, trio.current_time()))
        except trio.WouldBlock:
            BLOCK_REQUESTS_DROPPED.labels(channel.label).inc()

    def wake_parked(self) -> None:
        """The voter executed blocks: parked `wait` requests may be answerable now."""
        for send, _ in self._block_requests.values():
            with contextlib.suppress(trio.WouldBlock):
                send.send_nowait(None)

    async def sync_intake(self) -> None:
        async for sender, msg in decoded_messages(self.router, Channel.SYNC):
            if isinstance(msg, wire.BlocksRequest):
                self.queue_block_request(Channel.SYNC, sender, msg)
            elif isinstance(msg, wire.SnapshotRequest) and self.snapshot_requests is not None:
                self.snapshot_requests(sender, msg)
            elif isinstance(msg, wire.Blocks | wire.Refused):
                # Only the member we asked can answer (request ids are guessable); a refusal
                # (a member below whose base we asked) sends us to the next member at once.
                reply = self._fetch_replies.get((sender, msg.request_id))
                if reply is not None:
                    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError,
                                             trio.ClosedResourceError):
                        reply.send_nowait(msg)

    # -- serving blocks (tail and catch-up) ---------------------------------------------

    def read_blocks(self, s: Store, start: int, count: int, limit: int
                    ) -> list[FinalizedBlock]:
        """Up to `count` blocks from `start` whose encoded reply fits `limit` bytes."""
        out: list[FinalizedBlock] = []
        size = 0
        stop = min(s.height, start + count - 1)
        for fb in s.iter_finalized(start, stop):
            size += len(encode(fb.to_wire()))
            if size > limit:
                break
            out.append(fb)
        return out

    async def _serve(self, req: _BlockRequest) -> None:
        r = req.request
        diverged = self.diverged()
        if diverged is not None:
            # docs/protocol.md §7: a member whose state disagrees with the chain serves no
            # reads until an operator has looked; the reader learns why at once.
            await self.router.send(req.channel, req.peer, wire.encode_message(
                wire.Refused(r.request_id, f"state diverged: {diverged}")))
            return
        # Measured on the real encoding, with room for the reply's own framing.
        limit = min(wire.MAX_REPLY_BYTES, self.router.max_payload - REPLY_HEADROOM)
        try:
            blocks = await self.store.run(lambda s: self.read_blocks(
                s, max(r.from_height, 1), max(r.max_blocks, 1), limit))
            if not blocks and r.from_height <= self.height():
                log.error("blocks.too_large", height=r.from_height, limit=limit)
            # Blocks are appended before they are executed (and the height moves): the
            # tip we report is never below the blocks we send.
            tip = max(self.height(), blocks[-1].height if blocks else 0)
            await self.router.send(req.channel, req.peer, wire.encode_message(
                wire.Blocks(r.request_id, tip, tuple(blocks))))
        except BelowBase as e:
            # A state-synced member holds no blocks below its base: say so, the asker tries
            # another member (docs/protocol.md §12).
            await self.router.send(req.channel, req.peer, wire.encode_message(
                wire.Refused(r.request_id, str(e))))
        except (LocalError, RemoteError) as e:
            # Serving a reader never stops the member.
            log.error("blocks.serve_failed", peer=short(req.peer), error=str(e))

    async def block_server(self, channel: Channel) -> None:
        """Serves one channel's `blocks?` requests; catch-up (sync) and readers (client)
        each have their own queue and server, so readers cannot crowd out catch-up."""
        recv = self._block_requests[channel][1]
        parked: list[_BlockRequest] = []
        while True:
            item: _BlockRequest | None = None
            with trio.move_on_after(1.0):
                item = await recv.receive()
            now = trio.current_time()
            if item is not None:
                if item.request.wait and item.request.from_height > self.height():
                    if len(parked) < MAX_PARKED_REQUESTS:
                        parked.append(item)
                    continue
                await self._serve(item)
            still: list[_BlockRequest] = []
            for p in parked:
                if p.request.from_height <= self.height() \
                        or now - p.received_at > wire.BLOCKS_WAIT_S:
                    await self._serve(p)
                else:
                    still.append(p)
            parked = still

    # -- fetching blocks (catch-up) -------------------------------------------------------

    async def fetcher(self) -> None:
        """Catch-up: ask connected members in turn; check everything before the core sees it."""
        turn = 0
        async for request in self._fetch_recv:
            peers = [p for p in self.member_links() if p != self.own_peer]
            for attempt in range(len(peers)):
                peer = peers[(turn + attempt) % len(peers)]
                chain = await self._fetch_from(peer, request)
                if chain is not None:
                    turn += attempt + 1
                    await self.inbox.send(BlocksFetched(chain))
                    break

    def check_fetched(self, blocks: Sequence[FinalizedBlock]
                      ) -> tuple[tuple[tuple[Block, Certificate], ...], list[FinalizedBlock],
                                 Prechecked]:
        """Worker thread: everything a peer sent for catch-up, checked before use.

        The chain (links, finalize certificates) must verify; of the rest — each block's
        votes and certificates — only what is about exactly that block and verifies is kept,
        so a Byzantine peer can neither crash us nor plant bad signatures in our log. The
        blocks' envelopes are checked here too, off the event loop.
        """
        chain = chain_of(blocks)
        if not chain:
            raise RemoteError("the reply holds no finalised run of blocks")
        verify_fetched(self.committee, chain)
        kept: list[FinalizedBlock] = []
        checked: Prechecked = []
        for fb, _ in zip(blocks, chain, strict=False):
            b = fb.block

            def certified(cert: Certificate | None, kind: VoteKind,
                          b: Block = b) -> Certificate | None:
                if cert is None or (cert.kind, cert.epoch, cert.view, cert.digest) != (
                        kind, b.epoch, b.view, b.digest):
                    return None
                try:
                    cert.verify(self.committee)
                except RemoteError:
                    return None
                return cert

            votes = tuple(v for v in fb.votes
                          if v.kind is not VoteKind.NULLIFY
                          and (v.epoch, v.view, v.digest) == (b.epoch, b.view, b.digest)
                          and v.verify(self.committee))
            kept.append(FinalizedBlock(b, certified(fb.finalization, VoteKind.FINALIZE),
                                       certified(fb.notarization, VoteKind.NOTARIZE), votes,
                                       fb.checkpoint))
            for command in b.commands:
                # A refused envelope is refused again, deterministically, when applied.
                with contextlib.suppress(CommandRefused):
                    checked.append((blake3_digest(command), self.executor.check_command(command)))
        return chain, kept, checked

    async def _fetch_from(self, peer: bytes, request: FetchBlocks
                          ) -> tuple[tuple[Block, Certificate], ...] | None:
        rid = self._next_request_id
        self._next_request_id += 1
        send, recv = trio.open_memory_channel[wire.Blocks | wire.Refused](1)
        self._fetch_replies[(peer, rid)] = send
        try:
            count = min(request.to_height - request.from_height + 1, wire.MAX_BLOCKS_PER_REPLY)
            sent = await self.router.send(Channel.SYNC, peer, wire.encode_message(
                wire.BlocksRequest(rid, request.from_height, count, False)))
            if not sent:
                CATCHUP.labels("not sent").inc()
                return None
            reply: wire.Blocks | wire.Refused | None = None
            with trio.move_on_after(FETCH_TIMEOUT_S):
                reply = await recv.receive()
            if isinstance(reply, wire.Refused):
                CATCHUP.labels("refused").inc()
                return None
            if reply is None or not reply.blocks:
                CATCHUP.labels("timeout" if reply is None else "empty").inc()
                return None
            try:
                chain, kept, checked = await trio.to_thread.run_sync(self.check_fetched,
                                                                     reply.blocks)
            except RemoteError as e:
                CATCHUP.labels("invalid").inc()
                log.warning("sync.invalid_chain", peer=short(peer), error=str(e))
                return None
            for fb in kept:
                self.journal.fetched(fb)
            self.checked.put_all(checked)
            CATCHUP.labels("ok").inc()
            return chain
        finally:
            del self._fetch_replies[(peer, rid)]


def chain_of(blocks: Sequence[FinalizedBlock]) -> tuple[tuple[Block, Certificate], ...]:
    """Pair each fetched block with the certificate that finalises it or a later block.

    A trailing run finalised by nothing we received is left out; it is fetched again later.
    """
    pairs: list[tuple[Block, Certificate]] = []
    later: Certificate | None = None
    for fb in reversed(blocks):
        if fb.finalization is not None:
            later = fb.finalization
        if later is not None:
            pairs.append((fb.block, later))
    pairs.reverse()
    return tuple(pairs)
