"""Dissemination: who sends which certificate, vote or proposal to whom (docs/protocol.md §3.3,
§3.5, §3.8).

Nothing here decides safety; everything here decides traffic and how fast a member that lost
messages catches up. The state machine (voter.py) asks these functions what to send and emits
it: passing on a certificate it formed (`announce`), answering a peer still voting in a view it
has left (`answers_laggard`), and re-sending what it said in a view that does not end
(`restatements`, `newest_certificates`). The only state is the per-view `ViewRelay` record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from .events import Broadcast, Send
from .messages import Finalization, Message, Notarization, Nullification, Proposal
from .rules import CertifiedView, Guard
from .statements import SignedKind
from .types import Block, Certificate, Vote, VoteKind


@dataclass(slots=True)
class ViewRelay:
    """What this member passed on in one view, so it neither repeats nor omits it."""

    #: Peers sent this view's certificate because they were still voting in it (§3.8).
    helped: set[int] = field(default_factory=set)
    #: Certificates of this view we formed ourselves, by kind: True if we broadcast it to
    #: every member, False if we sent it to its non-signers only (`announce`).
    announced: dict[VoteKind, bool] = field(default_factory=dict)
    #: Members whose vote for this view crossed the certificate we sent them (not helped).
    crossed: set[int] = field(default_factory=set)


def certificate_message(cert: Certificate, blocks: Mapping[bytes, Block], tip: Block) -> Message:
    """The wire message for a certificate, with its block when this member has it (§2)."""
    if cert.kind is VoteKind.NULLIFY:
        return Nullification(cert)
    block = blocks.get(cert.digest)
    if block is None and cert.digest == tip.digest:
        block = tip
    if cert.kind is VoteKind.NOTARIZE:
        return Notarization(cert, block)
    return Finalization(cert, block)


def announce(committee: CommitteeSpec, me: int, cert: Certificate, message: Message,
             relay: ViewRelay) -> list[Broadcast | Send]:
    """Pass on a certificate we formed from votes; record in `relay` how.

    A nullification is broadcast (§3.5). For a notarisation or finalisation, the leader of the
    next view broadcasts it to every member (it is about to propose on it, so everyone needs it
    anyway), and for a notarisation also the leader of the view after: one or two members, not
    all, so every member receives it once or twice per view instead of n - 1 times with the
    block (a third of all consensus traffic). Every other member sends it only to the members
    that did not sign it, and a notarisation to the next leader: the signers broadcast their
    votes to everyone and form it from the same votes; the non-signers (slow, partitioned, just
    restarted) are the ones that may lack them. A member that still misses it (a lost vote, or
    a Byzantine signer that sent its vote to a few members only, and a Byzantine next leader)
    gets it when its view timer fires: its votes for a view we have left are answered with the
    certificate (§3.8). See docs/protocol.md §3.3, Decision.
    """
    if cert.kind is VoteKind.NULLIFY:
        relay.announced[cert.kind] = True
        return [Broadcast(message)]
    broadcasters = _broadcasters(committee, cert)
    if me in broadcasters:
        relay.announced[cert.kind] = True
        return [Broadcast(message)]
    relay.announced[cert.kind] = False
    signers = set(cert.signers())
    out: list[Broadcast | Send] = []
    for member in range(committee.n):
        if member == me:
            continue
        # A notarisation also goes to the two broadcasters, signers or not: having
        # voted does not mean holding the others' votes, and a broadcaster that lost
        # one (or the next leader is down) must still pass it on at once.
        if member not in signers or (member in broadcasters
                                     and cert.kind is VoteKind.NOTARIZE):
            out.append(Send(member, message))
    return out


def _broadcasters(committee: CommitteeSpec, cert: Certificate) -> set[int]:
    broadcasters = {committee.leader(cert.view + 1)}
    if cert.kind is VoteKind.NOTARIZE:
        # A notarisation moves the committee on: a second broadcaster, so a crashed or
        # Byzantine next leader does not leave a member that lost one vote a view behind.
        broadcasters.add(committee.leader(cert.view + 2))
    return broadcasters


def broadcasts_received(committee: CommitteeSpec, me: int, cert: Certificate,
                        current: int) -> bool:
    """Does a notarisation or finalisation we *received* before forming it go to everyone
    from us all the same? Yes when it ends our current view (or a later one) and we are one
    of its broadcasters (`announce`): the members that lost a vote count on the next
    leaders, and a next leader that got the certificate from a signer before the last vote
    reached it would otherwise never form it itself. Older certificates (catch-up, sync
    answers) are not passed on."""
    return (cert.kind is not VoteKind.NULLIFY and cert.view >= current
            and me in _broadcasters(committee, cert))


def answers_laggard(relay: ViewRelay, committee: CommitteeSpec, current: int, sender: int,
                    vote: Vote, ended: Certificate) -> bool:
    """A peer still votes in a view we have left: send it the certificate that `ended` that
    view (once per peer and view), so it can catch up without waiting for timeouts? Records
    the answer in `relay`. docs/protocol.md §3.8.

    Not for a finalise vote (its signer holds the view's notarisation), nor for a vote on
    the view we have just left when we broadcast its certificate ourselves: that vote
    crossed our broadcast, and answering it sent every member each certificate twice.
    A signer of a certificate we sent only to its non-signers got nothing from us: it
    is answered. A peer two or more views behind is stuck (its view timer re-sends its
    votes) and is always answered, and so is a second such vote from one member."""
    if vote.kind is VoteKind.FINALIZE or sender in relay.helped \
            or not 0 <= sender < committee.n:
        return False
    to_all = relay.announced.get(ended.kind)
    if vote.view == current - 1 and sender not in relay.crossed and (
            to_all or (to_all is not None and sender not in ended.signers())):
        # The first such vote crossed the certificate we sent this very member; another
        # one is a re-send on its view timer (it lost ours, or restarted): answer that.
        relay.crossed.add(sender)
        return False
    relay.helped.add(sender)
    return True


def restatements(key: SigningKey, committee: CommitteeSpec, me: int, view: int,
                 proposal: Block | None, previous: CertifiedView | None,
                 guard: Guard) -> Iterator[Proposal | Vote]:
    """What to re-send while stuck in `view` (its view timer fired again): our proposal if we
    lead it, and our votes in it, all already in the guard, so nothing new is signed
    (docs/protocol.md §3.5). If we hold no certificate for the previous view (we got here by
    a restart from the guard), our votes in that view too: peers may still be in it (§3.8).

    Lazy on purpose: the caller counts each re-sent vote as it goes, which may complete a
    certificate and add a vote to `guard` (a notarisation's finalise vote) that is then
    re-sent as well, exactly as a loop reading the guard as it goes.
    """
    if proposal is not None and proposal.proposer == me:
        yield Proposal.sign(key, committee, proposal)
    views = [view]
    if previous is None or (previous.notarization is None and previous.nullification is None):
        views.insert(0, view - 1)
    for v in views:
        for kind in (VoteKind.NOTARIZE, VoteKind.FINALIZE, VoteKind.NULLIFY):
            digest = guard.get((v, SignedKind.of_vote(kind)))
            if digest is not None:
                yield Vote.sign(key, committee, me, kind, v, digest)


def newest_certificates(latest: Mapping[VoteKind, Certificate], blocks: Mapping[bytes, Block],
                        tip: Block) -> list[Broadcast]:
    """Re-broadcast the newest certificate of each kind while a view is stuck: lost or torn-off
    messages must not stall the committee forever (docs/protocol.md §3.5)."""
    return [Broadcast(certificate_message(latest[kind], blocks, tip)) for kind in sorted(latest)]


def catch_up(answered: Certificate | None, latest: Mapping[VoteKind, Certificate],
             blocks: Mapping[bytes, Block], tip: Block,
             current: Iterable[Proposal | Vote]) -> Iterator[Proposal | Vote | Message]:
    """What to send a laggard besides the certificate that `answered` its vote (§3.8): our
    newer certificates, so it jumps to our view (§3.9) instead of advancing one view per
    re-send of its votes, and what we said in our current view (`current`: our proposal and
    votes, all in the guard), so it finds the view already voted on when it gets there
    (docs/protocol.md §3.10). Sent as often as the answer itself: once per peer and view."""
    for kind in sorted(latest):
        cert = latest[kind]
        if answered is None or cert.view > answered.view or (
                cert.view == answered.view and cert.kind is VoteKind.FINALIZE
                and answered.kind is not VoteKind.FINALIZE):
            yield certificate_message(cert, blocks, tip)
    yield from current


def answers_far_laggard(answered: dict[int, int], committee: CommitteeSpec, current: int,
                        sender: int, vote: Vote) -> bool:
    """A member re-sends its own vote for a view so far behind that we keep nothing of it
    (below `current − MAX_VIEWS_BEHIND`: it restarted after a long absence): send it our newest
    certificates so it can jump (§3.9) and fetch what it missed? Once per peer while we are in
    one view (`answered`: peer → our view when last answered, at most n entries).
    docs/protocol.md §3.10."""
    if vote.signer != sender or not 0 <= sender < committee.n \
            or answered.get(sender) == current:
        return False
    answered[sender] = current
    return True
