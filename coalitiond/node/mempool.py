"""Client and gossip intake, and relay: how envelopes reach the voter.

* Client channel (`client_intake`): submitted envelopes are checked a batch at a time and
  handed to the voter's inbox with the submitter to answer; `blocks?` requests go to the
  resolver's queue, `status?` is answered here.
* Gossip channel (`gossip_intake`): envelopes other members relayed are checked and handed
  to the inbox (nobody to answer); a driver's signed observation goes to the drivers.
* Relay (`gossip_relay`): envelopes the voter accepted from our own submitters come back
  through `relay_outbox` and are broadcast to the other members, a burst in one message.

Every envelope checked here is kept in the shared `CheckedEnvelopes`, so a block's
validation and execution do not verify it again on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import trio

from ..commands.envelope import CommandRefused, Envelope
from ..components.executor import Executor
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import RemoteError
from ..primitives.identity import digest as blake3_digest
from ..primitives.identity import short
from ..primitives.logs import get_logger
from ..transport.router import Channel, Router
from . import wire
from .drivers import Drivers
from .inbox import SUBMISSIONS, Submission, VoterInput, enqueue
from .verifier import CONSENSUS_REJECTED, CheckedEnvelopes, decoded_messages

log = get_logger(__name__)

#: Client requests taken from the client channel per batch (the verifier takes consensus
#: messages in batches of the same size, verifier.VERIFY_BATCH).
MAX_CLIENT_BATCH: Final = 256
#: Submitted or relayed envelopes are checked on the event loop when a batch has at most
#: INLINE_CHECK_ENVELOPES of them and INLINE_CHECK_BYTES in all; else in one worker call.
INLINE_CHECK_ENVELOPES: Final = 16
INLINE_CHECK_BYTES: Final = 64 * 1024
#: Envelopes waiting to be relayed to the other members; when full, relaying is skipped
#: (the envelope stays in our own batcher and we propose it when we lead).
MAX_GOSSIP_OUTBOX: Final = 4096
#: Bytes of envelopes relayed in one gossip message.
MAX_GOSSIP_BYTES: Final = 1024 * 1024


class Mempool:
    """The client and gossip channels' intake, and the relay of accepted envelopes."""

    def __init__(self, committee: CommitteeSpec, executor: Executor, drivers: Drivers,
                 router: Router, checked: CheckedEnvelopes,
                 inbox: trio.MemorySendChannel[VoterInput],
                 queue_block_request: Callable[[Channel, bytes, wire.BlocksRequest], None],
                 status: Callable[[], dict[str, Any]]) -> None:
        self.committee = committee
        self.executor = executor
        self.drivers = drivers
        self.router = router
        self.checked = checked
        self.inbox = inbox
        self.queue_block_request = queue_block_request
        self.status = status
        #: Envelopes the voter accepted from our submitters, to relay (never blocks the
        #: voter: it drops what does not fit).
        self.relay_outbox, self._relay_recv = trio.open_memory_channel[bytes](MAX_GOSSIP_OUTBOX)

    # -- client channel -------------------------------------------------------------------

    def _check_submissions(self, envelopes: Sequence[bytes]
                           ) -> list[Envelope | CommandRefused]:
        """Check submitted envelopes (event loop or worker thread); a refusal is returned,
        not raised, so one bad envelope does not cost the others their answer."""
        out: list[Envelope | CommandRefused] = []
        for data in envelopes:
            try:
                out.append(self.executor.check_client_command(data))
            except CommandRefused as e:
                out.append(e)
        return out

    async def client_intake(self) -> None:
        """Client requests, a batch at a time: submitted envelopes of one batch are checked
        together, on the event loop when they are few and small (one signature check each
        costs less than a worker-thread hand-off), else in one worker-thread call."""
        router = self.router
        rx = router.receive(Channel.CLIENT)
        while True:
            batch = [await rx.receive()]
            while len(batch) < MAX_CLIENT_BATCH:
                try:
                    batch.append(rx.receive_nowait())
                except trio.WouldBlock:
                    break
            submits: list[tuple[bytes, wire.Submit]] = []
            for sender, data in batch:
                try:
                    msg = wire.decode_message(data)
                except RemoteError as e:
                    CONSENSUS_REJECTED.labels("malformed client").inc()
                    log.debug("message.rejected", channel="client", sender=short(sender),
                              error=str(e))
                    continue
                if isinstance(msg, wire.Submit):
                    submits.append((sender, msg))
                elif isinstance(msg, wire.BlocksRequest):
                    self.queue_block_request(Channel.CLIENT, sender, msg)
                elif isinstance(msg, wire.StatusRequest):
                    await router.send(Channel.CLIENT, sender, wire.encode_message(
                        wire.Status(msg.request_id, self.status())))
            if not submits:
                continue
            envelopes = [m.envelope for _, m in submits]
            if len(envelopes) <= INLINE_CHECK_ENVELOPES and \
                    sum(len(e) for e in envelopes) <= INLINE_CHECK_BYTES:
                results = self._check_submissions(envelopes)
            else:
                results = await trio.to_thread.run_sync(self._check_submissions, envelopes)
            for (sender, msg), result in zip(submits, results, strict=True):
                if isinstance(result, CommandRefused):
                    SUBMISSIONS.labels("refused").inc()
                    await router.send(Channel.CLIENT, sender, wire.encode_message(wire.Submitted(
                        msg.request_id, blake3_digest(msg.envelope), False,
                        f"{result.reason}: {result}")))
                    continue
                self.checked.put(blake3_digest(msg.envelope), result)
                await enqueue(self.inbox, Submission(msg.envelope, result,
                                                     (sender, msg.request_id)))

    # -- gossip channel -------------------------------------------------------------------

    def _check_envelopes(self, envelopes: Sequence[bytes]
                         ) -> list[tuple[bytes, Envelope | None]]:
        """Worker thread: check each envelope; None for the ones that fail."""
        out: list[tuple[bytes, Envelope | None]] = []
        for data in envelopes:
            try:
                out.append((data, self.executor.check_client_command(data)))
            except CommandRefused:
                out.append((data, None))
        return out

    async def gossip_intake(self) -> None:
        async for sender, msg in decoded_messages(self.router, Channel.GOSSIP):
            index = self.committee.index_of(sender)
            if index is not None and isinstance(msg, wire.GossipObservation):
                self.drivers.on_observation(index, msg.observation)
                continue
            if index is None or not isinstance(msg, wire.GossipEnvelopes):
                log.debug("gossip.rejected", sender=short(sender), kind=type(msg).__name__)
                continue
            fresh = [e for e in msg.envelopes if blake3_digest(e) not in self.checked]
            if len(fresh) <= INLINE_CHECK_ENVELOPES and \
                    sum(len(e) for e in fresh) <= INLINE_CHECK_BYTES:
                checked = self._check_envelopes(fresh)
            else:
                checked = await trio.to_thread.run_sync(self._check_envelopes, fresh)
            for raw, envelope in checked:
                if envelope is None:
                    # A member relayed an envelope that does not check: its fault, not the
                    # client's; count it and carry on.
                    CONSENSUS_REJECTED.labels("relayed bad envelope").inc()
                    continue
                self.checked.put(blake3_digest(raw), envelope)
                await enqueue(self.inbox, Submission(raw, envelope, None))

    async def gossip_relay(self) -> None:
        """Relay accepted envelopes to the other members: everything queued when the relay
        runs goes in one message. No linger: the relay runs after the round that accepted
        the envelopes, so a burst is already queued, and waiting would only add to every
        command's latency (the leader needs the envelope to propose it)."""
        while True:
            batch = [await self._relay_recv.receive()]
            size = len(batch[0])
            while len(batch) < wire.MAX_GOSSIP_BATCH and size < MAX_GOSSIP_BYTES:
                try:
                    envelope = self._relay_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(envelope)
                size += len(envelope)
            await self.router.broadcast(
                Channel.GOSSIP, wire.encode_message(wire.GossipEnvelopes(tuple(batch))))
