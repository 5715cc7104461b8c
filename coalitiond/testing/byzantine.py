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

from ..consensus.events import (
    Action,
    Broadcast,
    Event,
    FetchBlocks,
    MessageReceived,
    Send,
    TimerFired,
)
from ..consensus.messages import (
    MAX_MESSAGE_SIZE,
    Finalization,
    Message,
    Notarization,
    Nullification,
    Proposal,
    SyncRequest,
    encode_message,
)
from ..consensus.types import Block, Certificate, Vote, VoteKind
from ..consensus.voter import Core
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import encode
from ..primitives.identity import digest as blake3_digest

#: How many received messages a replayer keeps to replay later.
REPLAY_BUFFER: Final = 256

#: A fetch answer: finalised blocks with certificates, in height order.
FetchedChain = tuple[tuple[Block, Certificate], ...]
#: A fork-seeker proposes on at most this many stale parents per view it leads.
MAX_STALE_PARENTS: Final = 3
#: Inputs a fork-seeker waits, at most, before it sends its valid proposal to everyone.
FORK_HOLD_INPUTS: Final = 40
#: Share of the views it leads in which a fork-seeker plants an un-notarised block.
PLANT_SHARE: Final = 0.5
#: Digests of planted proposals a fork-seeker remembers (to withhold their votes).
MAX_PLANTED: Final = 16


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

    def serve_fetch(self, requester: int, request: FetchBlocks, chain: FetchedChain,
                    stored: FetchedChain) -> FetchedChain | None:
        """Answer a peer's fetch; None: no answer. `chain` is what an honest store serves,
        `stored` every stored block from the first height asked for."""
        return chain

    def others(self) -> list[int]:
        return [i for i in range(self.committee.n) if i != self.me]

    def halves(self) -> tuple[list[int], list[int]]:
        others = self.others()
        return others[: len(others) // 2], others[len(others) // 2:]

    def vote(self, kind: VoteKind, view: int, digest: bytes) -> Vote:
        return Vote.sign(self.key, self.committee, self.me, kind, view, digest)


def _fake_digest(digest: bytes) -> bytes:
    return blake3_digest(digest + b"/byzantine")


def child_of(parent: Block, view: int, proposer: int, commands: tuple[bytes, ...]) -> Block:
    """A block on `parent` that keeps the parent's state-root claim (valid content)."""
    return Block(parent.epoch, parent.height + 1, view, parent.digest, proposer, commands,
                 parent.executed_height, parent.state_root, (), parent.log_size,
                 parent.log_root)


def forged_finality(b: Behaviour, parent: Block, copies: int | None = None
                    ) -> tuple[Certificate, Block]:
    """A made-up child of `parent` and a finalisation of it carrying only our signature,
    repeated `copies` times (default: a quorum's worth, which only a broken
    distinct-signers check accepts)."""
    view = max(parent.view + 1, b.core.view)
    block = child_of(parent, view, b.committee.leader(view), (b"forged/%d" % view,))
    sig = b.vote(VoteKind.FINALIZE, view, block.digest).signature
    n = b.committee.quorum if copies is None else copies
    return Certificate(VoteKind.FINALIZE, b.committee.epoch, view, block.digest,
                       ((b.me, sig),) * n), block


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


def next_epoch(committee: CommitteeSpec) -> CommitteeSpec:
    """The same committee (members, keys, component), one epoch later."""
    return CommitteeSpec(committee.network_name, committee.component_kind,
                         committee.component_name, committee.members, committee.fault_bound,
                         committee.epoch + 1)


def foreign_committee(committee: CommitteeSpec) -> CommitteeSpec:
    """Same members and keys, another committee (a different component name)."""
    return CommitteeSpec(committee.network_name, committee.component_kind,
                         committee.component_name + "-foreign", committee.members,
                         committee.fault_bound, committee.epoch)


class GarbageSender(Behaviour):
    """Behaves honestly and, on every timer, also sends one kind of garbage to everyone."""

    name = "garbage"
    KINDS: Final = ("malformed", "oversize", "wrong-tag", "wrong-committee", "bad-signature",
                    "far-future", "impersonation", "trailing-bytes", "duplicate-signer")

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
        if kind == "duplicate-signer":
            # A finalisation of a made-up child of our tip, our one signature q times over.
            return encode_message(c, Finalization(*forged_finality(self, self.core.tip)))
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
    """Behaves honestly and replays old messages it received (the first `REPLAY_BUFFER`, and
    the newest `REPLAY_BUFFER`: votes and certificates of views long gone and of the last
    few), plus another committee's votes, and its own votes signed for another epoch of this
    committee: a nullify vote for the current view, and with each notarise vote it sends, the
    same vote for the next epoch, sent first."""

    name = "replayer"

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._old: list[bytes] = []
        self._recent: list[bytes] = []
        self._foreign = foreign_committee(self.committee)
        self._next_epoch = next_epoch(self.committee)

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        msg = action.message if isinstance(action, Broadcast) else None
        if isinstance(msg, Vote) and msg.kind is VoteKind.NOTARIZE:
            other = Vote.sign(self.key, self._next_epoch, self.me, msg.kind, msg.view,
                              msg.digest)
            return [RawSend(None, encode_message(self._next_epoch, other)), action]
        return [action]

    def extra(self, event: Event) -> list[Action | RawSend]:
        if isinstance(event, MessageReceived):
            data = encode_message(self.committee, event.message)
            if len(self._old) < REPLAY_BUFFER:
                self._old.append(data)
            else:
                self._recent = [*self._recent[-(REPLAY_BUFFER - 1):], data]
            return []
        if not isinstance(event, TimerFired) or not self._old:
            return []
        out: list[Action | RawSend] = [RawSend(None, self.rng.choice(self._old))]
        if self._recent:
            out.append(RawSend(None, self.rng.choice(self._recent)))
        vote = Vote.sign(self.key, self._foreign, self.me, VoteKind.NULLIFY, self.core.view,
                         b"\x00" * 32)
        out.append(RawSend(None, encode_message(self._foreign, vote)))
        vote = Vote.sign(self.key, self._next_epoch, self.me, VoteKind.NULLIFY, self.core.view,
                         b"\x00" * 32)
        out.append(RawSend(None, encode_message(self._next_epoch, vote)))
        return out


class ForkSeeker(Behaviour):
    """Looks for a fork as the model checker's attacker does (tests/model_simplex.py).

    When it leads a view it proposes, before its valid proposal, on up to
    `MAX_STALE_PARENTS` older blocks it holds: notarised ancestors of the right parent (which
    skip a view that is notarised, not nullified) and proposals that were never notarised, and
    signs a notarise vote for each, so that any honest vote completes a certificate. It sends
    its valid proposal to a member only once that member has shown what it made of the stale
    ones (a sync request: it waited, as it must; a vote: it did not), or after
    `FORK_HOLD_INPUTS` inputs. In about `PLANT_SHARE` of the views it leads (never when it
    holds an un-notarised block to build on) it instead plants an un-notarised block for the
    next leader: its proposal goes to half of the others and it withholds its own vote, so the
    view is nullified while some members hold the block (a second fork-seeker leading the
    next view then proposes on it)."""

    name = "fork-seeker"

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._planted: list[bytes] = []
        #: What it did, for tests: stale proposals sent, un-notarised blocks planted.
        self.stale_proposals = 0
        self.plants = 0
        self._held: Proposal | None = None
        self._waiting: list[int] = []
        self._hold_left = 0

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        msg = action.message if isinstance(action, Broadcast) else None
        if isinstance(msg, Proposal) and msg.block.proposer == self.me:
            if msg.block.digest in self._planted:
                return [Send(i, msg) for i in self.halves()[0]]
            return self._lead(msg)
        if isinstance(msg, Vote) and msg.kind is VoteKind.NOTARIZE and \
                msg.digest in self._planted:
            return []
        return [action]

    def _lead(self, proposal: Proposal) -> list[Action | RawSend]:
        block = proposal.block
        stale = self.stale_parents(block)
        if not any(self._unnotarised(b) for b in stale) and self.rng.random() < PLANT_SHARE:
            self._planted = [*self._planted[-(MAX_PLANTED - 1):], block.digest]
            self.plants += 1
            return [Send(i, proposal) for i in self.halves()[0]]
        if not stale:
            return [Broadcast(proposal)]
        out: list[Action | RawSend] = []
        for i, parent in enumerate(stale):
            fork = child_of(parent, block.view, self.me, (b"fork/%d/%d" % (block.view, i),))
            self.stale_proposals += 1
            for msg in (Proposal.sign(self.key, self.committee, fork),
                        self.vote(VoteKind.NOTARIZE, block.view, fork.digest)):
                out.extend(Send(m, msg) for m in self.others())
        self._release_all()
        self._held, self._waiting, self._hold_left = proposal, self.others(), FORK_HOLD_INPUTS
        return out

    def stale_parents(self, block: Block) -> list[Block]:
        """Blocks at or above our finalised tip, below the proposal's view, other than its
        parent: the newest first."""
        core = self.core
        known = {b.digest: b for b in (core.tip, *core._blocks.values())}
        stale = [b for b in known.values() if b.digest != block.parent
                 and b.view < block.view and b.height >= core.tip.height]
        stale.sort(key=lambda b: (-b.view, b.digest))
        return stale[:MAX_STALE_PARENTS]

    def _unnotarised(self, block: Block) -> bool:
        s = self.core._views.get(block.view)
        return s is None or s.notarization is None or s.notarization.digest != block.digest

    def _release_all(self) -> list[Action | RawSend]:
        held, waiting = self._held, self._waiting
        self._held, self._waiting = None, []
        return [] if held is None else [Send(m, held) for m in waiting]

    def extra(self, event: Event) -> list[Action | RawSend]:
        held = self._held
        if held is None:
            return []
        self._hold_left -= 1
        if self._hold_left <= 0 or self.core.view > held.block.view:
            return self._release_all()
        if isinstance(event, MessageReceived) and event.sender in self._waiting:
            msg = event.message
            if (isinstance(msg, SyncRequest) and msg.view == held.block.view) or \
                    (isinstance(msg, Vote) and msg.view >= held.block.view):
                self._waiting.remove(event.sender)
                return [Send(event.sender, held)]
        return []


class LyingFetchServer(Behaviour):
    """Votes honestly; answers every block fetch with a lie or nothing, each in turn: every
    block it stores after the first one asked for (it does not extend the asker's tip), a
    made-up block under a certificate of its own signature repeated to a quorum, the real
    certificate on a made-up block, a made-up block under its one signature, or no answer."""

    name = "lying-fetch-server"
    LIES: Final = ("unlinked", "duplicate-signer", "wrong-block", "own-signature", "withhold")

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._answered = 0

    def serve_fetch(self, requester: int, request: FetchBlocks, chain: FetchedChain,
                    stored: FetchedChain) -> FetchedChain | None:
        lie = self.LIES[self._answered % len(self.LIES)]
        self._answered += 1
        if not chain or lie == "withhold":
            return None
        first, cert = chain[0]
        made_up = dataclasses.replace(first, commands=(b"lie/%d" % first.height,))
        if lie == "unlinked" and len(stored) > 1:
            return stored[1:]  # valid blocks and certificates, one height missing
        if lie == "wrong-block":
            return ((made_up, cert),)
        copies = 1 if lie == "own-signature" else self.committee.quorum
        sig = self.vote(VoteKind.FINALIZE, made_up.view, made_up.digest).signature
        return ((made_up, Certificate(VoteKind.FINALIZE, self.committee.epoch, made_up.view,
                                      made_up.digest, ((self.me, sig),) * copies)),)


class SelectiveSender(Behaviour):
    """Sends everything it says about a view only to a seeded subset of the others (one
    subset per view, at least one member, never all): honest members see different things."""

    name = "selective-sender"

    def __init__(self, core: Core, rng: random.Random) -> None:
        super().__init__(core, rng)
        self._subsets: dict[int, list[int]] = {}

    def _subset(self, view: int) -> list[int]:
        subset = self._subsets.get(view)
        if subset is None:
            others = self.others()
            subset = sorted(self.rng.sample(others, self.rng.randint(1, len(others) - 1)))
            self._subsets[view] = subset
            for old in sorted(self._subsets)[:-4]:
                del self._subsets[old]
        return subset

    def rewrite(self, action: Action) -> list[Action | RawSend]:
        if not isinstance(action, Broadcast):
            return [action]
        view = message_view(action.message)
        if view is None:
            return [action]
        return [Send(i, action.message) for i in self._subset(view)]


def message_view(msg: Message) -> int | None:
    """The view a consensus message is about (None: evidence)."""
    if isinstance(msg, Vote):
        return msg.view
    if isinstance(msg, Proposal):
        return msg.block.view
    if isinstance(msg, Notarization | Nullification | Finalization):
        return msg.certificate.view
    return getattr(msg, "view", None)


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
    "fork-seeker": ForkSeeker,
    "lying-fetch-server": LyingFetchServer,
    "selective-sender": SelectiveSender,
    # Slot kept for h-size's attacker (issue #14): "oversize" (a block above the configured
    # size limit). Its rule is not in this branch; add it here with that rule.
}
