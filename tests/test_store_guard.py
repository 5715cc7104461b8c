"""Signer guard, first-seen statements and evidence: semantics, atomicity, survival of
restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import ZERO_DIGEST, VoteKind
from coalitiond.log import (
    EvidenceRecord,
    GuardRecord,
    SeenRecord,
    SignerConflict,
    Store,
    StoreUsageError,
)
from coalitiond.testing.chain import ChainBuilder

D1, D2 = b"\x01" * 32, b"\x02" * 32
N, F, X = VoteKind.NOTARIZE, VoteKind.FINALIZE, VoteKind.NULLIFY


@pytest.fixture
def chain() -> ChainBuilder:
    return ChainBuilder(4)


def _open(tmp_path: Path, chain: ChainBuilder) -> Store:
    return Store.open(tmp_path / "log.sqlite3", chain.committee, signing_key=chain.keys[0])


def _seen(chain: ChainBuilder, member: int, view: int, kind: SignedKind,
          digest: bytes) -> SeenRecord:
    sig = sign_statement(chain.keys[member], chain.committee, kind, view, digest)
    return SeenRecord(member, chain.committee.epoch, view, int(kind), digest, sig)


def _evidence(chain: ChainBuilder, member: int, view: int) -> EvidenceRecord:
    a, b = (Statement(SignedKind.NOTARIZE, d, sign_statement(
        chain.keys[member], chain.committee, SignedKind.NOTARIZE, view, d)) for d in (D1, D2))
    return EvidenceRecord.of(Evidence.build(chain.committee, view, member, a, b))


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
        seen = _seen(chain, 2, 9, SignedKind.NOTARIZE, D1)
        with pytest.raises(SignerConflict):
            s.record_event(guard=[GuardRecord(0, 2, N, D1), GuardRecord(0, 1, N, D2)],
                           seen=[seen], evidence=[_evidence(chain, 2, 9)])
        assert s.signed(0, 2, N) is None
        assert s.first_seen(2, 0, 9, N) is None
        assert s.evidence() == []
        with pytest.raises(StoreUsageError, match=r"^event: more than 4096 items$"):
            s.record_event(guard=[GuardRecord(0, v, N, D1) for v in range(4097)])
        with pytest.raises(StoreUsageError, match=r"^evidence of 65537 bytes exceeds 65536$"):
            s.record_event(evidence=[EvidenceRecord(0, 0, 0, "x", b"\x00" * 65537)])


def test_first_seen_statements_survive_a_restart_and_the_first_stays(
        tmp_path: Path, chain: ChainBuilder) -> None:
    """The half of an equivocation seen before a restart is still there after it, for the
    consensus core to compare the other half with (docs/formats.md, seen statements)."""
    first = _seen(chain, 1, 3, SignedKind.NOTARIZE, D1)
    proposal = _seen(chain, 2, 4, SignedKind.PROPOSE, D1)
    with _open(tmp_path, chain) as s:
        assert s.record_event(seen=[first, first, proposal]).seen_added == 2
    with _open(tmp_path, chain) as s:  # the first-seen table survives a restart
        second = _seen(chain, 1, 3, SignedKind.NOTARIZE, D2)
        assert s.record_event(seen=[second]).seen_added == 0
        assert s.first_seen(1, 0, 3, N) == first  # the first one stays
        assert s.seen_statements(0) == [first, proposal]
        assert s.seen_statements(0, from_view=4) == [proposal]
        # The window: statements of views below the floor are dropped, and not taken.
        late = _seen(chain, 3, 2, SignedKind.NULLIFY, ZERO_DIGEST)
        assert s.record_event(seen=[late], seen_floor=4).seen_added == 0
        assert s.seen_statements(0) == [proposal]
        with pytest.raises(StoreUsageError, match=r"^seen statement: member 1 view 3 kind 7"):
            s.record_event(seen=[SeenRecord(1, 0, 3, 7, D1, first.signature)])
        s.audit()


def test_evidence_is_consensus_evidence_only(tmp_path: Path, chain: ChainBuilder) -> None:
    """One evidence format: the store keeps encoded consensus `Evidence` whose columns
    agree with its body, and refuses anything else."""
    ev = _evidence(chain, 1, 3)
    with _open(tmp_path, chain) as s:
        assert s.record_event(evidence=[ev]).evidence_added == 1
        assert s.record_event(evidence=[ev]).evidence_added == 0  # deduplicated by digest
        assert s.evidence() == [ev]
        assert ev.kind == "conflicting-notarize"
        with pytest.raises(StoreUsageError, match=r"^evidence body is not consensus evidence"):
            s.record_event(evidence=[EvidenceRecord(1, 0, 3, ev.kind, b"evidence!")])
        with pytest.raises(StoreUsageError, match=r"^evidence record \(member 2, epoch 0, "
                                                  r"view 3, conflicting-notarize\) differs"):
            s.record_event(evidence=[EvidenceRecord(2, 0, 3, ev.kind, ev.body)])


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
