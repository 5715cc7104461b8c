"""SQLite schema of the per-member signed log. Bump SCHEMA_VERSION on any change; a store
with another version is refused (no silent migration of signed data), except the documented
step from version 2 to 3 (`MIGRATE_2_TO_3`: one new, empty table; nothing signed changes)."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 3
#: The older version a read-write open migrates (docs/decisions.md, schema 3).
MIGRATABLE_VERSION: Final = 2
#: Written into the SQLite header (PRAGMA application_id) so `file` and our open can tell a
#: coalitiond store from any other SQLite database. ASCII "cOaL".
APPLICATION_ID: Final = 0x634F614C

#: The base of a state-synced log (log/base.py, docs/formats.md §1): at most one row. Its
#: block is the one at `height`; the log holds blocks from `height + 1` and entries from
#: `log_size`; `frontier` is the CBOR array of the right-edge hashes of the tree of
#: `log_size` leaves (highest level first; also stored as `tree_nodes` rows); `note` is this
#: member's signed checkpoint for `height`.
BASE_DDL: Final = """CREATE TABLE base (
        height INTEGER PRIMARY KEY CHECK (height > 0),
        digest BLOB NOT NULL,
        body BLOB NOT NULL,
        log_size INTEGER NOT NULL CHECK (log_size >= 0),
        frontier BLOB NOT NULL,
        note TEXT NOT NULL
    ) WITHOUT ROWID"""

#: Schema 2 -> 3: the base table, empty (a schema-2 log starts at genesis).
MIGRATE_2_TO_3: Final = (BASE_DDL,)

DDL: Final = (
    # schema_version, committee (committee record, CBOR), member (checkpoint signer's key).
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID""",
    # height 0 is the genesis block derived from the committee (no certificate, no entries).
    """CREATE TABLE blocks (
        height INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        body BLOB NOT NULL,
        first_entry INTEGER NOT NULL,
        entry_count INTEGER NOT NULL
    )""",
    # kind: VoteKind (0 notarize, 1 finalize); body: Certificate.encode().
    """CREATE TABLE certificates (
        height INTEGER NOT NULL REFERENCES blocks(height),
        kind INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (height, kind)
    ) WITHOUT ROWID""",
    # Every notarize/finalize signature for the block this member holds.
    """CREATE TABLE block_votes (
        height INTEGER NOT NULL REFERENCES blocks(height),
        kind INTEGER NOT NULL,
        signer INTEGER NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (height, kind, signer)
    ) WITHOUT ROWID""",
    # body: canonical entry leaf bytes (records.entry_leaf).
    """CREATE TABLE entries (
        idx INTEGER PRIMARY KEY,
        height INTEGER NOT NULL REFERENCES blocks(height),
        body BLOB NOT NULL
    )""",
    # Perfect subtrees of the RFC 6962 tree: (level, idx) covers leaves
    # [idx·2^level, (idx+1)·2^level). Level 0 holds the leaf hashes.
    """CREATE TABLE tree_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE checkpoints (
        height INTEGER PRIMARY KEY REFERENCES blocks(height),
        size INTEGER NOT NULL,
        root BLOB NOT NULL,
        note TEXT NOT NULL
    )""",
    # The signer guard: what this member signed, recorded (and committed) before sending.
    # check = blake3(encode(["guard", epoch, view, kind, digest]))[:8]: guard rows are not
    # signed, so a flipped bit would otherwise silently un-guard a view.
    """CREATE TABLE signer_guard (
        epoch INTEGER NOT NULL,
        view INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        digest BLOB NOT NULL,
        check_ BLOB NOT NULL,
        PRIMARY KEY (epoch, view, kind)
    ) WITHOUT ROWID""",
    # The first verified statement seen per (member, epoch, view, kind), kind as in
    # signer_guard (3: a proposal), for a window of recent views: the consensus core reloads
    # it at start, so an equivocation whose halves straddle a restart is still caught.
    # check: as for signer_guard, over ["seen", member, epoch, view, kind, digest, signature].
    """CREATE TABLE seen_votes (
        member INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        view INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        digest BLOB NOT NULL,
        signature BLOB NOT NULL,
        check_ BLOB NOT NULL,
        PRIMARY KEY (member, epoch, view, kind)
    ) WITHOUT ROWID""",
    """CREATE TABLE evidence (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        member INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        view INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body BLOB NOT NULL
    )""",
    BASE_DDL,
)
