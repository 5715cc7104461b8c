"""Signer guard, first-seen votes and evidence: semantics, atomicity, survival of restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalitiond.consensus.types import ZERO_DIGEST, Vote, VoteKind
from coalitiond.log import (
    EvidenceRecord,
    GuardRecord,
    SignerConflict,
    Store,
    StoreUsageError,
    equivocation_evidence,
)
from coalitiond.primitives.encoding import decode
from coalitiond.testing.chain import ChainBuilder

D1, D2 = b"\x01" * 32, b"\x02" * 32
N, F, X = VoteKind.NOTARIZE, VoteKind.FINALIZE, VoteKind.NULLIFY


@pytest.fixture
def chain() -> ChainBuilder:
    return ChainBuilder(4)


def _open(tmp_path: Path, chain: ChainBuilder) -> Store:
    return Store.open(tmp_path / "log.sqlite3", chain.committee, signing_key=chain.keys[0])


def test_guard_is_idempotent_and_refuses_conflicts_also_after_restart(
        tmp_path: Path, chain: ChainBuilder) -> None:
    with _open(tmp_path, chain) as s:
        s.guard(0, 5, N, D1)
        s.guard(0, 5, N, D1)  # same digest again: fine (a resend after a crash)
        s.guard(0, 5, F, D1)
        s.guard(0, 6, X, ZERO_DIGEST)
        assert s.highest_signed_view(0) == 6
        assert s.highest_signed_view(1) is None
    with _open(tmp_path, chain) as s:  # restart: the guard is durable
        assert s.signed(0, 5, N) == D1 and s.signed(0, 7, N) is None
        with pytest.raises(SignerConflict, match=(
                r"^signer guard: refusing notarize for epoch 0 view 5 digest 0202020202020202: "
                r"already signed notarize digest 0101010101010101 for that view$")):
            s.guard(0, 5, N, D2)
        with pytest.raises(SignerConflict, match=(
                r"^signer guard: refusing nullify for epoch 0 view 5 digest 0000000000000000: "
                r"already signed finalize digest 0101010101010101 for that view$")):
            s.guard(0, 5, X, ZERO_DIGEST)
        with pytest.raises(SignerConflict, match=(
                r"^signer guard: refusing finalize for epoch 0 view 6 digest 0101010101010101: "
                r"already signed nullify digest 0000000000000000 for that view$")):
            s.guard(0, 6, F, D1)
        # Notarize then nullify in one view is allowed (Simplex: timeout after notarising).
        s.guard(0, 7, N, D1)
        s.guard(0, 7, X, ZERO_DIGEST)
        assert s.highest_signed_view(0) == 7


def test_a_refused_event_writes_nothing(tmp_path: Path, chain: ChainBuilder) -> None:
    with _open(tmp_path, chain) as s:
        s.guard(0, 1, N, D1)
        vote = Vote.sign(chain.keys[2], chain.committee, 2, N, 9, D1)
        with pytest.raises(SignerConflict):
            s.record_event(guard=[GuardRecord(0, 2, N, D1), GuardRecord(0, 1, N, D2)],
                           seen=[vote], evidence=[EvidenceRecord(2, 0, 9, "x", b"e")])
        assert s.signed(0, 2, N) is None
        assert s.first_seen(2, 0, 9, N) is None
        assert s.evidence() == []
        with pytest.raises(StoreUsageError, match=r"^event: more than 4096 items$"):
            s.record_event(guard=[GuardRecord(0, v, N, D1) for v in range(4097)])
        with pytest.raises(StoreUsageError, match=r"^evidence of 65537 bytes exceeds 65536$"):
            s.record_event(evidence=[EvidenceRecord(0, 0, 0, "x", b"\x00" * 65537)])


def test_first_seen_votes_yield_equivocations(tmp_path: Path, chain: ChainBuilder) -> None:
    k, c = chain.keys, chain.committee
    first = Vote.sign(k[1], c, 1, N, 3, D1)
    again = Vote.sign(k[1], c, 1, N, 3, D1)
    second = Vote.sign(k[1], c, 1, N, 3, D2)
    fin = Vote.sign(k[2], c, 2, F, 4, D1)
    nul = Vote.sign(k[2], c, 2, X, 4, ZERO_DIGEST)
    with _open(tmp_path, chain) as s:
        r = s.record_event(seen=[first, again, fin])
        assert r.equivocations == ()
    with _open(tmp_path, chain) as s:  # the first-seen table survives a restart
        r = s.record_event(seen=[second, nul])
        assert [(e.first, e.second) for e in r.equivocations] == [(first, second), (fin, nul)]
        assert s.first_seen(1, 0, 3, N) == first  # the first one stays
        assert s.first_seen(2, 0, 4, X) is None
        ev = [equivocation_evidence(e) for e in r.equivocations]
        assert ev[1].kind == "finalize/nullify"
        body = decode(ev[0].body)
        assert body[:2] == ["equivocation", 1]
        assert [Vote.from_wire(w).verify(c) for w in body[2:]] == [True, True]
        assert s.record_event(evidence=ev).evidence_added == 2
        assert s.record_event(evidence=ev).evidence_added == 0  # deduplicated by digest
        assert s.evidence() == ev


def test_proposal_guard_kind_and_reload(tmp_path: Path, chain: ChainBuilder) -> None:
    propose = 3  # the consensus core's SignedKind.PROPOSE shares the guard table
    with _open(tmp_path, chain) as s:
        s.record_event(guard=[GuardRecord(0, 4, propose, D1), GuardRecord(0, 4, N, D1),
                              GuardRecord(1, 9, X, ZERO_DIGEST)])
        with pytest.raises(SignerConflict, match=r"^signer guard: refusing propose for epoch 0 "
                           r"view 4 digest 0202020202020202: already signed propose digest "
                           r"0101010101010101 for that view$"):
            s.guard(0, 4, propose, D2)
        with pytest.raises(StoreUsageError, match=r"^signer guard: kind 7 / digest of 32 bytes "
                           r"is not a guard record$"):
            s.guard(0, 5, 7, D1)
    with _open(tmp_path, chain) as s:
        assert s.guard_records(0) == [(0, 4, 0, D1), (0, 4, propose, D1)]
        assert s.guard_records(1) == [(1, 9, 2, ZERO_DIGEST)]
        assert s.highest_signed_view(0) == 4 and s.highest_signed_view(1) == 9


def test_guard_records_commit_with_an_append_or_not_at_all(tmp_path: Path) -> None:
    # One consensus event = one transaction: a guard conflict refuses the blocks too.
    from coalitiond.log.sqlite import GuardRecord as G
    from coalitiond.testing.chain import ChainBuilder, seeded_key

    chain = ChainBuilder()
    s = Store.open(tmp_path / "log.sqlite3", chain.committee, signing_key=seeded_key(0, 0))
    try:
        first = chain.next([b"a"])
        s.append_blocks([first], guard=[G(0, 7, VoteKind.NOTARIZE, b"\x01" * 32)])
        assert s.height == 1 and s.signed(0, 7, VoteKind.NOTARIZE) == b"\x01" * 32
        second = chain.next([b"b"])
        with pytest.raises(SignerConflict):
            s.append_blocks([second], guard=[G(0, 7, VoteKind.NOTARIZE, b"\x02" * 32)])
        assert s.height == 1  # the block did not land either
    finally:
        s.close()
