"""The Byzantine catalogue: small wrappers around the honest core (DESIGN §3).

Each behaviour runs the unmodified honest `Core` and rewrites what it sends, so the attacks are
exactly as strong as "an honest member that also does X". They are used by the simulator and
the tests; none of this is ever loaded by the daemon.

A behaviour's `step(event)` returns the core's actions, rewritten, plus possibly `RawSend`
actions carrying arbitrary bytes (garbage, foreign or replayed traffic) that the simulator puts
on the wire as is.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..consensus.events import Action, Broadcast, Event, MessageReceived, Send, TimerFired
from ..consensus.messages import MAX_MESSAGE_SIZE, Proposal, encode_message
from ..consensus.types import Block, Vote, VoteKind
from ..consensus.voter import Core
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import encode
from ..primitives.identity import digest as blake3_digest

#: How many received messages a replayer keeps to replay later.
REPLAY_BUFFER: Final = 256


@dataclass(frozen=True, slots=True)
class RawSend:
    """Simulator-only action: put `data` on the wire to member `to` (None: everyone)."""

    to: int | None
    data: bytes


class Behaviour:
    """Honest behaviour; subclasses rewrite actions. Everything here is seeded."""

    name = "honest"

    def __init__(self, core: Core, rng: random.Random) -> None:
        self.core = core
        self.rng = rng
        self.committee: CommitteeSpec = core.committee
        self.me = core.me
        self.key: SigningKey = core._key

    def step(self, event: Event) -> list[Action | RawSend]:
        out: list[Action | RawSend] = []
        for action in self.core.step(event):
            out.extend(self.rewrite(action))
        out.extend(self.extra(event))
        return out

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        return [action]

    def extra(self, event: Event) -> list[Action | RawSend]:
        return []

    def others(self) -> list[int]:
        return [i for i in range(self.committee.n) if i != self.me]

    def halves(self) -> tuple[list[int], list[int]]:
        others = self.others()
        return others[: len(others) // 2], others[len(others) // 2:]

    def vote(self, kind: VoteKind, view: int, digest: bytes) -> Vote:
        return Vote.sign(self.key, self.committee, self.me, kind, view, digest)


def _fake_digest(digest: bytes) -> bytes:
    return blake3_digest(digest + b"/byzantine")


class EquivocatingLeader(Behaviour):
    """Proposes two different blocks per view it leads, one to each half, and notarises each
    towards the half that got it."""

    name = "equivocating-leader"

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._twin: dict[bytes, Block] = {}

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        if not isinstance(action, Broadcast):
            return [action]
        msg = action.message
        a, b = self.halves()
        if isinstance(msg, Proposal):
            blk = msg.block
            other = Block(blk.epoch, blk.height, blk.view, blk.parent, blk.proposer,
                          (*blk.commands, b"equivocation/%d" % blk.view), blk.executed_height,
                          blk.state_root, blk.evidence)
            self._twin[blk.digest] = other
            alt = Proposal.sign(self.key, self.committee, other)
            return [*(Send(i, msg) for i in a), *(Send(i, alt) for i in b)]
        if isinstance(msg, Vote) and msg.kind is VoteKind.NOTARIZE and msg.digest in self._twin:
            other = self._twin.pop(msg.digest)
            alt_vote = self.vote(VoteKind.NOTARIZE, msg.view, other.digest)
            return [*(Send(i, msg) for i in a), *(Send(i, alt_vote) for i in b)]
        return [action]


class DoubleVoter(Behaviour):
    """Sends a second vote of `kind` for a different digest with every such vote."""

    def __init__(self, core: Core, rng: random.Random, kind: VoteKind) -> None:
        super().__init__(core, rng)
        self.kind = kind
        self.name = f"double-{kind.name.lower()}"

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        msg = action.message if isinstance(action, Broadcast) else None
        if isinstance(msg, Vote) and msg.kind is self.kind:
            return [action, Broadcast(self.vote(self.kind, msg.view, _fake_digest(msg.digest)))]
        return [action]


class NullifyAndFinalize(Behaviour):
    """Sends a nullify vote for every view it finalises."""

    name = "nullify-and-finalize"

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        msg = action.message if isinstance(action, Broadcast) else None
        if isinstance(msg, Vote) and msg.kind is VoteKind.FINALIZE:
            nullify = Vote.sign(self.key, self.committee, self.me, VoteKind.NULLIFY, msg.view,
                                b"\x00" * 32)
            return [action, Broadcast(nullify)]
        return [action]


class SilentLeader(Behaviour):
    """Never sends its proposals (votes normally otherwise)."""

    name = "silent-leader"

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        if isinstance(action, Broadcast) and isinstance(action.message, Proposal):
            return []
        return [action]


class Withholder(Behaviour):
    """Sends its votes only to a subset of the committee (the first half of the others)."""

    name = "withholder"

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        if isinstance(action, Broadcast) and isinstance(action.message, Vote):
            return [Send(i, action.message) for i in self.halves()[0]]
        return [action]


def foreign_committee(committee: CommitteeSpec) -> CommitteeSpec:
    """Same members and keys, another committee (a different component name)."""
    return CommitteeSpec(committee.network_name, committee.component_kind,
                         committee.component_name + "-foreign", committee.members,
                         committee.fault_bound, committee.epoch)


class GarbageSender(Behaviour):
    """Behaves honestly and, on every timer, also sends one kind of garbage to everyone."""

    name = "garbage"
    KINDS: Final = ("malformed", "oversize", "wrong-tag", "wrong-committee", "bad-signature",
                    "far-future", "impersonation", "trailing-bytes")

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._oversize_sent = False

    def garbage(self, kind: str) -> bytes:
        c, view = self.committee, self.core.view
        digest = blake3_digest(b"garbage %d" % view)
        if kind == "malformed":
            return encode(["consensus", 1, c.committee_id, "vote", ["vote", 1]])
        if kind == "oversize":
            return b"\x00" * (MAX_MESSAGE_SIZE + 1)
        if kind == "wrong-tag":
            payload_vote = self.vote(VoteKind.FINALIZE, view, digest)
            wrong = Vote(VoteKind.NOTARIZE, c.epoch, view, digest, self.me,
                         payload_vote.signature)
            return encode_message(c, wrong)
        if kind == "wrong-committee":
            foreign = foreign_committee(c)
            vote = Vote.sign(self.key, foreign, self.me, VoteKind.NOTARIZE, view, digest)
            return encode_message(foreign, vote)
        if kind == "bad-signature":
            vote = self.vote(VoteKind.NOTARIZE, view, digest)
            sig = bytes([vote.signature[0] ^ 1]) + vote.signature[1:]
            return encode_message(c, Vote(vote.kind, vote.epoch, view, digest, self.me, sig))
        if kind == "far-future":
            return encode_message(c, self.vote(VoteKind.NULLIFY, view + 10_000, b"\x00" * 32))
        if kind == "impersonation":
            victim = (self.me + 1) % c.n
            vote = self.vote(VoteKind.NOTARIZE, view, digest)
            return encode_message(c, Vote(vote.kind, vote.epoch, view, digest, victim,
                                          vote.signature))
        # trailing-bytes: a valid message followed by one more byte
        return encode_message(c, self.vote(VoteKind.NULLIFY, view, b"\x00" * 32)) + b"\x00"

    def extra(self, event: Event) -> list[Action | RawSend]:
        if not isinstance(event, TimerFired):
            return []
        kinds = [k for k in self.KINDS if k != "oversize" or not self._oversize_sent]
        kind = self.rng.choice(kinds)
        if kind == "oversize":
            self._oversize_sent = True  # one 8 MiB frame is enough to test the limit
        return [RawSend(None, self.garbage(kind))]


class Replayer(Behaviour):
    """Behaves honestly and replays old messages it received, plus another committee's."""

    name = "replayer"

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._old: list[bytes] = []
        self._foreign = foreign_committee(self.committee)

    def extra(self, event: Event) -> list[Action | RawSend]:
        if isinstance(event, MessageReceived):
            if len(self._old) < REPLAY_BUFFER:
                self._old.append(encode_message(self.committee, event.message))
            return []
        if not isinstance(event, TimerFired) or not self._old:
            return []
        out: list[Action | RawSend] = [RawSend(None, self.rng.choice(self._old))]
        vote = Vote.sign(self.key, self._foreign, self.me, VoteKind.NULLIFY, self.core.view,
                         b"\x00" * 32)
        out.append(RawSend(None, encode_message(self._foreign, vote)))
        return out


class BadRootProposer(Behaviour):
    """Votes honestly (its own replica stays right) but every block it proposes claims a
    wrong state root for the height it executed (docs/protocol.md §7). Honest voters must
    refuse the proposal and record wrong-root evidence; none may diverge."""

    name = "bad-root"

    def step(self, event: Event) -> list[Action | RawSend]:
        core = self.core
        executed = core._executed
        if executed.height == 0:
            return super().step(event)
        lie = dataclasses.replace(executed, state_root=_fake_digest(executed.state_root))
        core._executed = lie
        try:
            return super().step(event)
        finally:
            if core._executed is lie:  # not advanced by a BlockExecuted in this step
                core._executed = executed


BehaviourFactory = Callable[[Core, random.Random], Behaviour]

CATALOGUE: Final[dict[str, BehaviourFactory]] = {
    "equivocating-leader": EquivocatingLeader,
    "double-notarize": lambda core, rng: DoubleVoter(core, rng, VoteKind.NOTARIZE),
    "double-finalize": lambda core, rng: DoubleVoter(core, rng, VoteKind.FINALIZE),
    "nullify-and-finalize": NullifyAndFinalize,
    "silent-leader": SilentLeader,
    "withholder": Withholder,
    "garbage": GarbageSender,
    "replayer": Replayer,
    "bad-root": BadRootProposer,
}
