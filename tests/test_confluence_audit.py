"""`coalitiond audit` re-derivation (docs/confluences.md §6): an honest confluence audits
clean; a Byzantine majority that drops, duplicates, invents or mis-sums an intent or refund
(coalitiond/testing/confluence.py, a test harness) is caught item by item, each mismatch
naming the evidence pointer of the upstream entry concerned."""

from __future__ import annotations

import pytest

from coalitiond.components.confluence.intents import Intents
from coalitiond.components.confluence.ledger import Ledger
from coalitiond.integrator.confluence_audit import AuditReport, audit_blocks
from coalitiond.testing.confluence import (
    TAMPERS,
    ConfluenceRun,
    FeedCitizen,
    drop_first_item,
)

T = b"\x42" * 20
R = b"\x99" * 20


def one(n: int) -> bytes:
    return bytes([n]) * 32


def world(kind: str, **kwargs: object) -> ConfluenceRun:
    a, b = FeedCitizen(1), FeedCitizen(2)
    if kind == "intents":
        a.intent(one(1), [(T, 5)])
        b.intent(one(2), [(T, 5)])
        a.intent(one(3), [(T, 5), (T, 6)])
    else:
        a.refund(one(1), 5, R, 10)
        b.refund(one(1), 5, R, 10)
        b.refund(one(2), 5, R, 7)
    a.block()
    b.block()
    run = ConfluenceRun(kind, [a, b], **kwargs)  # type: ignore[arg-type]
    run.run(2)
    for x in (a, b):
        x.slot(6)
        x.block()
    run.run(3)
    return run


def audit(run: ConfluenceRun) -> AuditReport:
    honest = run.make_component(Intents if run.committee.component_kind == "intents"
                                else Ledger)
    return audit_blocks(honest, run.committee.committee_id, run.blocks, run.views())


def found(report: AuditReport) -> list[tuple[int, str, tuple[object, ...] | None]]:
    return [(m.height, m.code, m.pointer) for m in report.mismatches]


@pytest.mark.parametrize("kind", ["intents", "ledger"])
def test_an_honest_confluence_audits_clean(kind: str) -> None:
    run = world(kind)
    assert run.committed()
    report = audit(run)
    assert report.clean, [m.render() for m in report.mismatches]
    assert report.records == len(run.committed()) and report.uncommitted == 0


def ptr(run: ConfluenceRun, citizen: int, seq: int) -> tuple[object, ...]:
    view = run.citizens[citizen].view
    for height in sorted(view.blocks):
        digest, count = view.blocks[height]
        if seq < count:
            return (citizen, seq, height, digest)
    raise AssertionError


EXPECTED = {
    # tamper: the mismatches, each (code, citizen, entry) of the upstream item it names
    "intents-drop": [("record_dropped_intent", 0, 0), ("record_dropped_intent", 0, 1)],
    "intents-duplicate": [("record_duplicated_intent", 0, 0),
                          ("record_duplicated_intent", 0, 1)],
    "intents-invent": [("record_invented_intent", 0, 0), ("record_invented_intent", 0, 1)],
    "ledger-drop": [("record_dropped_submission", 0, 0), ("record_wrong_amount", None, None),
                    ("record_wrong_total", None, None)],
    "ledger-duplicate": [("record_duplicated_submission", 0, 0),
                         ("record_wrong_amount", None, None), ("record_wrong_total", None, None)],
    "ledger-invent": [("record_invented_submission", 0, 0), ("record_wrong_amount", None, None),
                      ("record_wrong_total", None, None)],
    "ledger-mis-sum": [("record_mis_sum", None, None), ("record_wrong_amount", None, None),
                       ("record_wrong_total", None, None)],
}


@pytest.mark.parametrize("tamper", sorted(EXPECTED))
def test_a_byzantine_majority_is_caught_item_by_item(tamper: str) -> None:
    run = world(tamper.split("-")[0], cls=TAMPERS[tamper])
    report = audit(run)
    got = [(code, None if p is None else p[:2], p) for _, code, p in found(report)]
    want = [(code, None if c is None else (c, s), None if c is None else ptr(run, c, s))
            for code, c, s in EXPECTED[tamper]]
    assert got == want, [m.render() for m in report.mismatches]
    assert all(m.height == found(report)[0][0] for m in report.mismatches)


def test_an_ingest_that_leaves_out_upstream_items_is_caught() -> None:
    run = world("intents", tamper_ingest=drop_first_item)
    report = audit(run)
    assert [(code, p) for _, code, p in found(report)] == [
        ("ingest_dropped_item", ptr(run, 0, 0)), ("ingest_dropped_item", ptr(run, 1, 0)),
        ("ingest_dropped_item", ptr(run, 0, 2)), ("ingest_dropped_item", ptr(run, 1, 1))]
    # The honest replica, fed the upstream items, sealed routes the committee never made.
    assert report.uncommitted == 2


def test_an_invented_ingest_item_is_caught() -> None:
    def invent(args: dict[str, object]) -> dict[str, object]:
        items = list(args["items"])  # type: ignore[call-overload]
        if args["citizen"] == 0 and items and items[0][0] == "intent":
            items[0] = [*items[0][:3], b"\xee" * 32, *items[0][4:]]
        args["items"] = items
        return args

    run = world("intents", tamper_ingest=invent)
    report = audit(run)
    codes = [m.code for m in report.mismatches]
    assert codes[0] == "ingest_altered_item" and report.mismatches[0].pointer == ptr(run, 0, 0)
    assert "record_invented_intent" in codes and "record_dropped_intent" in codes
