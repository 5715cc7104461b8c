"""The voter's inbox: the one bounded channel through which every other part of a member
hands work to the consensus loop (node/voter.py).

Producers: the verifier (verified consensus messages), the mempool (checked client and
relayed envelopes), the resolver (fetched chains) and the view timers. Its own module, not
voter.py, so producers depend on this interface and not on the voter (nor the voter on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import trio

from ..commands.envelope import Envelope
from ..consensus.events import Event
from ..primitives.metrics import counter

#: Inputs waiting for the consensus loop. Producers block when it is full (backpressure
#: onto the transport's own bounded queues, whose overflow policy then applies).
MAX_QUEUED_INPUTS: Final = 4096

SUBMISSIONS = counter("client_submissions_total", "Client envelopes submitted to this member",
                      ("result",))


@dataclass(frozen=True, slots=True)
class Submission:
    """An envelope for the mempool; `reply_to` is (peer, request id) for a local submitter."""

    envelope: bytes
    checked: Envelope
    reply_to: tuple[bytes, int] | None


VoterInput = Event | Submission


def open_inbox() -> tuple[trio.MemorySendChannel[VoterInput],
                          trio.MemoryReceiveChannel[VoterInput]]:
    return trio.open_memory_channel[VoterInput](MAX_QUEUED_INPUTS)


async def enqueue(inbox: trio.MemorySendChannel[VoterInput], item: VoterInput) -> None:
    """Hand `item` to the consensus loop without yielding unless its queue is full: the
    producer yields at its own next receive, and the loop then takes everything queued
    in one round (one commit) instead of one round per message."""
    try:
        inbox.send_nowait(item)
    except trio.WouldBlock:
        await inbox.send(item)
