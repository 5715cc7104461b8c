"""The signer-guard journal (coalitiond/log/guard_journal.py): a guard record is durable when
its write returns, reaches the store when the member opens it again, a damaged slot (a torn
write, or an acknowledged record damaged since: they cannot be told apart) is reported so the
member starts as guard-lost, and a record contradicting one this member signed is refused before anything is
written — whether the earlier record is in the journal or only in the store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coalitiond.consensus.types import VoteKind
from coalitiond.log import Store
from coalitiond.log.errors import SignerConflict, StoreOpenError, StoreUsageError
from coalitiond.log.guard_journal import (
    JOURNAL_SLOTS,
    MAX_UNSETTLED,
    RECORD_SIZE,
    GuardJournal,
    decode_record,
    encode_record,
    journal_path,
)
from coalitiond.log.sqlite import GuardRecord
from coalitiond.testing.chain import ChainBuilder

NOTARIZE, FINALIZE, NULLIFY, PROPOSE = 0, 1, 2, 3


def _rec(view: int, kind: int = NOTARIZE, fill: int | None = None) -> GuardRecord:
    return GuardRecord(0, view, kind, bytes([view % 256 if fill is None else fill]) * 32)


@pytest.fixture
def chain() -> ChainBuilder:
    return ChainBuilder(4)


def _open(tmp_path: Path, chain: ChainBuilder) -> tuple[Store, GuardJournal]:
    store = Store.open(tmp_path / "log.sqlite3", chain.committee, signing_key=chain.keys[0])
    return store, GuardJournal.open(journal_path(tmp_path / "log.sqlite3"), store, 0)


def test_records_only_in_the_journal_reach_the_store_at_the_next_open(
        tmp_path: Path, chain: ChainBuilder) -> None:
    store, journal = _open(tmp_path, chain)
    journal.write([_rec(1, PROPOSE), _rec(1)])
    journal.write([_rec(2, FINALIZE, fill=7)])
    # A crash here: the store never took them.
    journal.close()
    assert store.guard_records(0) == []
    store.close()
    store, journal = _open(tmp_path, chain)
    assert sorted(store.guard_records(0)) == sorted(
        (g.epoch, g.view, g.kind, g.digest) for g in
        [_rec(1, PROPOSE), _rec(1), _rec(2, FINALIZE, fill=7)])
    assert store.highest_signed_view(0) == 2
    journal.close()
    store.close()


def test_a_damaged_slot_is_reported_and_the_checked_records_kept(
        tmp_path: Path, chain: ChainBuilder) -> None:
    store, journal = _open(tmp_path, chain)
    journal.write([_rec(1), _rec(2), _rec(3)])
    journal.close()
    store.close()
    path = journal_path(tmp_path / "log.sqlite3")
    data = bytearray(path.read_bytes())
    data[2 * RECORD_SIZE + 20] ^= 0xFF  # the third record's write was torn
    path.write_bytes(bytes(data))
    assert decode_record(bytes(data[2 * RECORD_SIZE:3 * RECORD_SIZE])) is None
    store, journal = _open(tmp_path, chain)
    assert sorted(v for _, v, _, _ in store.guard_records(0)) == [1, 2]
    # Record 3 may have been acknowledged (its signature sent) and damaged since: the member
    # must start as guard-lost (node/member.py), not sign in view 3 as if it never had.
    assert journal.damaged_slots == 1
    journal.close()
    store.close()
    # The journal was reset once its records were in the store: reported once, not forever.
    assert not any(path.read_bytes())
    store, journal = _open(tmp_path, chain)
    assert journal.damaged_slots == 0
    assert sorted(v for _, v, _, _ in store.guard_records(0)) == [1, 2]
    journal.close()
    store.close()


def test_a_record_the_store_took_directly_is_checked_before_the_next_write(
        tmp_path: Path, chain: ChainBuilder) -> None:
    # A round that finalises commits its guard records with its block (node/voter.py), not
    # through the journal; the journal is told, so a NULLIFY of that view is refused before
    # it is written (and its signature could leave), not at the store's next commit.
    store, journal = _open(tmp_path, chain)
    store.record_event(guard=[_rec(7, FINALIZE)])
    journal.remember([_rec(7, FINALIZE)])
    with pytest.raises(SignerConflict, match="already signed finalize"):
        journal.write([_rec(7, NULLIFY, fill=0)])
    journal.close()
    store.close()


@pytest.mark.parametrize(("first", "second", "message"), [
    (_rec(5), _rec(5, fill=9), "refusing notarize for epoch 0 view 5"),
    (_rec(5, NULLIFY, fill=0), _rec(5, FINALIZE), "already signed nullify"),
    (_rec(5, FINALIZE), _rec(5, NULLIFY, fill=0), "already signed finalize"),
])
def test_a_contradicting_record_is_refused_and_nothing_is_written(
        tmp_path: Path, chain: ChainBuilder, first: GuardRecord, second: GuardRecord,
        message: str) -> None:
    store, journal = _open(tmp_path, chain)
    journal.write([first])
    with pytest.raises(SignerConflict, match=message):
        journal.write([_rec(4), second])  # all or nothing: view 4 is not written either
    journal.close()
    store.close()
    store, journal = _open(tmp_path, chain)
    assert store.guard_records(0) == [(first.epoch, first.view, first.kind, first.digest)]
    journal.close()
    store.close()


def test_a_record_contradicting_one_only_in_the_store_is_refused(
        tmp_path: Path, chain: ChainBuilder) -> None:
    store = Store.open(tmp_path / "log.sqlite3", chain.committee, signing_key=chain.keys[0])
    store.guard(0, 8, VoteKind.NOTARIZE, bytes([1]) * 32)
    journal = GuardJournal.open(journal_path(tmp_path / "log.sqlite3"), store, 0)
    with pytest.raises(SignerConflict, match="view 8"):
        journal.write([_rec(8, fill=2)])
    journal.write([_rec(8, fill=1)])  # the same statement again is fine
    journal.close()
    store.close()


def test_a_journal_of_the_wrong_size_is_refused_with_the_store_intact(
        tmp_path: Path, chain: ChainBuilder) -> None:
    store, journal = _open(tmp_path, chain)
    journal.write([_rec(1)])
    journal.close()
    store.record_event(guard=[_rec(1)])
    path = journal_path(tmp_path / "log.sqlite3")
    with path.open("ab") as f:
        f.write(b"x")
    with pytest.raises(StoreOpenError, match=f"guard journal of {JOURNAL_SLOTS * RECORD_SIZE + 1}"
                                             " bytes"):
        GuardJournal.open(path, store, 0)
    assert store.guard_records(0) == [(0, 1, NOTARIZE, _rec(1).digest)]
    store.close()


def test_records_the_store_has_not_taken_are_never_written_over(
        tmp_path: Path, chain: ChainBuilder) -> None:
    store, journal = _open(tmp_path, chain)
    journal.write([_rec(v) for v in range(1, MAX_UNSETTLED + 1)])
    with pytest.raises(StoreUsageError, match="not yet in the store"):
        journal.write([_rec(MAX_UNSETTLED + 1)])
    # The voter commits them, then the ring goes on past its end.
    store.record_event(guard=[_rec(v) for v in range(1, MAX_UNSETTLED + 1)])
    journal.settled(journal.written)
    view = MAX_UNSETTLED + 1
    while journal.written < JOURNAL_SLOTS + 10:
        journal.write([_rec(view)])
        view += 1
        if journal.written % 100 == 0:
            journal.settled(journal.written)
    journal.close()
    store.close()
    store, journal = _open(tmp_path, chain)
    assert store.highest_signed_view(0) == view - 1
    assert len(store.guard_records(0)) == view - 1
    journal.close()
    store.close()


def test_record_encoding_round_trips() -> None:
    g = GuardRecord(3, 2**40, PROPOSE, os.urandom(32))
    raw = encode_record(g)
    assert len(raw) == RECORD_SIZE and decode_record(raw) == g
    assert decode_record(bytes(RECORD_SIZE)) is None


# A real writer process, SIGKILLed while writing: it acknowledges each record on stdout
# only after the journal's write returned.
WRITER = r"""
import sys
from pathlib import Path
from coalitiond.log import Store
from coalitiond.log.guard_journal import GuardJournal, journal_path
from coalitiond.log.sqlite import GuardRecord
from coalitiond.testing.chain import ChainBuilder
path = Path(sys.argv[1])
chain = ChainBuilder(4)
s = Store.open(path, chain.committee, signing_key=chain.keys[0])
j = GuardJournal.open(journal_path(path), s, 0)
view = (s.highest_signed_view(0) or 0) + 1
while True:
    j.write([GuardRecord(0, view, 0, bytes([view % 256]) * 32)])
    print("ACK", view, flush=True)
    if view % 50 == 0:
        s.record_event(guard=[GuardRecord(0, v, 0, bytes([v % 256]) * 32)
                              for v in range(view - 49, view + 1)])
        j.settled(j.written)
    view += 1
"""


@pytest.mark.live
def test_sigkill_while_writing_loses_no_acknowledged_record(
        tmp_path: Path, chain: ChainBuilder, sim_seeds: list[int]) -> None:
    path = tmp_path / "log.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    acked = 0
    for seed in sim_seeds[:8]:
        wanted = random.Random(seed).randint(1, 120)
        print(f"seed {seed}: kill after {wanted} acknowledgements")
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True)
        assert proc.stdout is not None
        try:
            got = 0
            while got < wanted:
                line = proc.stdout.readline()
                if not line:
                    raise AssertionError(f"seed {seed}: writer died: {proc.stderr.read()}")
                if line.startswith("ACK "):  # (log lines share stdout)
                    acked = int(line.split()[1])
                    got += 1
            proc.send_signal(signal.SIGKILL)  # inside its next write, or just after it
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()
        store = Store.open(path, chain.committee, signing_key=chain.keys[0])
        journal = GuardJournal.open(journal_path(path), store, 0)
        for view in range(1, acked + 1):
            assert store.signed(0, view, VoteKind.NOTARIZE) == bytes([view % 256]) * 32, \
                f"seed {seed}: lost the acknowledged guard record of view {view}"
        journal.close()
        store.close()
