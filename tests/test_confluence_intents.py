"""The `intents` confluence (SPEC §4.1, docs/confluences.md): routing per (target, slot), the
slot finality rule in both failure modes, one commit per key, ingest checks and snapshots."""

from __future__ import annotations

import pytest

from coalitiond.commands.envelope import InvalidCommand
from coalitiond.commands.member import MemberCommand
from coalitiond.components.base import BlockContext, MalformedSnapshot
from coalitiond.components.confluence.component import Confluence
from coalitiond.components.confluence.intents import Intents
from coalitiond.components.confluence.leader import leader_commands, vote_check
from coalitiond.components.confluence.records import (
    MemoryView,
    build_ingest,
    feed_entry_fields,
)
from coalitiond.primitives.errors import OperatorError
from coalitiond.testing.confluence import ConfluenceRun, FeedCitizen, drop_first_item

T = b"\x42" * 20
U = b"\x43" * 20


def iid(n: int) -> bytes:
    return bytes([n]) * 32


@pytest.fixture
def citizens() -> list[FeedCitizen]:
    return [FeedCitizen(1), FeedCitizen(2), FeedCitizen(3)]


def outcomes(run: ConfluenceRun) -> list[tuple[str, str | None]]:
    return [(o.status, o.reason) for r in run.results for o in r.outcomes]


def test_routes_each_key_once_with_sorted_ids_and_evidence(citizens: list[FeedCitizen]) -> None:
    a, b, c = citizens
    a.intent(iid(9), [(T, 5), (U, 5)])
    b.intent(iid(3), [(T, 5)])
    c.intent(iid(3), [(T, 5)])  # the same intent seen twice: routed once
    c.intent(iid(7), [(T, 6)])
    for x in citizens:
        x.block()
    run = ConfluenceRun("intents", citizens)
    run.run(2)
    assert run.committed() == []  # nobody passed slot 5 yet: stall
    for x in citizens:
        x.slot(5)
        x.block()
    run.run(3)
    routes = run.committed()
    assert [(r["target"], r["slot"]) for r in routes] == [(T, 5), (U, 5)]
    t5 = routes[0]
    assert [row[0] for row in t5["intents"]] == [iid(3), iid(9)]
    assert not t5["partial"] and t5["missing"] == []
    assert run.component.duplicates == 1
    # Every evidence pointer names the upstream entry that holds the intent.
    for row in t5["intents"]:
        intent_id, citizen, seq, height, block = row
        view = citizens[citizen].view
        assert view.blocks[height][0] == block
        s, h, kind, body = feed_entry_fields(view.entry(seq))
        assert (s, h, kind, body["intent_id"]) == (seq, height, "intent", intent_id)
    # Slot 6 is open until every citizen passes it.
    assert run.component.head()["open"] == 1


def test_a_second_commit_of_a_key_is_refused_and_changes_nothing(
        citizens: list[FeedCitizen]) -> None:
    a = citizens[0]
    run = ConfluenceRun("intents", [a])
    a.intent(iid(1), [(T, 1)])
    a.slot(1)
    a.block()
    run.run(2)
    (route,) = run.committed()
    cid = run.committee.committee_id
    before = run.component.state_root()
    ctx = BlockContext(99, b"\x00" * 32)
    again = run.component.apply_member(ctx, MemberCommand.make(cid, "route", route))
    assert (again.reason, again.detail) == (  # type: ignore[union-attr]
        "already_committed", f"route: target {T.hex()} slot 1 is committed already")
    assert run.component.state_root() == before


def test_a_record_that_differs_from_the_sealed_one_is_refused(
        citizens: list[FeedCitizen]) -> None:
    a = citizens[0]
    run = ConfluenceRun("intents", [a])
    a.intent(iid(1), [(T, 1)])
    a.intent(iid(2), [(T, 1)])
    a.slot(1)
    a.block()
    run.step()  # ingest; sealed at the end of the block
    (sealed,) = run.component.pending.values()
    wrong = dict(sealed, intents=sealed["intents"][:1])
    cid = run.committee.committee_id
    before = run.component.state_root()
    result = run.component.apply_member(BlockContext(9, b"\x00" * 32),
                                        MemberCommand.make(cid, "route", wrong))
    assert result.reason == "record_mismatch"  # type: ignore[union-attr]
    assert run.component.state_root() == before
    assert run.component.output_known(wrong) is not None
    assert run.component.output_known(sealed) is None


def test_stall_mode_waits_for_a_stalled_citizen(citizens: list[FeedCitizen]) -> None:
    a, b, c = citizens
    a.intent(iid(1), [(T, 4)])
    for x in (a, b):
        x.slot(4)
    for x in citizens:
        x.block()
    run = ConfluenceRun("intents", citizens)
    run.run(4, advance_tick=False)
    assert run.committed() == []  # c never passed slot 4
    c.slot(4)
    c.block()
    run.run(2)
    (route,) = run.committed()
    assert not route["partial"] and route["missing"] == []


def test_partial_mode_commits_after_the_deadline_marked_partial(
        citizens: list[FeedCitizen]) -> None:
    a, b, c = citizens
    a.intent(iid(1), [(T, 4)])
    b.intent(iid(2), [(T, 4)])
    for x in (a, b):
        x.slot(4)
    for x in citizens:
        x.block()
    run = ConfluenceRun("intents", citizens, failure_mode="partial", deadline=3)
    run.run(3, advance_tick=True)  # ticks 1..3: the key opened at tick 1, deadline 1+3
    assert run.committed() == []
    run.run(3, advance_tick=True)
    (route,) = run.committed()
    assert route["partial"] and route["missing"] == [2]
    assert [r[0] for r in route["intents"]] == [iid(1), iid(2)]
    # The stalled citizen comes back with an intent for the sealed key: late, not routed.
    c.intent(iid(3), [(T, 4)])
    c.slot(4)
    c.block()
    run.run(3, advance_tick=True)
    assert run.committed() == [route]
    assert run.component.late == 1


def test_partial_mode_needs_an_almanac_and_a_deadline() -> None:
    with pytest.raises(OperatorError, match="partial_deadline_ticks >= 1"):
        Intents.from_params({"citizens": [b"\x01" * 32], "failure_mode": "partial",
                             "follow_almanac": None})


def test_ingests_follow_the_position_and_never_go_back(citizens: list[FeedCitizen]) -> None:
    a = citizens[0]
    a.intent(iid(1), [(T, 1)])
    a.block()
    run = ConfluenceRun("intents", [a])
    cid = run.committee.committee_id
    ingest = build_ingest(a.view, 0, Intents.KINDS, 0)
    assert ingest is not None
    run.step()
    before = run.component.state_root()
    ctx = BlockContext(9, b"\x00" * 32)
    again = run.component.apply_member(ctx, MemberCommand.make(cid, "ingest", ingest.to_args()))
    assert (again.reason, again.detail) == (  # type: ignore[union-attr]
        "stale_ingest", "ingest: citizen 0 is read up to entry 1, the ingest starts at 0")
    back = dict(ingest.to_args(), **{"from": 1, "to": 1, "height": 0, "items": [],
                                     "blocks": []})
    result = run.component.apply_member(ctx, MemberCommand.make(cid, "ingest", back))
    assert result.reason == "position_back"  # type: ignore[union-attr]
    assert run.component.state_root() == before


def test_voters_rebuild_ingests_from_their_own_replica(citizens: list[FeedCitizen]) -> None:
    a = citizens[0]
    a.intent(iid(1), [(T, 1)])
    a.intent(iid(2), [(T, 1)])
    a.block()
    run = ConfluenceRun("intents", [a])
    cid = run.committee.committee_id
    (raw,) = leader_commands(cid, run.component, [a.view])
    honest = MemberCommand.decode(raw)
    assert vote_check(run.component, [a.view], honest) is None
    forged = MemberCommand.make(cid, "ingest", drop_first_item(dict(honest.args)))
    assert vote_check(run.component, [a.view], forged) == (
        "ingest: citizen 0 entries 0..2 differ from this member's copy of the citizen's log")
    behind = MemoryView([], {})
    assert vote_check(run.component, [behind], honest) == (
        "ingest: citizen 0 entries 0..2 up to block 1 are not verified here (yet)")


def test_malformed_ingests_are_refused_before_voting(citizens: list[FeedCitizen]) -> None:
    a = citizens[0]
    a.intent(iid(1), [(T, 1)])
    a.block()
    run = ConfluenceRun("intents", [a])
    ingest = build_ingest(a.view, 0, Intents.KINDS, 0)
    assert ingest is not None
    args = ingest.to_args()
    cid = run.committee.committee_id
    bad = dict(args, items=[["intent", 0, 1, iid(1), b"short", [[T, 1]]]])
    with pytest.raises(InvalidCommand, match="not a well-formed 'intent' item"):
        run.component.check_member(MemberCommand.make(cid, "ingest", bad))
    with pytest.raises(InvalidCommand, match="citizen must be an index below 1"):
        run.component.check_member(MemberCommand.make(cid, "ingest", dict(args, citizen=1)))


def test_snapshot_round_trip_and_refusal_keep_the_state(citizens: list[FeedCitizen]) -> None:
    a, b, _ = citizens
    a.intent(iid(1), [(T, 1), (U, 2)])
    a.slot(1)
    a.block()
    b.block()
    run = ConfluenceRun("intents", [a, b])
    run.run(2)
    snap = run.component.snapshot()
    fresh = run.make_component(Intents)
    fresh.restore(snap)
    assert fresh.state_root() == run.component.state_root()
    root = fresh.state_root()
    with pytest.raises(MalformedSnapshot, match="intents snapshot"):
        fresh.restore(snap[:-3])
    assert fresh.state_root() == root


def test_no_client_command_is_accepted(citizens: list[FeedCitizen]) -> None:
    run = ConfluenceRun("intents", citizens[:1])
    component: Confluence = run.component
    from coalitiond.commands.envelope import Command
    with pytest.raises(InvalidCommand, match="takes no client command"):
        component.check(b"\x00" * 32, Command("publish", {}))


def test_an_intent_for_a_slot_its_citizen_already_passed_is_late(
        citizens: list[FeedCitizen]) -> None:
    a, b, _ = citizens
    a.intent(iid(1), [(T, 4)])
    a.slot(4)
    a.intent(iid(2), [(T, 4)])  # a said it was done with slot 4
    a.block()
    b.block()
    run = ConfluenceRun("intents", [a, b])
    run.run(2)
    assert run.component.late == 1
    b.slot(4)
    b.block()
    run.run(2)
    (route,) = run.committed()
    assert [r[0] for r in route["intents"]] == [iid(1)]
