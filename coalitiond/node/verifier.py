"""Intake verification of consensus messages: nothing reaches the voter unverified.

The verifier takes the consensus channel a batch at a time, decodes it, checks every
signature (on the event loop when a batch is small, else in one worker-thread call) and
pre-checks the client envelopes of proposals, then hands each message to the voter's inbox.
It keeps the two tables that spare the event loop repeated signature checks, both shared
with the other parts:

* `VerifiedVotes` (consensus.messages): vote signatures already verified, ours included
  (the voter reports what it signs through `remember_verified`);
* `CheckedEnvelopes`: envelopes whose signature and stateless checks passed, filled by
  every part that checks one (verifier, mempool, resolver) and read when a block is
  validated and executed (voter).

`SeenMessages` is where every verified message, received or our own, is shown once: its
votes and notarization go to the block journal, a proposal's first sighting to the
finality-latency histogram.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Final, TypeVar

import trio

from ..commands.envelope import CommandRefused, Envelope
from ..commands.member import MemberCommand
from ..components.executor import Executor
from ..consensus.events import MessageReceived
from ..consensus.messages import (
    EvidenceMessage,
    Finalization,
    Message,
    Notarization,
    Nullification,
    NullificationsAnswer,
    Proposal,
    ProposalHeader,
    RecallAnswer,
    VerifiedVotes,
    decode_message,
    verify_message,
)
from ..consensus.types import Vote
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import RemoteError
from ..primitives.identity import digest as blake3_digest
from ..primitives.identity import short
from ..primitives.logs import get_logger
from ..primitives.metrics import counter
from ..transport.router import Channel, Router
from . import trace, wire
from .inbox import VoterInput, enqueue
from .journal import BlockJournal, bounded_put

log = get_logger(__name__)
_T = TypeVar("_T")

#: Incoming consensus messages verified per worker-thread call.
VERIFY_BATCH: Final = 256
#: A batch of consensus messages that needs at most this many signature checks (~80 µs
#: each) is verified on the event loop: cheaper than a worker-thread hand-off (~300 µs of
#: context switches on a busy machine).
INLINE_VERIFY_SIGNATURES: Final = 12
#: Consensus batches of at most this many bytes are decoded on the event loop; larger
#: ones (blocks with many commands) are decoded and verified on a worker thread.
INLINE_DECODE_BYTES: Final = 64 * 1024
#: Vote signatures remembered as verified (consensus.messages.VerifiedVotes): a few
#: hundred views' worth at n = 7.
MAX_VERIFIED_SIGNATURES: Final = 8192
#: Envelopes whose signature and stateless checks passed, by blake3 of their bytes, so a
#: block's validation and execution do not verify them again on the event loop.
MAX_CHECKED_ENVELOPES: Final = 65_536
#: Proposals whose first-seen time is kept for the finality-latency histogram.
MAX_TRACKED_PROPOSALS: Final = 1024

CONSENSUS_REJECTED = counter("consensus_messages_rejected_total",
                             "Consensus messages refused before the core, by reason", ("reason",))


#: What a check of one proposal's envelopes found: (blake3 of the bytes, checked command).
Prechecked = list[tuple[bytes, Envelope | MemberCommand]]


class CheckedEnvelopes:
    """Commands whose signature and stateless checks passed, by blake3 of their bytes.

    Written only on the event loop; worker threads (the verifier's, the resolver's) only read
    it, and a miss only costs a check again."""

    def __init__(self, limit: int = MAX_CHECKED_ENVELOPES) -> None:
        self._limit = limit
        self._table: OrderedDict[bytes, Envelope | MemberCommand] = OrderedDict()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._table

    def get(self, digest: bytes) -> Envelope | MemberCommand | None:
        return self._table.get(digest)

    def put(self, digest: bytes, checked: Envelope | MemberCommand) -> None:
        bounded_put(self._table, digest, checked, self._limit)

    def put_all(self, checked: Prechecked) -> None:
        for d, command in checked:
            self.put(d, command)


class SeenMessages:
    """Keeps what the log will want of every verified message (votes and notarizations, in
    the journal) and when each proposal was first seen (the finality-latency histogram)."""

    def __init__(self, journal: BlockJournal) -> None:
        self.journal = journal
        self._first_seen: OrderedDict[bytes, float] = OrderedDict()

    def observe(self, msg: Message) -> None:
        self.journal.observe(msg)
        if isinstance(msg, Proposal) and msg.block.digest not in self._first_seen:
            bounded_put(self._first_seen, msg.block.digest, trio.current_time(),
                        MAX_TRACKED_PROPOSALS)

    def take_first_seen(self, digest: bytes) -> float | None:
        """When the proposal of block `digest` was first seen (once; None if not tracked)."""
        return self._first_seen.pop(digest, None)


async def decoded_messages(router: Router, channel: Channel
                           ) -> AsyncIterator[tuple[bytes, wire.Message]]:
    """A channel's messages, decoded; what does not decode is counted and dropped (the
    sender's fault, never a reason to stop)."""
    async for sender, data in router.receive(channel):
        try:
            msg = wire.decode_message(data)
        except RemoteError as e:
            CONSENSUS_REJECTED.labels(f"malformed {channel.label}").inc()
            log.debug("message.rejected", channel=channel.label, sender=short(sender),
                      error=str(e))
            continue
        yield sender, msg


class Verifier:
    """The consensus channel's intake: decode, verify, pre-check, hand to the voter."""

    def __init__(self, committee: CommitteeSpec, executor: Executor, router: Router,
                 checked: CheckedEnvelopes, seen: SeenMessages,
                 inbox: trio.MemorySendChannel[VoterInput],
                 admit: Callable[[int, Message], bool] | None = None) -> None:
        self.committee = committee
        self.executor = executor
        self.router = router
        #: Unsolicited fetch answers are dropped before any signature check (§9).
        self.admit = admit
        self.checked = checked
        self.seen = seen
        self.inbox = inbox
        #: Written only on the event loop; the verifying worker thread only reads it.
        self._verified_votes = VerifiedVotes(MAX_VERIFIED_SIGNATURES)
        #: CPU the worker thread spent on the current batch (for the trace, node/trace.py).
        self._worker_cpu_ns = 0

    def _decode(self, batch: list[tuple[bytes, bytes]]) -> list[tuple[int, Message]]:
        """Decode a batch of consensus messages; drop (and count) non-members and garbage."""
        out: list[tuple[int, Message]] = []
        for sender, data in batch:
            index = self.committee.index_of(sender)
            if index is None:
                CONSENSUS_REJECTED.labels("not a member").inc()
                continue
            try:
                msg = decode_message(self.committee, data)
            except RemoteError as e:
                CONSENSUS_REJECTED.labels(type(e).__name__).inc()
                log.debug("consensus.rejected", sender=short(sender), error=str(e))
                continue
            if self.admit is not None and not self.admit(index, msg):
                CONSENSUS_REJECTED.labels("unsolicited answer").inc()
                continue
            out.append((index, msg))
        return out

    def _signature_checks(self, msg: Message) -> int:
        """About how many ed25519 verifications `msg` costs (the inline-or-thread choice)."""
        if isinstance(msg, Proposal):
            return 1 + len(msg.block.evidence) + sum(
                1 for c in msg.block.commands if blake3_digest(c) not in self.checked)
        if isinstance(msg, Notarization | Finalization):
            extra = 0 if msg.block is None else len(msg.block.evidence)
            return self._verified_votes.unknown_in(msg.certificate) + extra
        if isinstance(msg, Nullification):
            return self._verified_votes.unknown_in(msg.certificate)
        if isinstance(msg, NullificationsAnswer):
            return sum(self._verified_votes.unknown_in(c) for c in msg.certificates)
        if isinstance(msg, ProposalHeader):
            return 0 if self._verified_votes.knows_proposal(
                self.committee.epoch, msg.view, msg.digest, msg.proposer, msg.signature) else 1
        if isinstance(msg, Vote):
            return 1
        if isinstance(msg, RecallAnswer):
            return len(msg.statements)
        return 2 if isinstance(msg, EvidenceMessage) else 0  # sync and recall requests: none

    def _verify_decoded(self, decoded: list[tuple[int, Message]]
                        ) -> list[tuple[MessageReceived, Prechecked]]:
        """Verify signatures and pre-check proposed envelopes (event loop or worker thread:
        it reads `checked` but never writes it)."""
        out = []
        for index, msg in decoded:
            try:
                verify_message(self.committee, msg, self._verified_votes)
            except RemoteError as e:
                CONSENSUS_REJECTED.labels(type(e).__name__).inc()
                log.debug("consensus.rejected", sender=index, error=str(e))
                continue
            checked: Prechecked = []
            if isinstance(msg, Proposal):
                for command in msg.block.commands:
                    d = blake3_digest(command)
                    if d in self.checked:
                        continue
                    try:
                        checked.append((d, self.executor.check_command(command)))
                    except CommandRefused:
                        break  # the core's hook will refuse the block
            out.append((MessageReceived(index, msg), checked))
        return out

    def _on_worker(self, fn: Callable[[_T], list[tuple[MessageReceived, Prechecked]]], arg: _T
                   ) -> list[tuple[MessageReceived, Prechecked]]:
        """Worker thread: run `fn(arg)`, noting the thread's CPU for the trace."""
        cpu0 = time.thread_time_ns()
        try:
            return fn(arg)
        finally:
            self._worker_cpu_ns = time.thread_time_ns() - cpu0

    def _decode_and_verify(self, batch: list[tuple[bytes, bytes]]
                           ) -> list[tuple[MessageReceived, Prechecked]]:
        """Worker thread: decode a large batch, verify it, pre-check proposed envelopes."""
        return self._verify_decoded(self._decode(batch))

    async def run(self) -> None:
        """Verify incoming consensus messages in batches. A small batch (a few votes or a
        certificate: up to INLINE_VERIFY_SIGNATURES checks, ~60 µs each) is verified on the
        event loop: a worker-thread hand-off costs more than that in context switches on a
        busy machine. Larger batches go to a worker thread, off the loop."""
        rx = self.router.receive(Channel.CONSENSUS)
        limiter = trio.CapacityLimiter(1)
        while True:
            batch = [await rx.receive()]
            tracing = trace.begin() if trace.TRACER is not None else None
            while len(batch) < VERIFY_BATCH:
                try:
                    batch.append(rx.receive_nowait())
                except trio.WouldBlock:
                    break
            verified: list[tuple[MessageReceived, Prechecked]]
            self._worker_cpu_ns = 0
            offloaded_at: int | None = None
            if sum(len(data) for _, data in batch) > INLINE_DECODE_BYTES:
                offloaded_at = time.thread_time_ns()
                verified = await trio.to_thread.run_sync(self._on_worker,
                                                         self._decode_and_verify, batch,
                                                         limiter=limiter)
            else:
                decoded = self._decode(batch)
                if sum(self._signature_checks(m) for _, m in decoded) <= INLINE_VERIFY_SIGNATURES:
                    verified = self._verify_decoded(decoded)
                else:
                    offloaded_at = time.thread_time_ns()
                    verified = await trio.to_thread.run_sync(self._on_worker,
                                                             self._verify_decoded, decoded,
                                                             limiter=limiter)
            if tracing is not None:
                # The loop's CPU up to the hand-off (other tasks ran while it waited), and
                # the worker's.
                loop_cpu = (time.thread_time_ns() if offloaded_at is None else offloaded_at
                            ) - tracing[0]
                _trace_verified(verified, tracing[1], loop_cpu + self._worker_cpu_ns)
            for event, checked in verified:
                self.checked.put_all(checked)
                self.remember_verified(event.message)
                self.seen.observe(event.message)
                await enqueue(self.inbox, event)

    def remember_verified(self, msg: Message) -> None:
        """Note the vote signatures in a verified message (or one we signed ourselves)."""
        if isinstance(msg, Vote):
            self._verified_votes.add_vote(msg)
        elif isinstance(msg, Proposal):
            b = msg.block
            self._verified_votes.add_proposal(b.epoch, b.view, b.digest, b.proposer,
                                              msg.signature)
        elif isinstance(msg, ProposalHeader):
            self._verified_votes.add_proposal(self.committee.epoch, msg.view, msg.digest,
                                              msg.proposer, msg.signature)
        elif isinstance(msg, Notarization | Finalization | Nullification):
            self._verified_votes.add_certificate(msg.certificate)


def _trace_verified(verified: list[tuple[MessageReceived, Prechecked]],
                    began: int, cpu_ns: int) -> None:
    """Trace a verified batch (node/trace.py): the proposals in it, the CPU it took on the
    event loop and on the worker thread."""
    tracer = trace.TRACER
    assert tracer is not None
    proposals = [e.message.block.view for e, _ in verified if isinstance(e.message, Proposal)]
    tracer.measured("verify", cpu_ns, began, proposals)
    for view in proposals:
        tracer.event("received:proposal", view, at=began)
        tracer.event("verified:proposal", view)
