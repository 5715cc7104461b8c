"""Votes that arrive after their block was stored (the slowest members' finalise votes) are
added to it, so the log keeps every signature the member collected (DESIGN §2.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalitiond.consensus.types import VoteKind
from coalitiond.log import Store, StoreUsageError
from coalitiond.log.sqlite import GuardRecord
from coalitiond.testing.chain import ChainBuilder


def _signers(s: Store, height: int, kind: VoteKind) -> list[int]:
    return sorted(v.signer for v in s.finalized(height).votes if v.kind is kind)


def test_late_votes_are_added_to_stored_blocks_once(tmp_path: Path) -> None:
    chain = ChainBuilder(5)
    with Store.open(tmp_path / "log.sqlite3", chain.committee,
                    signing_key=chain.keys[0]) as s:
        first = chain.next([b"a"], all_votes=False)  # stored with its certificate only
        s.append_blocks([first])
        assert _signers(s, 1, VoteKind.FINALIZE) == [0, 1, 2, 3]
        late = chain.votes(first.block, VoteKind.FINALIZE, [4])
        # With the next event's guard record (no fsync of their own)...
        s.record_event(guard=[GuardRecord(0, 2, int(VoteKind.NOTARIZE), b"\x02" * 32)],
                       late_votes=[(1, late[0])])
        assert _signers(s, 1, VoteKind.FINALIZE) == [0, 1, 2, 3, 4]
        # ...or with the next append; a vote already held is ignored.
        second = chain.next([b"b"], all_votes=False)
        notarize = chain.votes(first.block, VoteKind.NOTARIZE, [3])
        s.append_blocks([second], late_votes=[(1, late[0]), (1, notarize[0])])
        assert _signers(s, 1, VoteKind.FINALIZE) == [0, 1, 2, 3, 4]
        assert _signers(s, 1, VoteKind.NOTARIZE) == [3]
        assert s.height == 2
        assert s.audit().entries == 2


def test_a_late_vote_for_another_block_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    chain = ChainBuilder(5)
    with Store.open(tmp_path / "log.sqlite3", chain.committee,
                    signing_key=chain.keys[0]) as s:
        first = chain.next([b"a"], all_votes=False)
        s.append_blocks([first])
        second = chain.next([b"b"], all_votes=False)
        wrong = chain.votes(second.block, VoteKind.FINALIZE, [4])[0]  # not block 1's
        guard = GuardRecord(0, 9, int(VoteKind.NOTARIZE), b"\x09" * 32)
        with pytest.raises(StoreUsageError, match="another"):
            s.record_event(guard=[guard], late_votes=[(1, wrong)])
        with pytest.raises(StoreUsageError, match="no such block"):
            s.record_event(late_votes=[(5, wrong)])
        assert _signers(s, 1, VoteKind.FINALIZE) == [0, 1, 2, 3]
        assert s.highest_signed_view(0) is None  # the guard record was rolled back too
