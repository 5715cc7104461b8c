"""Fetching nullifications by view (docs/protocol.md §9, issue #14 hole 3).

A member that fell more than `MAX_VIEWS_BEHIND` nullified views behind (partitioned, crashed)
must still be able to check a proposal built on the last notarised block: it fetches the
certificates of the views in between, a bounded page at a time, from one peer after another,
and counts a view as nullified only on a verified certificate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from coalitiond.consensus import catchup
from coalitiond.consensus.events import (
    Broadcast,
    CoreConfig,
    MessageReceived,
    Refused,
    Send,
    SetTimer,
    TimerFired,
    TimerKind,
)
from coalitiond.consensus.limits import (
    MAX_FETCH_ANSWER_BYTES,
    MAX_FETCH_ANSWERS_PER_VIEW,
    MAX_FETCH_VIEWS,
)
from coalitiond.consensus.messages import (
    Message,
    Notarization,
    Nullification,
    NullificationsAnswer,
    NullificationsRequest,
    Proposal,
    SyncRequest,
    decode_message,
    encode_message,
    verify_message,
)
from coalitiond.consensus.types import (
    ZERO_DIGEST,
    Block,
    Certificate,
    MalformedMessage,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.consensus.voter import Core
from coalitiond.node.resolver import SolicitedNullifications
from coalitiond.node.verifier import Verifier
from coalitiond.node.voter import Voter
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import RemoteError
from coalitiond.testing.cores import started
from coalitiond.testing.simulator import Crash, SimConfig, Simulation, make_committee

COMMITTEE, KEYS = make_committee(4)  # q = 3; leader of view v is v % 4
CONFIG = CoreConfig(leader_timeout_ms=200, view_timeout_ms=300, batch_interval_ms=20,
                    max_batch_commands=2, max_batch_bytes=4096, max_backoff_exponent=3)
GENESIS = genesis_block(COMMITTEE)
#: The proposal the laggard must check: view 301 (leader 1) built on genesis, so views
#: 1..300 must all be nullified; more than MAX_VIEWS_BEHIND and more than one page.
VIEW = 301
_NULLS: dict[int, Certificate] = {}


def null(view: int) -> Certificate:
    if view not in _NULLS:
        _NULLS[view] = Certificate.from_votes([
            Vote.sign(KEYS[i], COMMITTEE, i, VoteKind.NULLIFY, view, ZERO_DIGEST)
            for i in (0, 1, 2)])
    return _NULLS[view]


def core(member: int) -> Core:
    """A started core whose start-up recall (docs/protocol.md §8) ended with no answers."""
    c = Core(COMMITTEE, KEYS[member], CONFIG)
    started(c)
    return c


def sends(actions: list[object], kind: type) -> list[tuple[int, Message]]:
    return [(a.to, a.message) for a in actions
            if isinstance(a, Send) and isinstance(a.message, kind)]


def notarised(actions: list[object], view: int) -> bool:
    return any(isinstance(a, Broadcast) and isinstance(a.message, Vote)
               and a.message.kind is VoteKind.NOTARIZE and a.message.view == view
               for a in actions)


def laggard_with_proposal() -> tuple[Core, Block, list[object]]:
    """Member 3, still at view 1, hears the nullification of view 300 (it jumps to 301) and
    then the leader's proposal for 301 built on genesis."""
    c = core(3)
    c.step(MessageReceived(0, Nullification(null(VIEW - 1))))
    assert c.view == VIEW
    b = Block(COMMITTEE.epoch, 1, VIEW, GENESIS.digest, 1, (), 0, ZERO_DIGEST)
    actions = c.step(MessageReceived(1, Proposal.sign(KEYS[1], COMMITTEE, b)))
    return c, b, actions


def answer(first: int, last: int, views: range | list[int]) -> NullificationsAnswer:
    return NullificationsAnswer(first, last, tuple(null(w) for w in views))


# -- the requester ---------------------------------------------------------------------------


def test_far_behind_member_fetches_the_nullifications_page_by_page_and_votes() -> None:
    c, _, actions = laggard_with_proposal()
    assert not notarised(actions, VIEW)
    # The proposer is asked first (it built on these views), one page, with a deadline.
    assert sends(actions, SyncRequest) == [(1, SyncRequest(VIEW))]
    assert sends(actions, NullificationsRequest) == [(1, NullificationsRequest(1, 256))]
    assert SetTimer(TimerKind.FETCH, 1, CONFIG.leader_timeout_ms) in actions
    actions = c.step(MessageReceived(1, answer(1, 256, range(1, 257))))
    assert not notarised(actions, VIEW)
    assert sends(actions, NullificationsRequest) == [(1, NullificationsRequest(257, 300))]
    actions = c.step(MessageReceived(1, answer(257, 300, range(257, 300))))
    assert notarised(actions, VIEW)
    assert sends(actions, NullificationsRequest) == []


def test_an_old_notarised_parent_from_the_sync_answer_is_kept_then_the_views_fetched() -> None:
    """The parent is notarised far below our view (more than MAX_VIEWS_BEHIND) and we do not
    hold it: its notarisation, in the proposer's sync answer, is not "old news" but what
    the waiting proposal needs; then the views in between are fetched."""
    c = core(3)
    c.step(MessageReceived(0, Nullification(null(VIEW - 1))))
    parent = Block(COMMITTEE.epoch, 1, 1, GENESIS.digest, 1, (), 0, ZERO_DIGEST)
    b = Block(COMMITTEE.epoch, 2, VIEW, parent.digest, 1, (), 0, ZERO_DIGEST)
    actions = c.step(MessageReceived(1, Proposal.sign(KEYS[1], COMMITTEE, b)))
    assert sends(actions, SyncRequest) == [(1, SyncRequest(VIEW))]
    assert sends(actions, NullificationsRequest) == []  # the parent's view is not known yet
    notarization = Certificate.from_votes([
        Vote.sign(KEYS[i], COMMITTEE, i, VoteKind.NOTARIZE, 1, parent.digest) for i in (0, 1, 2)])
    actions = c.step(MessageReceived(1, Notarization(notarization, parent)))
    assert sends(actions, NullificationsRequest) == [(1, NullificationsRequest(2, 257))]
    actions = c.step(MessageReceived(1, answer(2, 257, range(2, 258))))
    actions = c.step(MessageReceived(1, answer(258, 300, range(258, 300))))
    assert notarised(actions, VIEW)


def test_without_a_fetch_the_far_behind_member_cannot_vote() -> None:
    """What the sync answer alone gives (the last MAX_SYNC_CERTS views) is not enough."""
    c, b, _ = laggard_with_proposal()
    sync = catchup.sync_answer(b, VIEW, GENESIS, None, {},
                               {w: _Held(null(w)) for w in range(1, VIEW)})
    actions = [a for m in sync for a in c.step(MessageReceived(1, m))]
    assert not notarised(actions, VIEW)


@dataclasses.dataclass
class _Held:
    nullification: Certificate | None
    notarization: Certificate | None = None


def test_answers_nobody_asked_for_are_dropped_unread() -> None:
    c, _, _ = laggard_with_proposal()
    every = answer(1, 256, range(1, 257))
    # Another member than the one asked, another range, and a late answer: all refused,
    # and none of their views counts as nullified.
    for sender, msg in ((2, every), (1, answer(2, 257, range(2, 258))), (None, every)):
        actions = c.step(MessageReceived(sender, msg))
        assert any(isinstance(a, Refused) for a in actions)
    c.step(MessageReceived(1, answer(1, 256, [])))  # the asked peer: nothing held
    actions = c.step(MessageReceived(1, every))  # now late: no request is open
    assert [a.reason for a in actions if isinstance(a, Refused)] == [
        "nullifications answer to no open request"]
    assert catchup.missing_nullifications(0, VIEW, c._views) == (1, 256)


def test_certificates_outside_the_range_asked_for_are_not_kept() -> None:
    """Decoding refuses them already; the core does not rely on it (its events may come
    from anywhere that builds them)."""
    c, _, _ = laggard_with_proposal()
    actions = c.step(MessageReceived(1, NullificationsAnswer(1, 256, (null(1), null(299)))))
    assert [a.reason for a in actions if isinstance(a, Refused)] == [
        "fetched nullification for view 299 was not asked for"]
    assert catchup.missing_nullifications(0, VIEW, c._views) == (2, 257)


def test_a_forged_or_short_certificate_never_reaches_the_core() -> None:
    good = null(5)
    forged = dataclasses.replace(good, signatures=(
        good.signatures[0], (good.signatures[1][0], bytes(64)), good.signatures[2]))
    short = dataclasses.replace(good, signatures=good.signatures[:2])
    notarize = Certificate.from_votes([Vote.sign(KEYS[i], COMMITTEE, i, VoteKind.NOTARIZE, 5,
                                                 b"\x01" * 32) for i in (0, 1, 2)])
    for bad in (forged, short):
        msg = NullificationsAnswer(1, 10, (null(4), bad))
        with pytest.raises(RemoteError):
            verify_message(COMMITTEE, decode_message(COMMITTEE, encode_message(COMMITTEE, msg)))
    with pytest.raises(MalformedMessage, match="not a nullify"):
        decode_message(COMMITTEE, encode_message(
            COMMITTEE, NullificationsAnswer(1, 10, (notarize,))))
    verify_message(COMMITTEE, NullificationsAnswer(1, 10, (null(4), good)))


def test_next_peer_on_timeout_and_after_a_fruitless_answer_then_a_new_round() -> None:
    c, _, actions = laggard_with_proposal()
    asked = [to for to, _ in sends(actions, NullificationsRequest)]
    actions = c.step(TimerFired(TimerKind.FETCH, 1))  # the proposer withholds
    asked += [to for to, _ in sends(actions, NullificationsRequest)]
    assert SetTimer(TimerKind.FETCH, 2, CONFIG.leader_timeout_ms) in actions
    assert c.step(TimerFired(TimerKind.FETCH, 1)) == []  # a stale timer changes nothing
    actions = c.step(MessageReceived(2, answer(1, 256, [])))  # member 2 holds nothing
    asked += [to for to, _ in sends(actions, NullificationsRequest)]
    actions = c.step(MessageReceived(0, answer(1, 256, [])))
    assert sends(actions, NullificationsRequest) == []  # every peer asked: wait
    assert asked == [1, 2, 0]  # deterministic: the proposer, then by index, never ourselves
    c.step(TimerFired(TimerKind.VIEW, VIEW))  # first firing: nullify
    actions = c.step(TimerFired(TimerKind.VIEW, VIEW))  # later firings start a new round
    assert sends(actions, NullificationsRequest) == [(1, NullificationsRequest(1, 256))]


# -- the server ------------------------------------------------------------------------------


def server_holding(views: int) -> Core:
    c = core(0)
    for w in range(1, views + 1):
        c.step(MessageReceived(1, Nullification(null(w))))
    return c


def test_an_answer_is_bounded_in_count_and_bytes_and_answers_per_view() -> None:
    c = server_holding(300)
    actions = c.step(MessageReceived(3, NullificationsRequest(1, 400)))  # beyond a page
    [(to, msg)] = sends(actions, NullificationsAnswer)
    assert to == 3 and isinstance(msg, NullificationsAnswer)
    assert [x.view for x in msg.certificates] == list(range(1, MAX_FETCH_VIEWS + 1))
    assert len(encode_message(COMMITTEE, msg)) <= MAX_FETCH_ANSWER_BYTES
    for _ in range(MAX_FETCH_ANSWERS_PER_VIEW - 1):
        assert sends(c.step(MessageReceived(3, NullificationsRequest(1, 2))),
                     NullificationsAnswer)
    actions = c.step(MessageReceived(3, NullificationsRequest(1, 2)))
    assert sends(actions, NullificationsAnswer) == []
    assert sends(c.step(MessageReceived(2, NullificationsRequest(1, 2))), NullificationsAnswer)
    assert c.step(MessageReceived(None, NullificationsRequest(1, 2))) == []
    c.step(MessageReceived(1, Nullification(null(301))))  # our next view: a new budget
    assert sends(c.step(MessageReceived(3, NullificationsRequest(1, 2))), NullificationsAnswer)


def test_the_byte_bound_stops_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    one = len(null(1).encode())
    monkeypatch.setattr(catchup, "MAX_FETCH_ANSWER_BYTES", catchup.ANSWER_HEADROOM + 10 * one)
    msg = catchup.nullifications_answer(NullificationsRequest(1, 256),
                                        {w: _Held(null(w)) for w in range(1, 40)})
    assert len(msg.certificates) == 10


def test_request_and_answer_decoding_bounds() -> None:
    def raw(kind: str, body: object) -> bytes:
        return encode(["consensus", 1, COMMITTEE.committee_id, kind, body])

    assert decode_message(COMMITTEE, raw("nullifications?", [1, MAX_FETCH_VIEWS])) == \
        NullificationsRequest(1, MAX_FETCH_VIEWS)
    for body in ([1, MAX_FETCH_VIEWS + 1], [0, 5], [6, 5], [1], [-1, 2], [1, "2"]):
        with pytest.raises(MalformedMessage):
            decode_message(COMMITTEE, raw("nullifications?", body))
    cw = [null(w).to_wire() for w in (3, 4)]
    assert decode_message(COMMITTEE, raw("nullifications", [3, 4, cw])) == answer(3, 4, [3, 4])
    for body in ([3, 4, cw[::-1]], [3, 4, [cw[0], cw[0]]], [4, 4, cw], [3, 3, cw],
                 [1, MAX_FETCH_VIEWS + 1, cw], [3, 4], [3, 4, cw[0]]):
        with pytest.raises(MalformedMessage):
            decode_message(COMMITTEE, raw("nullifications", body))
    many = [null(1).to_wire()] * (MAX_FETCH_VIEWS + 1)
    with pytest.raises(MalformedMessage, match="at most"):
        decode_message(COMMITTEE, raw("nullifications", [1, MAX_FETCH_VIEWS, many]))
    big = raw("nullifications", [1, 2, [], b"\x00" * MAX_FETCH_ANSWER_BYTES])
    with pytest.raises(MalformedMessage, match="bytes"):
        decode_message(COMMITTEE, big)


# -- the simulator: away for 1,000 nullified views, rejoins, and its vote is needed ----------

AWAY, DOWN = 3, 2
START_MS = 1500
AWAY_VIEWS = 1000
#: Views in the away phase take a leader timeout plus delays (no back-off in this config).
END_MS = START_MS + AWAY_VIEWS * 300
REJOIN_CONFIG = CoreConfig(leader_timeout_ms=200, view_timeout_ms=300, batch_interval_ms=20,
                           max_batch_commands=50, max_batch_bytes=64 * 1024,
                           max_backoff_exponent=0)


#: `rejoin_config(withholder=...)`: the first member to answer a `nullifications?` withholds.
FIRST_TO_ANSWER = -1


def rejoin_config(seed: int, withholder: int | None = None, restart: bool = False
                  ) -> tuple[SimConfig, Callable[[], dict[str, int]]]:
    """n = 4, q = 3. From START_MS to END_MS member 3 is cut off (`restart`: crashed, then
    restarted from its durable state) and every proposal is lost, so every view ends
    nullified (over 1,000 of them); then member 3 rejoins and member 2 crashes for good: no
    certificate forms without member 3's vote. `withholder`, if set, never answers a
    `nullifications?` request; FIRST_TO_ANSWER: the first member that answers one (whichever
    peer the laggard asks first on this seed's schedule) never gets an answer through."""
    seen = {"before": 0, "top": 0, "withheld": 0}

    def router(src: int, dst: int, msg: Message | None, now: int) -> bool:
        if isinstance(msg, Nullification | Notarization) and now < END_MS:
            seen["top" if now >= START_MS else "before"] = max(
                seen["top" if now >= START_MS else "before"], msg.certificate.view)
        if isinstance(msg, NullificationsAnswer) and withholder == FIRST_TO_ANSWER:
            seen.setdefault("withholder", src)
        if isinstance(msg, NullificationsAnswer) and src in (withholder,
                                                             seen.get("withholder")):
            seen["withheld"] += 1
            return False
        if START_MS <= now < END_MS:
            return AWAY not in (src, dst) and not isinstance(msg, Proposal)
        return True

    cfg = SimConfig(seed=seed, n=4, router=router, core=REJOIN_CONFIG,
                    crashes=(Crash(DOWN, END_MS, None, torn=False),
                             *((Crash(AWAY, START_MS, END_MS),) if restart else ())),
                    commands_until_ms=END_MS + 20_000, max_time_ms=END_MS + 60_000,
                    max_events=1_000_000)
    return cfg, lambda: dict(seen)


def run_rejoin(seed: int, withholder: int | None = None, restart: bool = False
               ) -> tuple[Simulation, dict[str, int]]:
    print(f"simulating seed {seed}")  # replay: pytest --sim-seed S
    cfg, seen = rejoin_config(seed, withholder, restart)
    sim = Simulation(cfg).run()  # raises SimulationFailure (liveness) if the committee stalls
    return sim, seen()


def the_laggards_vote_was_needed_and_given(sim: Simulation, seen: dict[str, int]) -> None:
    """Every view in the away phase was nullified (more than 1,000 of them); afterwards the
    live members and the laggard finalised blocks whose certificates all carry the laggard's
    signature: with member 2 down and q = 3, none could form without it."""
    assert seen["top"] - seen["before"] >= AWAY_VIEWS, seen
    for node in (0, 1, AWAY):
        x = sim.nodes[node]
        assert x.up and x.finals_since_stable >= sim.config.target_new_blocks, node
    late = [(b, c) for b, c in sim.nodes[AWAY].finalized if b.view > seen["top"]]
    assert late and all(AWAY in c.signers() for _, c in late)


@pytest.mark.parametrize("restart", [False, True], ids=["partitioned", "restarted"])
def test_a_member_away_for_1000_nullified_views_rejoins_and_votes(
        restart: bool, sim_seeds: list[int], request: pytest.FixtureRequest) -> None:
    explicit = request.config.getoption("--sim-seeds") is not None \
        or request.config.getoption("--sim-seed") is not None
    for seed in sim_seeds if explicit else sim_seeds[:1]:
        sim, seen = run_rejoin(seed, restart=restart)
        the_laggards_vote_was_needed_and_given(sim, seen)


def test_a_withholding_server_is_survived_by_asking_the_next_peer(sim_seeds: list[int]) -> None:
    sim, seen = run_rejoin(sim_seeds[0], withholder=FIRST_TO_ANSWER)
    assert seen["withheld"] > 0
    the_laggards_vote_was_needed_and_given(sim, seen)


# -- the node: only answers to requests the core sent are verified ---------------------------


def test_the_node_verifies_only_answers_the_core_asked_for() -> None:
    solicited = SolicitedNullifications()
    verifier = Verifier(COMMITTEE, None, None, None, None, None,  # type: ignore[arg-type]
                        admit=solicited.admit)
    data = encode_message(COMMITTEE, answer(1, 2, [1, 2]))
    one, two = COMMITTEE.members[1], COMMITTEE.members[2]
    assert verifier._decode([(one, data)]) == []  # nobody asked member 1
    solicited.asked(1, NullificationsRequest(1, 2))
    assert verifier._decode([(two, data)]) == []  # member 2 was not asked
    assert [i for i, _ in verifier._decode([(one, data)])] == [1]
    assert verifier._decode([(one, data)]) == []  # one answer per request
    solicited.asked(1, NullificationsRequest(3, 4))
    assert verifier._decode([(one, data)]) == []  # not the range asked for
    other = encode_message(COMMITTEE, Nullification(null(1)))
    assert [i for i, _ in verifier._decode([(one, other)])] == [1]


async def test_the_node_voter_tells_the_verifier_what_the_core_asked_for() -> None:
    """The round loop reports each `nullifications?` it sends, so the answer is admitted."""
    solicited = SolicitedNullifications()
    sent: list[bytes] = []

    class Round:
        committee = COMMITTEE
        me = 3
        asked = solicited.asked
        guard_journal = None
        router = SimpleNamespace(send_nowait=lambda channel, peer, data: sent.append(peer))

        async def _sent_nowait(self) -> None:
            pass

        async def _apply_finalized(self, items: object) -> list[object]:
            return []

    await Voter._execute(Round(), [Send(1, NullificationsRequest(1, 2))])  # type: ignore[arg-type]
    assert sent == [COMMITTEE.members[1]]
    assert solicited.admit(1, answer(1, 2, [1, 2]))
