"""The store: appending finalised blocks, reading, proofs, reopen, and every refusal."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.consensus.types import Block, Certificate, InvalidCertificate, Vote, VoteKind
from coalitiond.log import (
    AsyncStore,
    BlockToAppend,
    CommitteeMismatch,
    SchemaMismatch,
    Store,
    StoreCorrupt,
    StoreOpenError,
    StoreUsageError,
    entry_leaf,
)
from coalitiond.log.records import entry_leaves
from coalitiond.log.schema import SCHEMA_VERSION
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.encoding import decode
from coalitiond.testing.chain import ChainBuilder, seeded_key
from coalitiond.verify import (
    merkle_root,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)


@pytest.fixture
def chain() -> ChainBuilder:
    return ChainBuilder(5)


def _open(path: Path, chain: ChainBuilder, member: int = 0) -> Store:
    return Store.open(path, chain.committee, signing_key=chain.keys[member])


def test_append_read_prove_and_reopen(tmp_path: Path, chain: ChainBuilder) -> None:
    path = tmp_path / "log.sqlite3"
    leaves: list[bytes] = []
    with _open(path, chain) as s:
        for h in range(1, 13):
            item = chain.next([b"cmd-%d-%d" % (h, i) for i in range(h % 4)])
            cp = s.append_block(item.block, item.finalization, item.votes)
            leaves += [entry_leaf(item.block, i) for i in range(len(item.block.commands))]
            assert (cp.height, cp.size, cp.root) == (h, len(leaves), merkle_root(leaves))
            assert verify_checkpoint(s.checkpoint(), chain.keys[0].public) == cp
        root = s.root()
    with Store.open(path, chain.committee, signing_key=chain.keys[0]) as s:
        assert (s.height, s.size, s.root()) == (12, len(leaves), root)
        assert s.head_digest == chain.head.digest
        for i, leaf in enumerate(leaves):
            assert s.entry(i) == leaf
            assert verify_inclusion(leaf, i, s.size, s.inclusion_proof(i), root)
        for old in range(len(leaves) + 1):
            assert verify_consistency(old, s.size, merkle_root(leaves[:old]), root,
                                      s.consistency_proof(old))
            assert s.root(old) == merkle_root(leaves[:old])
        # Every vote held (5 notarize + 5 finalize), not only the q in the certificate.
        fb = s.finalized(7)
        assert fb.finalization is not None and len(fb.finalization.signatures) == 4
        assert sorted((v.kind, v.signer) for v in fb.votes) == sorted(
            [(VoteKind.NOTARIZE, i) for i in range(5)] + [(VoteKind.FINALIZE, i) for i in range(5)])
        assert s.audit().entries == len(leaves)


def test_entry_leaf_bytes_are_pinned(chain: ChainBuilder) -> None:
    b = chain.block([b"hello"])
    assert decode(entry_leaf(b, 0)) == ["entry", 1, 0, 1, b.digest, 0, b"hello"]


def test_notarised_ancestors_are_finalised_by_a_descendant(tmp_path: Path,
                                                           chain: ChainBuilder) -> None:
    with _open(tmp_path / "log.sqlite3", chain) as s:
        a = chain.block([b"a"])
        b = chain.block([b"b"], parent=a)
        nota = Certificate.from_votes(chain.votes(a, VoteKind.NOTARIZE, range(4)))
        fin_b = chain.certify(b)
        s.append_blocks([BlockToAppend(a, None, notarization=nota), fin_b])
        assert s.height == 2 and s.audit().height == 2
        c = chain.block([b"c"], parent=b)
        with pytest.raises(StoreUsageError,
                           match=r"^append: the last block needs a finalize certificate$"):
            s.append_blocks([BlockToAppend(c, None, notarization=Certificate.from_votes(
                chain.votes(c, VoteKind.NOTARIZE, range(4))))])


def test_refusals_write_nothing(tmp_path: Path, chain: ChainBuilder) -> None:
    path = tmp_path / "log.sqlite3"
    with _open(path, chain) as s:
        first = chain.next([b"one"])
        s.append_blocks([first])
        root = s.root()
        # Out of order: a block that does not extend the head.
        stray = chain.block([b"x"], parent=first.block)
        orphan = chain.block([b"y"], parent=stray)
        with pytest.raises(StoreUsageError, match=r"^append: block 3 \(parent [0-9a-f]{16}\) "
                           r"does not extend height 1 \([0-9a-f]{16}\)$"):
            s.append_blocks([chain.certify(orphan)])
        # Below quorum.
        weak = chain.certify(stray, signers=[0, 1, 2])
        with pytest.raises(InvalidCertificate, match=r"^certificate has 3 signatures, quorum is 4$"):
            s.append_blocks([weak])
        # A certificate for another block.
        other = chain.certify(chain.block([b"z"], parent=first.block))
        with pytest.raises(StoreUsageError, match=r"^append: height 2: the finalize certificate "
                           r"is not for this block$"):
            s.append_blocks([BlockToAppend(stray, other.finalization)])
        # A forged vote among the collected ones.
        good = chain.certify(stray)
        v0 = good.votes[0]
        bad_vote = Vote(v0.kind, v0.epoch, v0.view, v0.digest, 1, v0.signature)
        with pytest.raises(StoreUsageError, match=r"^append: height 2: vote of member 1 does not "
                           r"verify$"):
            s.append_blocks([BlockToAppend(stray, good.finalization, [bad_vote])])
        # A vote for another block.
        with pytest.raises(StoreUsageError, match=r"^height 2: vote of member 0 is for another"):
            s.append_blocks([BlockToAppend(stray, good.finalization, other.votes[:1])])
        assert (s.height, s.size, s.root()) == (1, 1, root)
        s.append_blocks([good])  # the store is still usable
        assert s.height == 2 and s.audit().height == 2


def test_reads_outside_the_log_are_refused(tmp_path: Path, chain: ChainBuilder) -> None:
    with _open(tmp_path / "log.sqlite3", chain) as s:
        s.append_blocks([chain.next([b"a", b"b"])])
        with pytest.raises(StoreUsageError, match=r"^no entry 2 \(log has 2\)$"):
            s.entry(2)
        with pytest.raises(StoreUsageError, match=r"^tree size 3 outside 0\.\.2$"):
            s.inclusion_proof(0, 3)
        with pytest.raises(StoreUsageError, match=r"^no block at height 5 \(head is 1\)$"):
            s.block(5)
        with pytest.raises(StoreUsageError, match=r"^no checkpoint at height 0$"):
            s.checkpoint(0)


def test_open_refuses_other_committee_member_schema(tmp_path: Path, chain: ChainBuilder) -> None:
    path = tmp_path / "log.sqlite3"
    with pytest.raises(StoreOpenError, match=r"log.sqlite3: no store here"):
        Store.open(path)
    with pytest.raises(StoreOpenError, match=r"directory .*nope does not exist$"):
        Store.open(tmp_path / "nope" / "log.sqlite3", chain.committee,
                   signing_key=chain.keys[0])
    with pytest.raises(CommitteeMismatch, match=r"identity [0-9a-f]{16} is not a member"):
        Store.open(path, chain.committee, signing_key=seeded_key(99, 0))
    _open(path, chain).close()
    other = ChainBuilder(5, name="another")
    with pytest.raises(CommitteeMismatch, match=r"the store belongs to committee [0-9a-f]{16} "
                       r"\(feed/feed-test\), the configuration names committee [0-9a-f]{16} "
                       r"\(feed/another\)"):
        Store.open(path, other.committee)
    c = chain.committee
    next_epoch = CommitteeSpec(c.network_name, c.component_kind, c.component_name, c.members,
                               c.fault_bound, epoch=1)
    with pytest.raises(CommitteeMismatch, match=r"the store is for epoch 0 of committee"):
        Store.open(path, next_epoch)
    with pytest.raises(CommitteeMismatch, match=r"this store belongs to member [0-9a-f]{16}, "
                       r"the identity key is [0-9a-f]{16}"):
        Store.open(path, c, signing_key=chain.keys[1])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=7 WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaMismatch, match=r"store schema version 7, this coalitiond reads "
                       rf"version {SCHEMA_VERSION}"):
        Store.open(path, c)


def test_open_refuses_a_foreign_sqlite_file(tmp_path: Path, chain: ChainBuilder) -> None:
    path = tmp_path / "log.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreOpenError, match=r"not a coalitiond store \(SQLite application_id "
                       r"0x0\)"):
        Store.open(path, chain.committee, signing_key=chain.keys[0])


def test_read_only_store_refuses_writes(tmp_path: Path, chain: ChainBuilder) -> None:
    path = tmp_path / "log.sqlite3"
    with _open(path, chain) as s:
        s.append_blocks([chain.next([b"a"])])
    with Store.open(path, read_only=True) as ro:
        assert ro.committee == chain.committee and ro.height == 1
        with pytest.raises(StoreUsageError, match=r"store opened read-only$"):
            ro.record_event(guard=[])
        with pytest.raises(StoreUsageError, match=r"^append: store opened without the member's "
                           r"signing key$"):
            ro.append_blocks([chain.next([b"b"])])


async def test_async_store_runs_off_the_event_loop(tmp_path: Path, chain: ChainBuilder) -> None:
    store = await AsyncStore.open(tmp_path / "log.sqlite3", chain.committee,
                                  signing_key=chain.keys[0])
    items = [chain.next([b"%d" % i]) for i in range(6)]
    heights: list[int] = []

    async def append(it: BlockToAppend) -> None:
        assert it.finalization is not None
        cp = await store.append_block(it.block, it.finalization, it.votes)
        heights.append(cp.height)

    # Sequential calls from one task keep their order; concurrent tasks are serialised by
    # the limiter (one transaction at a time) — here each waits for the previous.
    for it in items[:3]:
        await append(it)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        for it in items[3:]:
            await append(it)
        await store.guard(0, 50, VoteKind.NOTARIZE, b"\x01" * 32)
        assert await store.highest_signed_view(0) == 50
        nursery.cancel_scope.cancel()
    assert heights == [1, 2, 3, 4, 5, 6]
    assert ticks > 0  # the loop kept running while the worker thread wrote
    assert await store.run(lambda s: s.size) == 6
    await store.close()


def test_batch_and_certificate_refusals(tmp_path: Path, chain: ChainBuilder) -> None:
    with _open(tmp_path / "log.sqlite3", chain) as s:
        a = chain.block([b"a"])
        fin = chain.certify(chain.block([b"b"], parent=a))
        with pytest.raises(StoreUsageError,
                           match=r"^append: the last block needs a finalize certificate$"):
            s.append_blocks([fin, BlockToAppend(chain.block([b"c"], parent=fin.block), None)])
        with pytest.raises(StoreUsageError, match=r"^append: at most 1024 blocks per "
                           r"transaction, got 1025$"):
            s.append_blocks([fin] * 1025)
        assert s.append_blocks([]) == [] and s.height == 0
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    with pytest.raises(StoreOpenError, match=r"empty\.sqlite3: empty store file and no "
                       r"committee to create it$"):
        Store.open(empty)
    # An empty file (a crash during creation) is created over when the committee is known.
    with Store.open(empty, chain.committee, signing_key=chain.keys[0]) as s:
        assert s.height == 0


def test_export_to_a_missing_directory_is_refused(tmp_path: Path, chain: ChainBuilder,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from coalitiond.cli import main

    _open(tmp_path / "log.sqlite3", chain).close()
    assert main(["export", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path / "no" / "a.arc")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"coalitiond: error: {tmp_path / 'no' / 'a.arc'}: cannot write the archive: No such "
        f"file or directory")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(0, 2**64 - 1),
       st.integers(1, 2**64 - 1))
def test_batched_entry_encoding_equals_the_reference(commands: list[bytes], epoch: int,
                                                     height: int) -> None:
    b = Block(epoch, height, 0, b"\x01" * 32, 0, tuple(commands), height - 1, b"\x00" * 32)
    assert entry_leaves(b) == [entry_leaf(b, i) for i in range(len(commands))]


def test_an_ancestor_final_through_a_descendant_needs_no_certificate(
        tmp_path: Path, chain: ChainBuilder) -> None:
    # A member that was restarting can miss an ancestor's votes; the descendant's
    # finalization and the hash chain make the ancestor final all the same.
    path = tmp_path / "log.sqlite3"
    with _open(path, chain) as s:
        a = chain.block([b"a"])
        fin = chain.certify(chain.block([b"b"], parent=a))
        s.append_blocks([BlockToAppend(a, None), fin])
        assert s.height == 2
        assert s.finalized(1).finalization is None and s.finalized(1).notarization is None
        summary = s.audit()
        assert summary.blocks == 2
    with _open(path, chain) as s:  # reopens cleanly: only the head needs its own certificate
        assert s.height == 2


def test_audit_refuses_a_block_certifying_another_log_root(tmp_path: Path) -> None:
    """A block's roots are checked against the log rebuilt at its executed height
    (docs/protocol.md §7): an archive or store whose chain certifies another log is damaged,
    even when every signature verifies."""
    chain = ChainBuilder(4)
    first = chain.next([b"one", b"two"])
    honest = chain.block([b"three"])
    chain.head, chain.view = honest, honest.view
    lie = dataclasses.replace(honest.roots, log_size=honest.log_size + 1)
    forged = Block.with_roots(honest.epoch, honest.height, honest.view, honest.parent,
                              honest.proposer, honest.commands, lie)
    with Store.open(tmp_path / "log.sqlite3", chain.committee,
                    signing_key=chain.keys[0]) as s:
        s.append_blocks([first, chain.certify(forged)])
        with pytest.raises(StoreCorrupt, match=r"height 2\): the block certifies log size 3 .* "
                                               r"at height 1; the log there has size 2"):
            s.audit()
