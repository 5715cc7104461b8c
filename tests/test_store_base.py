"""A state-synced log (schema 3, the `base` table): it starts at H + 1 from the base's block
and Merkle frontier; appends continue with the roots of the whole log; reads below the base
are refused with one line saying where it starts; reopen checks the base; a schema-2 store is
migrated in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coalitiond.log import BlockToAppend, Store, StoreCorrupt
from coalitiond.log.archive import export_archive
from coalitiond.log.base import BelowBase, frontier_positions
from coalitiond.log.records import entry_leaves
from coalitiond.log.schema import SCHEMA_VERSION
from coalitiond.primitives import merkle
from coalitiond.primitives.errors import OperatorError
from coalitiond.testing.chain import ChainBuilder
from coalitiond.verify import verify_consistency, verify_inclusion

BASE = 9  # heights 1..BASE live only in the full log


def _full_log(tmp_path: Path, chain: ChainBuilder, blocks: int) -> tuple[Store, list[bytes]]:
    """A genesis log of `blocks` blocks with 0..4 commands each, and its leaves."""
    full = Store.open(tmp_path / "full.sqlite3", chain.committee, signing_key=chain.keys[0])
    leaves: list[bytes] = []
    for h in range(1, blocks + 1):
        item = chain.next([b"c-%d-%d" % (h, i) for i in range(h % 5)])
        full.append_block(item.block, item.finalization, item.votes)
        leaves += entry_leaves(item.block)
    return full, leaves


def _synced(tmp_path: Path, chain: ChainBuilder, full: Store, upto: int) -> Store:
    """A second member's log state-synced at BASE from `full`, holding blocks BASE+1..upto."""
    size, _ = full.log_at(BASE)
    frontier = merkle.Frontier.load(full._nodes, size)
    synced = Store.open(tmp_path / "synced.sqlite3", chain.committee, signing_key=chain.keys[1])
    items = [BlockToAppend(fb.block, fb.finalization) for fb in full.iter_finalized(BASE + 1,
                                                                                  upto)]
    synced.install_base(full.block(BASE), size, [h for _, h in frontier.stack], items)
    return synced


def test_a_synced_log_appends_from_its_base_with_the_whole_logs_roots(tmp_path: Path) -> None:
    chain = ChainBuilder(4)
    full, _ = _full_log(tmp_path, chain, 20)
    synced = _synced(tmp_path, chain, full, 12)
    # Appends continue from the base: the roots are those of the log from genesis.
    for fb in full.iter_finalized(13, 20):
        cp = synced.append_block(fb.block, fb.finalization)
        assert (cp.size, cp.root) == full.log_at(fb.height)
    assert (synced.height, synced.size, synced.root()) == (20, full.size, full.root())
    base_size = full.log_at(BASE)[0]
    # Proofs that involve no leaf below the base are served, and verify.
    for index in range(base_size, full.size):
        proof = synced.inclusion_proof(index)
        assert proof == full.inclusion_proof(index)
        assert verify_inclusion(synced.entry(index), index, synced.size, proof, full.root())
    for old in range(base_size, full.size + 1):
        assert verify_consistency(old, full.size, full.root(old), full.root(),
                                  synced.consistency_proof(old))
    assert synced.block(BASE) == full.block(BASE)
    assert synced.log_at(BASE) == full.log_at(BASE)
    synced.close()
    # Reopen: the base is read back and checked, the head continues.
    with Store.open(tmp_path / "synced.sqlite3", chain.committee,
                    signing_key=chain.keys[1]) as again:
        assert again.base is not None and again.base.height == BASE
        assert (again.height, again.root(), again.first_height) == (20, full.root(), BASE + 1)
        item = chain.next([b"after-reopen"])
        cp = again.append_block(item.block, item.finalization)
        cp_full = full.append_block(item.block, item.finalization)
        assert (cp.size, cp.root) == (cp_full.size, cp_full.root)
    full.close()


def test_reads_below_the_base_say_where_the_log_starts(tmp_path: Path) -> None:
    chain = ChainBuilder(4)
    full, _ = _full_log(tmp_path, chain, 14)
    synced = _synced(tmp_path, chain, full, 14)
    base_size = full.log_at(BASE)[0]
    where = (rf"below this member's base \(it state-synced: its log starts at height "
             rf"{BASE + 1}, entry {base_size}\); ask another member")
    for read in (lambda: synced.block(3), lambda: synced.finalized(BASE),
                 lambda: list(synced.iter_finalized(1, 12)), lambda: synced.entry(0),
                 lambda: synced.inclusion_proof(base_size - 1),
                 lambda: synced.consistency_proof(1), lambda: synced.root(1),
                 lambda: synced.checkpoint(2), lambda: synced.log_at(4), synced.audit):
        with pytest.raises(BelowBase, match=where):
            read()
    with pytest.raises(OperatorError, match=rf"this member state-synced: its log starts at "
                       rf"height {BASE + 1} \(entry {base_size}\), an archive starts at "
                       rf"genesis"):
        export_archive(synced, tmp_path / "archive")
    assert not (tmp_path / "archive").exists()
    # What is held is intact.
    assert synced.height == 14 and synced.root() == full.root()


def test_a_base_frontier_that_is_not_the_logs_is_found_at_open(tmp_path: Path) -> None:
    chain = ChainBuilder(4)
    full, _ = _full_log(tmp_path, chain, 14)
    synced = _synced(tmp_path, chain, full, 14)
    synced.close()
    level, idx = frontier_positions(full.log_at(BASE)[0])[0]
    conn = sqlite3.connect(tmp_path / "synced.sqlite3")
    conn.execute("UPDATE tree_nodes SET hash=? WHERE level=? AND idx=?",
                 (b"\x11" * 32, level, idx))
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt, match=rf"tree_nodes.*base frontier node \(level {level}, "
                       rf"index {idx}\) differs from the base row"):
        Store.open(tmp_path / "synced.sqlite3", chain.committee)


def test_install_base_refuses_a_log_that_is_not_empty_and_writes_nothing(
        tmp_path: Path) -> None:
    chain = ChainBuilder(4)
    full, _ = _full_log(tmp_path, chain, 14)
    size, _ = full.log_at(BASE)
    frontier = [h for _, h in merkle.Frontier.load(full._nodes, size).stack]
    items = [BlockToAppend(fb.block, fb.finalization) for fb in full.iter_finalized(BASE + 1,
                                                                                  14)]
    with pytest.raises(Exception, match=r"install base: the log is not empty \(height 14"):
        full.install_base(full.block(BASE), size, frontier, items)
    other = Store.open(tmp_path / "o.sqlite3", chain.committee, signing_key=chain.keys[2])
    with pytest.raises(Exception, match=r"install base: a tree of size \d+ has \d+ frontier "
                       r"hashes, got \d+"):
        other.install_base(full.block(BASE), size, frontier[:-1], items)
    with pytest.raises(Exception, match=rf"append: block {BASE + 2} .* does not extend height "
                       rf"{BASE}"):
        other.install_base(full.block(BASE), size, frontier, items[1:])
    assert (other.base, other.height, other.size) == (None, 0, 0)
    other.close()
    with Store.open(tmp_path / "o.sqlite3", chain.committee) as again:
        assert (again.base, again.height) == (None, 0)


def test_a_schema_2_store_is_migrated_in_place_and_keeps_its_log(tmp_path: Path) -> None:
    chain = ChainBuilder(4)
    full, _ = _full_log(tmp_path, chain, 6)
    root = full.root()
    full.close()
    path = tmp_path / "full.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE base")
    conn.execute("UPDATE meta SET value=2 WHERE key='schema_version'")
    conn.commit()
    conn.close()
    # Read-only (export while stopped): read as it is, not migrated.
    with Store.open(path, read_only=True) as ro:
        assert (ro.height, ro.root(), ro.base) == (6, root, None)
    with Store.open(path, chain.committee, signing_key=chain.keys[0]) as s:
        assert (s.height, s.root(), s.base) == (6, root, None)
    conn = sqlite3.connect(path)
    version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert version == SCHEMA_VERSION == 3 and "base" in tables
