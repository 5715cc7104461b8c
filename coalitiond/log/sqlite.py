"""The synchronous store: one SQLite file per member (WAL, synchronous=FULL).

Why this module is long: `Store` owns the one SQLite connection and every transaction on it;
the single-writer rules below (state changes only after COMMIT, one failure stops the
writer) hold because every write path is in this one class. Splitting it by table would
spread those rules over several modules.

One connection, used by one thread at a time (the async wrapper in `aio.py` guarantees it).
Every public write is one transaction (`BEGIN IMMEDIATE` … `COMMIT`); in-memory state (head,
Merkle frontier) changes only after COMMIT returned, so a failed write leaves it describing
what is durable.

Failure policy:
* our refusals (signer conflict, out-of-order block) roll back and raise a LocalError; the
  store stays usable;
* any SQLite error while writing (I/O, fsync, disk full) stops the writer for good: the
  error and every later write raise StoreIOError. After a failed fsync the kernel may have
  dropped the dirty pages, so retrying could "succeed" on lost data (fsyncgate); the member
  restarts and recovers from what is durable.
* damage found in committed data raises StoreCorrupt and is never truncated away.

A state-synced log (`install_base`, log/base.py) starts at its base: reads below it raise
BelowBase (a StoreUsageError) saying where the log starts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from ..consensus.evidence import Evidence
from ..consensus.root_evidence import WRONG_ROOT_KIND, WrongRoot
from ..consensus.types import (
    Block,
    Certificate,
    MalformedMessage,
    Vote,
    VoteKind,
    genesis_block,
)
from ..primitives import merkle
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, RemoteError
from ..primitives.identity import digest as blake3_digest
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge, histogram
from .audit import AuditFailure, AuditSummary, LogAuditor
from .base import MAX_FRONTIER_HASHES, BadFrontier, LogBase, frontier_positions
from .checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from .errors import (
    GUARD_KIND_NAMES,
    CommitteeMismatch,
    SchemaMismatch,
    SignerConflict,
    StoreCorrupt,
    StoreIOError,
    StoreOpenError,
    StoreUsageError,
    guard_kind_name,
)
from .records import (
    FinalizedBlock,
    check_votes_match,
    committee_from_record,
    committee_record,
    entry_leaves,
    vote_for,
)
from .schema import APPLICATION_ID, DDL, MIGRATABLE_VERSION, MIGRATE_2_TO_3, SCHEMA_VERSION

log = get_logger(__name__)

STORE_FILENAME: Final = "log.sqlite3"
#: Blocks re-checked at every open (digest, chain, entries, leaf hashes). The full check is
#: `Store.audit()` / `coalitiond verify`; this bound keeps open O(1) in the log length.
OPEN_CHECK_BLOCKS: Final = 16
#: Newest signer-guard rows re-checked at open (the full table is checked by audit()).
GUARD_OPEN_CHECK_ROWS: Final = 4096
#: Blocks appended in one transaction at most (catch-up batches).
MAX_BLOCKS_PER_TRANSACTION: Final = 1024
#: Guard records, seen statements and evidence items in one event transaction at most.
MAX_EVENT_ITEMS: Final = 4096
#: First-seen statements written with one append at most (the shell sends fewer).
MAX_SEEN_PER_APPEND: Final = 4096
MAX_EVIDENCE_SIZE: Final = 64 * 1024
#: How long a second process (e.g. `export` while the daemon runs) waits for a lock.
BUSY_TIMEOUT_MS: Final = 5000

COMMIT_SECONDS = histogram(
    "store_commit_seconds", "Time of one store COMMIT (includes the WAL fsync)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
WRITE_FAILURES = counter("store_write_failures", "Store writes that failed and stopped the writer")
HEIGHT = gauge("store_height", "Height of the last finalised block in the local log")
ENTRIES = gauge("store_entries", "Entries in the local log (Merkle tree size)")

T = TypeVar("T")


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / STORE_FILENAME


@dataclass(frozen=True, slots=True)
class GuardRecord:
    """'This member signs `kind` for (epoch, view) with `digest`' (zero digest for nullify).

    `kind` is an integer kind of GUARD_KIND_NAMES: a VoteKind, or 3 for a proposal.
    """

    epoch: int
    view: int
    kind: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One piece of misbehaviour evidence: `body` is what the consensus core made, an encoded
    `Evidence` (an equivocation, docs/protocol.md §5) or `WrongRoot` (kind `wrong-root`,
    §7); the other fields are its columns. Deduplicated by the blake3 digest of the body."""

    member: int
    epoch: int
    view: int
    kind: str
    body: bytes

    @classmethod
    def of(cls, ev: Evidence | WrongRoot) -> EvidenceRecord:
        kind = WRONG_ROOT_KIND if isinstance(ev, WrongRoot) else ev.kind.value
        return cls(ev.member, ev.epoch, ev.view, kind, ev.encode())


@dataclass(frozen=True, slots=True)
class SeenRecord:
    """The first statement this member saw from `member` for (epoch, view, kind), with that
    member's signature: kind 0 notarize, 1 finalize, 2 nullify, 3 propose (the guard's
    kinds). Kept for a window of views so that an equivocation whose halves straddle a
    restart is still caught (docs/formats.md, seen statements)."""

    member: int
    epoch: int
    view: int
    kind: int
    digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class EventResult:
    evidence_added: int
    seen_added: int = 0


@dataclass(frozen=True, slots=True)
class BlockToAppend:
    """Input of append_blocks: a block, its certificate(s) and every vote held for it."""

    block: Block
    finalization: Certificate | None
    votes: Sequence[Vote] = ()
    notarization: Certificate | None = None


def _row_check(*fields: object) -> bytes:
    return blake3_digest(encode(list(fields)))[:8]


def _conflicting_guard_kind(kind: int) -> int | None:
    """Nullify and finalize exclude each other within one view (DESIGN §2.5)."""
    return {int(VoteKind.NULLIFY): int(VoteKind.FINALIZE),
            int(VoteKind.FINALIZE): int(VoteKind.NULLIFY)}.get(int(kind))


def _evidence_refusal(e: EvidenceRecord) -> str | None:
    """Why an evidence record is not one the store keeps: its body must decode as what the
    consensus core makes (`Evidence`, or `WrongRoot` for kind `wrong-root`) and agree with
    the record's columns (one format per kind, the core's)."""
    if len(e.body) > MAX_EVIDENCE_SIZE:
        return f"evidence of {len(e.body)} bytes exceeds {MAX_EVIDENCE_SIZE}"
    try:
        ev: Evidence | WrongRoot = (WrongRoot.decode(e.body) if e.kind == WRONG_ROOT_KIND
                                    else Evidence.decode(e.body))
    except (RemoteError, EncodingError) as exc:
        return f"evidence body is not consensus evidence: {exc}"
    if EvidenceRecord.of(ev) != e:
        return (f"evidence record (member {e.member}, epoch {e.epoch}, view {e.view}, "
                f"{e.kind}) differs from its body")
    return None


class _DbNodes:
    __slots__ = ("conn", "path")

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path

    def node(self, level: int, index: int) -> bytes:
        row = self.conn.execute("SELECT hash FROM tree_nodes WHERE level=? AND idx=?",
                                (level, index)).fetchone()
        if row is None:
            raise StoreCorrupt(self.path, "tree_nodes", f"node (level {level}, index {index}) "
                               f"is missing")
        h: bytes = row[0]
        return h


def open_read_only_uri(path: Path) -> tuple[str, bool]:
    """The SQLite URI that opens `path` read-only, and whether it is `immutable=1`.

    A WAL-mode store opened `mode=ro` needs its `-shm` file, which SQLite creates when it is
    missing, so a read-only data directory (a `:ro` volume, a snapshot mount) refuses a
    cleanly stopped store, whose `-wal` and `-shm` were removed at its last close. There,
    and only when no write-ahead log with content lies beside it, nothing else can be
    writing it, so it is opened `immutable=1` (no locks, no `-shm`). A store with a `-wal`
    is opened `mode=ro` as usual, so committed transactions still in the WAL are read.
    """
    uri = path.absolute().as_uri() + "?mode=ro"
    wal = path.with_name(path.name + "-wal")
    try:
        wal_has_data = wal.stat().st_size > 0
    except OSError:
        wal_has_data = False
    if not os.access(path.parent, os.W_OK) and not wal_has_data:
        return uri + "&immutable=1", True
    return uri, False


class Store:
    """The per-member signed log. Use `Store.open`; call from one thread at a time."""

    def __init__(self, conn: sqlite3.Connection, path: str, committee: CommitteeSpec,
                 member: bytes, signing_key: SigningKey | None, read_only: bool) -> None:
        self._conn = conn
        self.path = path
        self.committee = committee
        self.member = member
        self._key = signing_key
        self.read_only = read_only
        #: Opened with SQLite's `immutable=1`: a read-only data directory with no
        #: write-ahead log beside the store (see `open_read_only_uri`).
        self.immutable = False
        self._failed: str | None = None
        self._nodes = _DbNodes(conn, path)
        self.height = 0
        self.head_digest = b""
        self.frontier = merkle.Frontier()
        #: Where a state-synced log starts (log/base.py); None: at genesis.
        self.base: LogBase | None = None

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, path: Path | str, committee: CommitteeSpec | None = None, *,
             signing_key: SigningKey | None = None, read_only: bool = False,
             connection_factory: type[sqlite3.Connection] | None = None) -> Store:
        """Open (or, given a committee and a key, create) the store at `path`.

        Refuses with an OperatorError: a schema version mismatch, another committee, another
        member's key, damage found by quick_check or by the tail check. Creating needs the
        committee and the member's signing key (it signs checkpoints).
        `connection_factory` exists for tests that inject I/O failures.
        """
        p = Path(path)
        spath = str(p)
        exists = p.exists()
        if not exists and (read_only or committee is None or signing_key is None):
            raise StoreOpenError(f"{spath}: no store here (create it by running the member "
                                 f"with its configuration)")
        if not exists and not p.parent.is_dir():
            raise StoreOpenError(f"{spath}: directory {p.parent} does not exist")
        kwargs: dict[str, Any] = {"isolation_level": None, "check_same_thread": False}
        if connection_factory is not None:
            kwargs["factory"] = connection_factory
        immutable = False
        try:
            if read_only:
                uri, immutable = open_read_only_uri(p)
                conn = sqlite3.connect(uri, uri=True, **kwargs)
            else:
                conn = sqlite3.connect(spath, **kwargs)
        except sqlite3.Error as e:
            raise StoreOpenError(f"{spath}: cannot open the store: {e}") from None
        try:
            store = cls._setup(conn, spath, committee, signing_key, read_only, exists)
            store.immutable = immutable
        except sqlite3.OperationalError as e:
            # SQLITE_CANTOPEN and friends: the file or its -wal/-shm could not be opened
            # (permissions, a read-only directory). Not damage: nothing was read yet.
            conn.close()
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_CANTOPEN:
                raise StoreCorrupt(spath, "sqlite", f"{e}") from None
            hint = (" (its directory is read-only and a write-ahead log is beside it: copy "
                    "the data directory somewhere writable, or export while the member runs)"
                    if read_only else "")
            raise StoreOpenError(f"{spath}: cannot open the store: {e}{hint}") from None
        except sqlite3.DatabaseError as e:
            # SQLite itself could not read committed pages: damage, reported, never repaired.
            conn.close()
            raise StoreCorrupt(spath, "sqlite", f"{e}") from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _setup(cls, conn: sqlite3.Connection, path: str, committee: CommitteeSpec | None,
               signing_key: SigningKey | None, read_only: bool, exists: bool) -> Store:
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not read_only:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreOpenError(f"{path}: cannot switch the store to WAL mode "
                                         f"(got {mode}); is it on a network filesystem?")
                # FULL: the WAL is fsynced at every COMMIT, so an acknowledged write survives
                # power loss, not only a process crash (NORMAL would not).
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CANTOPEN:
                raise  # could not open, not damage (reported by `open`)
            raise StoreCorrupt(path, "sqlite header", f"not a readable SQLite database ({e})"
                               ) from None
        except sqlite3.DatabaseError as e:
            raise StoreCorrupt(path, "sqlite header", f"not a readable SQLite database ({e})"
                               ) from None
        if not tables and app_id == 0:
            if read_only or committee is None or signing_key is None:
                raise StoreOpenError(f"{path}: empty store file and no committee to create it")
            cls._create(conn, path, committee, signing_key)
        elif app_id != APPLICATION_ID:
            raise StoreOpenError(f"{path}: not a coalitiond store (SQLite application_id "
                                 f"{app_id:#x})")
        cls._quick_check(conn, path)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema_version")
        if version == MIGRATABLE_VERSION and not read_only:
            cls._migrate(conn, path)
            version = SCHEMA_VERSION
        # A read-only open (export, verify while the daemon is stopped) reads a schema-2
        # store as it is: it has no base table, so its log starts at genesis.
        if version != SCHEMA_VERSION and not (read_only and version == MIGRATABLE_VERSION):
            raise SchemaMismatch(
                f"{path}: store schema version {version}, this coalitiond reads version "
                f"{SCHEMA_VERSION}; use a matching coalitiond or export and rebuild the store")
        try:
            stored = committee_from_record(decode(meta["committee"]))
            member = meta["member"]
        except (KeyError, EncodingError, MalformedMessage) as e:
            raise StoreCorrupt(path, "meta", f"committee record unreadable ({e})") from None
        if committee is not None and committee != stored:
            raise CommitteeMismatch(_committee_difference(path, stored, committee))
        if signing_key is not None and signing_key.public != member:
            raise CommitteeMismatch(
                f"{path}: this store belongs to member {member.hex()[:16]}, the identity key "
                f"is {signing_key.public.hex()[:16]}; check [node] key path and data dir")
        store = cls(conn, path, stored, member, signing_key, read_only)
        store.base = store._load_base(version == SCHEMA_VERSION)
        store._load_and_check_tail()
        return store

    @staticmethod
    def _migrate(conn: sqlite3.Connection, path: str) -> None:
        """Schema 2 -> 3 in one transaction: add the (empty) base table. Nothing signed
        changes; a crash leaves version 2 or version 3, never a mix."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for stmt in MIGRATE_2_TO_3:
                conn.execute(stmt)
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                         (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreIOError(f"{path}: cannot migrate the store from schema "
                               f"{MIGRATABLE_VERSION} to {SCHEMA_VERSION}: {e}") from None
        log.info("store.migrated", path=path, schema_from=MIGRATABLE_VERSION,
                 schema_to=SCHEMA_VERSION)

    @staticmethod
    def _create(conn: sqlite3.Connection, path: str, committee: CommitteeSpec,
                key: SigningKey) -> None:
        if committee.index_of(key.public) is None:
            raise CommitteeMismatch(f"{path}: identity {key.public.hex()[:16]} is not a member "
                                    f"of committee {committee.committee_id.hex()[:16]}")
        genesis = genesis_block(committee)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for stmt in DDL:
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                ("schema_version", SCHEMA_VERSION),
                ("committee", encode(committee_record(committee))),
                ("member", key.public),
            ])
            conn.execute("INSERT INTO blocks VALUES (0, ?, ?, 0, 0)",
                         (genesis.digest, genesis.encode()))
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreIOError(f"{path}: cannot create the store: {e}") from None
        log.info("store.created", path=path, committee=committee.committee_id.hex()[:16])

    @staticmethod
    def _quick_check(conn: sqlite3.Connection, path: str) -> None:
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as e:
            raise StoreCorrupt(path, "sqlite", f"quick_check failed: {e}") from None
        if rows != ["ok"]:
            raise StoreCorrupt(path, "sqlite", "quick_check: " + "; ".join(map(str, rows[:5])))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ open-time checks

    def _corrupt(self, table: str, problem: str, height: int | None = None) -> StoreCorrupt:
        return StoreCorrupt(self.path, table, problem, height=height)

    def _decode_block(self, height: int, body: bytes, digest: bytes) -> Block:
        try:
            b = Block.decode(body)
        except (EncodingError, MalformedMessage) as e:
            raise self._corrupt("blocks", f"block does not decode ({e})", height) from None
        if b.height != height:
            raise self._corrupt("blocks", f"row holds a block of height {b.height}", height)
        if b.digest != digest:
            raise self._corrupt("blocks", "stored digest does not match the block bytes",
                                height)
        return b

    def _load_base(self, has_table: bool) -> LogBase | None:
        """The base row, checked (block decodes, digest, frontier shape, signed note, the
        frontier's nodes in tree_nodes); None for a log that starts at genesis."""
        if not has_table:
            return None
        rows = self._conn.execute("SELECT height, digest, body, log_size, frontier, note "
                                  "FROM base").fetchall()
        if not rows:
            return None
        if len(rows) > 1:
            raise self._corrupt("base", f"{len(rows)} rows, at most one is allowed")
        height, digest, body, log_size, frontier_bytes, note = rows[0]
        block = self._decode_block(height, body, digest)
        try:
            hashes = decode(frontier_bytes)
            if not isinstance(hashes, list) or len(hashes) > MAX_FRONTIER_HASHES:
                raise BadFrontier("not an array of at most 64 hashes")
            base = LogBase(block, int(log_size), tuple(hashes), str(note))
            tree = base.tree()
            cp = verify_checkpoint(base.note, self.member)
        except (EncodingError, BadFrontier, CheckpointError) as e:
            raise self._corrupt("base", f"{e}", height) from None
        if (cp.size, cp.root, cp.height, cp.block_digest) != (log_size, tree.root(), height,
                                                               block.digest):
            raise self._corrupt("base", "the base checkpoint differs from the base row",
                                height)
        for (level, idx), (_, h) in zip(frontier_positions(tree.size), tree.stack,
                                        strict=True):
            if self._nodes.node(level, idx) != h:
                raise self._corrupt("tree_nodes", f"base frontier node (level {level}, "
                                    f"index {idx}) differs from the base row", height)
        return base

    @property
    def first_height(self) -> int:
        """The lowest height whose block record (with entries) this log holds."""
        return 1 if self.base is None else self.base.height + 1

    @property
    def first_entry(self) -> int:
        """The lowest entry index this log holds."""
        return 0 if self.base is None else self.base.log_size

    def _check_not_below(self, height: int | None = None, index: int | None = None,
                         size: int | None = None) -> None:
        base = self.base
        if base is None:
            return
        if height is not None and 0 < height < base.height:
            raise base.below(f"height {height}")
        if index is not None and index < base.log_size:
            raise base.below(f"entry {index}")
        if size is not None and 0 < size < base.log_size:
            raise base.below(f"tree size {size}")

    def _load_and_check_tail(self) -> None:
        """Cheap consistency check at open: the last OPEN_CHECK_BLOCKS blocks (digests, hash
        chain, entries, leaf hashes), genesis, the Merkle root against the last checkpoint;
        for a state-synced log, that it holds nothing below its base."""
        c = self._conn
        row = c.execute("SELECT MAX(height) FROM blocks").fetchone()
        if row is None or row[0] is None:
            raise self._corrupt("blocks", "genesis block is missing")
        head = int(row[0])
        g = c.execute("SELECT body FROM blocks WHERE height=0").fetchone()
        if g is None or g[0] != genesis_block(self.committee).encode():
            raise self._corrupt("blocks", "genesis block does not match the committee", 0)
        base = self.base
        prev: Block | None = None
        prev_end: int | None = None
        if base is None:
            rows = c.execute(
                "SELECT height, digest, body, first_entry, entry_count FROM blocks "
                "WHERE height > ? ORDER BY height", (head - OPEN_CHECK_BLOCKS,)).fetchall()
            if len(rows) != min(head + 1, OPEN_CHECK_BLOCKS) or rows[-1][0] != head:
                raise self._corrupt("blocks", "heights are not contiguous", head)
        else:
            below = c.execute("SELECT COUNT(*) FROM blocks WHERE height BETWEEN 1 AND ?",
                              (base.height,)).fetchone()[0]
            low = c.execute("SELECT MIN(idx) FROM entries").fetchone()[0]
            if below or (low is not None and low < base.log_size):
                raise self._corrupt("blocks", f"blocks or entries below the base at height "
                                    f"{base.height}", base.height)
            head = max(head, base.height)
            start = max(head - OPEN_CHECK_BLOCKS, base.height)
            rows = c.execute(
                "SELECT height, digest, body, first_entry, entry_count FROM blocks "
                "WHERE height > ? ORDER BY height", (start,)).fetchall()
            if len(rows) != head - start or (rows and rows[-1][0] != head):
                raise self._corrupt("blocks", "heights are not contiguous", head)
            if start == base.height:
                prev, prev_end = base.block, base.log_size
        for height, digest, body, first, count in rows:
            b = self._decode_block(height, body, digest)
            if prev is not None and b.parent != prev.digest:
                raise self._corrupt("blocks", "parent is not the previous block's digest",
                                    height)
            if prev_end is not None and first != prev_end:
                raise self._corrupt("blocks", "first entry index does not follow on", height)
            if count != len(b.commands):
                raise self._corrupt("blocks", "entry count differs from commands", height)
            leaves = entry_leaves(b)
            # By the primary key: entries has no index on height (a scan of the whole
            # table per block made open O(log length)).
            stored = c.execute("SELECT idx, body FROM entries WHERE idx >= ? AND idx < ? AND "
                               "height=? ORDER BY idx", (first, first + count, height)
                               ).fetchall()
            if [r[0] for r in stored] != list(range(first, first + count)):
                raise self._corrupt("entries", "entries missing or misnumbered", height)
            for (idx, ebody), leaf in zip(stored, leaves, strict=True):
                if ebody != leaf:
                    raise self._corrupt("entries", f"entry {idx} does not match its command",
                                        height)
                if self._nodes.node(0, idx) != merkle.leaf_hash(leaf):
                    raise self._corrupt("tree_nodes", f"leaf hash of entry {idx} is wrong",
                                        height)
            # Only the head must carry its own finalize certificate: earlier blocks may be
            # final through a descendant's (append_blocks).
            if height > 0 and height == head and c.execute(
                    "SELECT 1 FROM certificates WHERE height=? AND kind=?",
                    (height, int(VoteKind.FINALIZE))).fetchone() is None:
                raise self._corrupt("certificates", "the head block has no finalize certificate",
                                    height)
            prev, prev_end = b, first + count
        assert prev is not None and prev_end is not None
        last = c.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
        if (last if last is not None else self.first_entry - 1) != prev_end - 1:
            raise self._corrupt("entries", f"entries beyond the last block (max index {last})")
        self.frontier = merkle.Frontier.load(self._nodes, prev_end)
        if base is not None and head == base.height:
            pass  # the base's own checkpoint was checked with the base row
        elif head > 0:
            cp_row = c.execute("SELECT size, root, note FROM checkpoints WHERE height=?",
                               (head,)).fetchone()
            if cp_row is None:
                raise self._corrupt("checkpoints", "last block has no checkpoint", head)
            try:
                cp = verify_checkpoint(cp_row[2], self.member)
            except CheckpointError as e:
                raise self._corrupt("checkpoints", f"checkpoint note: {e}", head) from None
            root = self.frontier.root()
            if (cp.size, cp.root, cp_row[0], cp_row[1]) != (prev_end, root, prev_end, root):
                raise self._corrupt("checkpoints", "checkpoint size/root disagree with the "
                                    "Merkle tree of the entries", head)
            if cp.block_digest != prev.digest or cp.height != head:
                raise self._corrupt("checkpoints", "checkpoint names another block", head)
        self._check_guard_rows(GUARD_OPEN_CHECK_ROWS)
        self.height, self.head_digest = head, prev.digest
        HEIGHT.set(head)
        ENTRIES.set(prev_end)

    def _check_guard_rows(self, limit: int | None) -> None:
        sql = "SELECT epoch, view, kind, digest, check_ FROM signer_guard ORDER BY epoch DESC, " \
              "view DESC"
        rows = self._conn.execute(sql + ("" if limit is None else f" LIMIT {int(limit)}"))
        for epoch, view, kind, digest, check in rows:
            if check != _row_check("guard", epoch, view, kind, digest):
                raise self._corrupt("signer_guard", f"row (epoch {epoch}, view {view}, kind "
                                    f"{kind}) fails its checksum")

    # ------------------------------------------------------------------ writing

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction. See the module docstring for the policy."""
        if self.read_only:
            raise StoreUsageError(f"{self.path}: store opened read-only")
        if self._failed is not None:
            raise StoreIOError(self._failed)
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._stop(what, e) from None
        try:
            result = fn(c)
        except sqlite3.IntegrityError as e:
            # A constraint caught what our own checks should have: our bug, not the disk's.
            self._rollback(what)
            raise StoreUsageError(f"{what}: refused by a constraint ({e})") from None
        except sqlite3.Error as e:
            raise self._stop(what, e) from None
        except BaseException:
            self._rollback(what)
            raise
        started = time.perf_counter()
        try:
            c.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._stop(what, e) from None
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        return result

    def _rollback(self, what: str) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise self._stop(what, e) from None

    def _stop(self, what: str, e: sqlite3.Error) -> StoreIOError:
        """Stop the writer for good (fsyncgate: never retry a failed write or fsync)."""
        WRITE_FAILURES.inc()
        self._failed = (f"{self.path}: store write failed ({what}): {e}; the writer has "
                        f"stopped — fix the disk and restart coalitiond (acknowledged "
                        f"writes are safe)")
        # No transaction left, or the connection is gone: nothing more to undo.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        log.error("store.write_failed", path=self.path, what=what, error=str(e))
        return StoreIOError(self._failed)

    @property
    def failed(self) -> str | None:
        """Why the writer stopped, or None."""
        return self._failed

    def append_block(self, block: Block, finalization: Certificate, votes: Sequence[Vote] = (),
                     *, notarization: Certificate | None = None,
                     verify_signatures: bool = True) -> Checkpoint:
        """Durably append one finalised block; return its checkpoint. One transaction."""
        return self.append_blocks([BlockToAppend(block, finalization, votes, notarization)],
                                  verify_signatures=verify_signatures)[-1]

    def append_blocks(self, items: Sequence[BlockToAppend], *,
                      verify_signatures: bool = True,
                      guard: Sequence[GuardRecord] = (),
                      late_votes: Sequence[tuple[int, Vote]] = (),
                      seen: Sequence[SeenRecord] = (),
                      seen_floor: int | None = None) -> list[Checkpoint]:
        """Append consecutive blocks atomically (one transaction): block, certificates, every
        vote held, entries, Merkle nodes and a signed checkpoint per block.

        The last block must carry a finalize certificate; earlier ones may carry only a
        notarization, or no certificate at all: Simplex finalises a block's ancestors with
        it, and a member that missed an ancestor's votes (it was restarting) still learns
        that the ancestor is final through the hash chain. With
        `verify_signatures` the certificates and votes are checked against the committee
        (set it False only when the caller has verified them already).

        `guard`: signer-guard records of the same consensus event, committed in the same
        transaction (one fsync for the event instead of two); a conflict refuses it all.
        `late_votes`: votes for blocks stored earlier, as `record_event` takes them;
        `seen`, `seen_floor`: first-seen statements, likewise.
        """
        if self._key is None:
            raise StoreUsageError("append: store opened without the member's signing key")
        if not items:
            return []
        if len(items) > MAX_BLOCKS_PER_TRANSACTION:
            raise StoreUsageError(f"append: at most {MAX_BLOCKS_PER_TRANSACTION} blocks per "
                                  f"transaction, got {len(items)}")
        if items[-1].finalization is None:
            raise StoreUsageError("append: the last block needs a finalize certificate")
        for it in items:
            self._check_item(it, verify_signatures)
        if len(seen) > MAX_SEEN_PER_APPEND:
            raise StoreUsageError(f"append: more than {MAX_SEEN_PER_APPEND} seen statements")
        for r in seen:
            self._check_seen(r)
        frontier = merkle.Frontier(self.frontier.size, self.frontier.stack)
        height, head = self.height, self.head_digest

        def write(c: sqlite3.Connection) -> list[Checkpoint]:
            nonlocal height, head
            for g in guard:
                self._guard_one(c, g)
            self._add_late_votes(c, late_votes)
            self._add_seen(c, seen, seen_floor)
            out, height, head = self._write_blocks(c, items, frontier, height, head)
            return out

        checkpoints = self._write(f"append height {items[0].block.height}", write)
        self.frontier, self.height, self.head_digest = frontier, height, head
        HEIGHT.set(height)
        ENTRIES.set(frontier.size)
        return checkpoints

    def install_base(self, base_block: Block, log_size: int, frontier: Sequence[bytes],
                     items: Sequence[BlockToAppend]) -> list[Checkpoint]:
        """Make this empty log a state-synced one, in one transaction: the base (the block
        at H, the tree's size and right edge after it, our signed checkpoint for H) and the
        blocks `items` from H + 1 on (as `append_blocks`, certificates verified). The caller
        has verified the base against a certified block (node/state_sync.py); this checks
        that the log is empty, that the frontier has the shape of its size, and links."""
        if self._key is None:
            raise StoreUsageError("install base: store opened without the member's signing key")
        if self.base is not None or self.height != 0 or self.size != 0:
            raise StoreUsageError(f"install base: the log is not empty (height {self.height}, "
                                  f"{self.size} entries)")
        if base_block.height < 1 or base_block.epoch != self.committee.epoch:
            raise StoreUsageError(f"install base: block {base_block.height} of epoch "
                                  f"{base_block.epoch} cannot be a base")
        if not items or len(items) > MAX_BLOCKS_PER_TRANSACTION:
            raise StoreUsageError(f"install base: 1..{MAX_BLOCKS_PER_TRANSACTION} blocks "
                                  f"after the base, got {len(items)}")
        if items[-1].finalization is None:
            raise StoreUsageError("install base: the last block needs a finalize certificate")
        for it in items:
            self._check_item(it, True)
        try:
            tree = LogBase(base_block, log_size, tuple(frontier), "").tree()
        except BadFrontier as e:
            raise StoreUsageError(f"install base: {e}") from None
        note = Checkpoint(log_size, tree.root(), self.committee.committee_id, base_block.epoch,
                          base_block.height, base_block.digest).sign(self._key)
        base = LogBase(base_block, log_size, tuple(frontier), note)
        work = merkle.Frontier(tree.size, tree.stack)
        height, head = base_block.height, base_block.digest

        def write(c: sqlite3.Connection) -> list[Checkpoint]:
            nonlocal height, head
            c.execute("INSERT INTO base VALUES (?, ?, ?, ?, ?, ?)",
                      (base_block.height, base_block.digest, base_block.encode(), log_size,
                       encode(list(frontier)), note))
            c.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?)",
                          [(level, idx, h) for (level, idx), (_, h) in zip(
                              frontier_positions(log_size), tree.stack, strict=True)])
            out, height, head = self._write_blocks(c, items, work, height, head)
            return out

        checkpoints = self._write(f"install base at height {base_block.height}", write)
        self.base = base
        self.frontier, self.height, self.head_digest = work, height, head
        HEIGHT.set(height)
        ENTRIES.set(work.size)
        log.info("store.base_installed", path=self.path, height=base_block.height,
                 log_size=log_size, head=height)
        return checkpoints

    def _write_blocks(self, c: sqlite3.Connection, items: Sequence[BlockToAppend],
                      frontier: merkle.Frontier, height: int, head: bytes
                      ) -> tuple[list[Checkpoint], int, bytes]:
        """Insert the rows of consecutive blocks after (height, head), `frontier` the tree so
        far (advanced in place); returns the checkpoints and the new (height, head)."""
        key = self._key
        assert key is not None
        out = []
        for it in items:
            b = it.block
            if b.height != height + 1 or b.parent != head:
                raise StoreUsageError(
                    f"append: block {b.height} (parent {b.parent.hex()[:16]}) does not "
                    f"extend height {height} ({head.hex()[:16]})")
            first = frontier.size
            leaves = entry_leaves(b)
            c.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
                      (b.height, b.digest, b.encode(), first, len(leaves)))
            certs = [x for x in (it.finalization, it.notarization) if x is not None]
            c.executemany("INSERT INTO certificates VALUES (?, ?, ?)",
                          [(b.height, int(x.kind), x.encode()) for x in certs])
            sigs = {(int(v.kind), v.signer): v.signature for v in it.votes}
            for x in certs:
                for signer, sig in x.signatures:
                    sigs.setdefault((int(x.kind), signer), sig)
            c.executemany("INSERT INTO block_votes VALUES (?, ?, ?, ?)",
                          [(b.height, k, s, sig) for (k, s), sig in sorted(sigs.items())])
            c.executemany("INSERT INTO entries VALUES (?, ?, ?)",
                          [(first + i, b.height, leaf) for i, leaf in enumerate(leaves)])
            nodes: list[tuple[int, int, bytes]] = []
            for leaf in leaves:
                nodes.extend(frontier.append(merkle.leaf_hash(leaf)))
            c.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?)", nodes)
            cp = Checkpoint(frontier.size, frontier.root(), self.committee.committee_id,
                            b.epoch, b.height, b.digest)
            c.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
                      (b.height, cp.size, cp.root, cp.sign(key)))
            out.append(cp)
            height, head = b.height, b.digest
        return out, height, head

    def _check_item(self, it: BlockToAppend, verify_signatures: bool) -> None:
        b = it.block
        if b.epoch != self.committee.epoch:
            raise StoreUsageError(f"append: block {b.height} has epoch {b.epoch}, committee "
                                  f"epoch is {self.committee.epoch}")
        check_votes_match(b, it.votes)
        for cert, kind in ((it.finalization, VoteKind.FINALIZE),
                           (it.notarization, VoteKind.NOTARIZE)):
            if cert is None:
                continue
            if (cert.kind, cert.epoch, cert.view, cert.digest) != (kind, b.epoch, b.view,
                                                                    b.digest):
                raise StoreUsageError(f"append: height {b.height}: the {kind.name.lower()} "
                                      f"certificate is not for this block")
            if verify_signatures:
                cert.verify(self.committee)
            elif len(cert.signers()) < self.committee.quorum:
                raise StoreUsageError(f"append: height {b.height}: certificate below quorum")
        if verify_signatures:
            for v in it.votes:
                if not v.verify(self.committee):
                    raise StoreUsageError(f"append: height {b.height}: vote of member "
                                          f"{v.signer} does not verify")

    # --- signer guard, seen votes, evidence

    def guard(self, epoch: int, view: int, kind: int, digest: bytes) -> None:
        """Durably record 'I sign kind for (epoch, view) with digest' — call BEFORE sending.

        Idempotent for the same digest; raises SignerConflict for another digest of the same
        kind, and for nullify after finalize (or finalize after nullify) in one view.
        """
        self.record_event(guard=[GuardRecord(epoch, view, kind, digest)])

    def record_event(self, *, guard: Sequence[GuardRecord] = (),
                     seen: Sequence[SeenRecord] = (), seen_floor: int | None = None,
                     evidence: Sequence[EvidenceRecord] = (),
                     late_votes: Sequence[tuple[int, Vote]] = ()) -> EventResult:
        """One transaction: signer-guard records, first-seen statements, evidence, and votes
        for blocks already stored (`late_votes`, see `_add_late_votes`).

        All or nothing: a guard conflict refuses the whole event. A seen statement is kept
        only if none is stored for its (member, epoch, view, kind): the first stays (the
        consensus core compares them, and makes the evidence); `seen_floor` drops the
        stored ones of views below it (the window the core can still use). Evidence bodies
        must be encoded consensus `Evidence`. Signatures must have been verified by the
        caller.
        """
        if len(guard) + len(seen) + len(evidence) + len(late_votes) > MAX_EVENT_ITEMS:
            raise StoreUsageError(f"event: more than {MAX_EVENT_ITEMS} items")
        for e in evidence:
            refusal = _evidence_refusal(e)
            if refusal is not None:
                raise StoreUsageError(refusal)
        for r in seen:
            self._check_seen(r)

        def write(c: sqlite3.Connection) -> EventResult:
            for g in guard:
                self._guard_one(c, g)
            seen_added = self._add_seen(c, seen, seen_floor)
            added = 0
            for e in evidence:
                cur = c.execute("INSERT OR IGNORE INTO evidence(digest, member, epoch, view, "
                                "kind, body) VALUES (?, ?, ?, ?, ?, ?)",
                                (blake3_digest(e.body), e.member, e.epoch, e.view, e.kind,
                                 e.body))
                added += cur.rowcount
            self._add_late_votes(c, late_votes)
            return EventResult(added, seen_added)

        return self._write("event", write)

    def _add_late_votes(self, c: sqlite3.Connection,
                        late_votes: Sequence[tuple[int, Vote]]) -> None:
        """Add (height, vote) pairs to blocks already stored: the votes that arrived after
        the block was appended (the slowest members' finalise votes), so the log keeps every
        signature the member collected. A vote already held is ignored; one that is not a
        notarise/finalise vote for exactly the stored block is refused (a caller bug).
        Signatures must have been verified by the caller."""
        if len(late_votes) > MAX_EVENT_ITEMS:
            raise StoreUsageError(f"late votes: more than {MAX_EVENT_ITEMS}")
        blocks: dict[int, Block] = {}
        for height, v in late_votes:
            b = blocks.get(height)
            if b is None:
                row = c.execute("SELECT body, digest FROM blocks WHERE height=?",
                                (height,)).fetchone()
                if row is None:
                    raise StoreUsageError(f"late vote for height {height}: no such block")
                b = blocks[height] = self._decode_block(height, row[0], row[1])
            check_votes_match(b, [v])
            c.execute("INSERT OR IGNORE INTO block_votes VALUES (?, ?, ?, ?)",
                      (height, int(v.kind), v.signer, v.signature))

    def _guard_row(self, c: sqlite3.Connection, epoch: int, view: int, kind: int
                   ) -> bytes | None:
        row = c.execute("SELECT digest, check_ FROM signer_guard WHERE epoch=? AND view=? AND "
                        "kind=?", (epoch, view, int(kind))).fetchone()
        if row is None:
            return None
        if row[1] != _row_check("guard", epoch, view, int(kind), row[0]):
            raise self._corrupt("signer_guard", f"row (epoch {epoch}, view {view}, "
                                f"{guard_kind_name(kind)}) fails its checksum")
        return bytes(row[0])

    def _guard_one(self, c: sqlite3.Connection, g: GuardRecord) -> None:
        kind = int(g.kind)
        if not 0 <= kind < len(GUARD_KIND_NAMES) or len(g.digest) != 32:
            raise StoreUsageError(f"signer guard: kind {kind} / digest of {len(g.digest)} "
                                  f"bytes is not a guard record")
        recorded = self._guard_row(c, g.epoch, g.view, kind)
        if recorded is not None:
            if recorded != g.digest:
                raise SignerConflict(g.epoch, g.view, kind, g.digest, kind, recorded)
            return
        other = _conflicting_guard_kind(kind)
        if other is not None:
            recorded = self._guard_row(c, g.epoch, g.view, other)
            if recorded is not None:
                raise SignerConflict(g.epoch, g.view, kind, g.digest, other, recorded)
        c.execute("INSERT INTO signer_guard VALUES (?, ?, ?, ?, ?)",
                  (g.epoch, g.view, kind, g.digest,
                   _row_check("guard", g.epoch, g.view, kind, g.digest)))

    @staticmethod
    def _check_seen(r: SeenRecord) -> None:
        if not 0 <= int(r.kind) < len(GUARD_KIND_NAMES) or len(r.digest) != 32 or \
                len(r.signature) != 64 or r.view < 1 or r.member < 0:
            raise StoreUsageError(f"seen statement: member {r.member} view {r.view} kind "
                                  f"{int(r.kind)} / digest of {len(r.digest)} bytes / "
                                  f"signature of {len(r.signature)} bytes is not one")

    def _add_seen(self, c: sqlite3.Connection, seen: Sequence[SeenRecord],
                  floor: int | None) -> int:
        """Keep the first statement per (member, epoch, view, kind); prune below `floor`."""
        if floor is not None:
            c.execute("DELETE FROM seen_votes WHERE epoch=? AND view<?",
                      (self.committee.epoch, floor))
        added = 0
        for r in seen:
            if floor is not None and r.view < floor:
                continue
            kind = int(r.kind)
            cur = c.execute("INSERT OR IGNORE INTO seen_votes VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (r.member, r.epoch, r.view, kind, r.digest, r.signature,
                             _row_check("seen", r.member, r.epoch, r.view, kind, r.digest,
                                        r.signature)))
            added += cur.rowcount
        return added

    def _seen_record(self, row: tuple[Any, ...]) -> SeenRecord:
        member, epoch, view, kind, digest, signature, check = row
        if check != _row_check("seen", member, epoch, view, kind, digest, signature):
            raise self._corrupt("seen_votes", f"row (member {member}, epoch {epoch}, view "
                                f"{view}, {guard_kind_name(kind)}) fails its checksum")
        return SeenRecord(member, epoch, view, kind, bytes(digest), bytes(signature))

    # ------------------------------------------------------------------ reading

    def signed(self, epoch: int, view: int, kind: int) -> bytes | None:
        """The digest this member signed for (epoch, view, kind), if any."""
        return self._guard_row(self._conn, epoch, view, kind)

    def highest_signed_view(self, epoch: int) -> int | None:
        """Highest view this member recorded any signature for in `epoch` (amnesia check:
        a member whose guard is lost abstains until it sees a strictly higher view)."""
        row = self._conn.execute("SELECT view, kind FROM signer_guard WHERE epoch=? "
                                 "ORDER BY view DESC LIMIT 1", (epoch,)).fetchone()
        if row is None:
            return None
        self._guard_row(self._conn, epoch, row[0], row[1])  # checksum
        return int(row[0])

    def guard_records(self, epoch: int, since_view: int = 0
                      ) -> list[tuple[int, int, int, bytes]]:
        """Every signer-guard record of `epoch` from view `since_view` on, as (epoch, view,
        kind, digest), view order (what the consensus core reloads after a restart).
        Checksums are verified."""
        out = []
        for view, kind, digest, check in self._conn.execute(
                "SELECT view, kind, digest, check_ FROM signer_guard WHERE epoch=? AND "
                "view >= ? ORDER BY view, kind", (epoch, since_view)):
            if check != _row_check("guard", epoch, view, kind, digest):
                raise self._corrupt("signer_guard", f"row (epoch {epoch}, view {view}, "
                                    f"{guard_kind_name(kind)}) fails its checksum")
            out.append((epoch, view, kind, bytes(digest)))
        return out

    def first_seen(self, member: int, epoch: int, view: int, kind: int) -> SeenRecord | None:
        row = self._conn.execute(
            "SELECT member, epoch, view, kind, digest, signature, check_ FROM seen_votes "
            "WHERE member=? AND epoch=? AND view=? AND kind=?",
            (member, epoch, view, int(kind))).fetchone()
        return None if row is None else self._seen_record(row)

    def seen_statements(self, epoch: int, from_view: int = 0) -> list[SeenRecord]:
        """The first-seen statements of `epoch` from `from_view` on, in (view, member, kind)
        order (what the consensus core reloads after a restart). Checksums are verified."""
        return [self._seen_record(row) for row in self._conn.execute(
            "SELECT member, epoch, view, kind, digest, signature, check_ FROM seen_votes "
            "WHERE epoch=? AND view>=? ORDER BY view, member, kind", (epoch, from_view))]

    def evidence(self, start: int = 0, limit: int | None = None) -> list[EvidenceRecord]:
        """Evidence records in the order found; `start`/`limit` page through them."""
        return [EvidenceRecord(m, e, v, k, b) for m, e, v, k, b in self._conn.execute(
            "SELECT member, epoch, view, kind, body FROM evidence ORDER BY id LIMIT ? OFFSET ?",
            (-1 if limit is None else limit, start))]

    def evidence_count(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM evidence").fetchone()
        return int(row[0])

    @property
    def size(self) -> int:
        """Entries in the log (the Merkle tree size)."""
        return self.frontier.size

    def root(self, size: int | None = None) -> bytes:
        if size is None:
            return self.frontier.root()
        self._check_size(size)
        self._check_not_below(size=size)
        return merkle.root(self._nodes, size)

    def log_at(self, height: int) -> tuple[int, bytes]:
        """The log's (size, root) after the block at `height`, as its checkpoint states it."""
        if height == 0:
            return 0, merkle.EMPTY_ROOT
        self._check_not_below(height=height)
        if self.base is not None and height == self.base.height:
            return self.base.log_size, self.base.root()
        row = self._conn.execute("SELECT size, root FROM checkpoints WHERE height=?",
                                 (height,)).fetchone()
        if row is None:
            raise StoreUsageError(f"no checkpoint at height {height} (head is {self.height})")
        return int(row[0]), bytes(row[1])

    def frontier_hashes(self, size: int) -> list[bytes]:
        """The right edge of the tree of `size` leaves (one hash per set bit of `size`,
        highest level first): what a state-syncing member needs of the log at that size."""
        self._check_size(size)
        self._check_not_below(size=size)
        return [h for _, h in merkle.Frontier.load(self._nodes, size).stack]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.frontier.size:
            raise StoreUsageError(f"tree size {size} outside 0..{self.frontier.size}")

    def entry(self, index: int) -> bytes:
        self._check_not_below(index=index)
        row = self._conn.execute("SELECT body FROM entries WHERE idx=?", (index,)).fetchone()
        if row is None:
            raise StoreUsageError(f"no entry {index} (log has {self.size})")
        return bytes(row[0])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        self._check_size(size)
        self._check_not_below(index=index)
        return merkle.inclusion_path(self._nodes, index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        self._check_not_below(size=old_size)
        return merkle.consistency_path(self._nodes, old_size, new_size)

    def block(self, height: int) -> Block:
        self._check_not_below(height=height)
        if self.base is not None and height == self.base.height:
            return self.base.block
        row = self._conn.execute("SELECT body, digest FROM blocks WHERE height=?",
                                 (height,)).fetchone()
        if row is None:
            raise StoreUsageError(f"no block at height {height} (head is {self.height})")
        return self._decode_block(height, row[0], row[1])

    def checkpoint(self, height: int | None = None) -> str:
        h = self.height if height is None else height
        self._check_not_below(height=h)
        if self.base is not None and h == self.base.height:
            return self.base.note
        row = self._conn.execute("SELECT note FROM checkpoints WHERE height=?", (h,)
                                 ).fetchone()
        if row is None:
            raise StoreUsageError(f"no checkpoint at height {h}")
        return str(row[0])

    def finalized(self, height: int) -> FinalizedBlock:
        return next(self.iter_finalized(height, height))

    def iter_finalized(self, start: int = 1, stop: int | None = None
                       ) -> Iterator[FinalizedBlock]:
        """Blocks start..stop (inclusive) with everything held about them. Damage that makes
        a row unreadable raises StoreCorrupt; content checks are the auditor's job."""
        stop = self.height if stop is None else stop
        if self.base is not None and start <= self.base.height and start <= stop:
            # The base block has no record here (no certificates, no entries).
            raise self.base.below(f"block {max(start, 1)}")
        c = self._conn
        for height in range(max(start, 1), stop + 1):
            row = c.execute("SELECT body, digest, first_entry, entry_count FROM blocks "
                            "WHERE height=?", (height,)).fetchone()
            if row is None:
                raise self._corrupt("blocks", "block row is missing", height)
            b = self._decode_block(height, row[0], row[1])
            certs: dict[int, Certificate] = {}
            for kind, body in c.execute("SELECT kind, body FROM certificates WHERE height=?",
                                        (height,)):
                try:
                    certs[kind] = Certificate.decode(body)
                except (EncodingError, MalformedMessage, ValueError) as e:
                    raise self._corrupt("certificates", f"certificate does not decode ({e})",
                                        height) from None
            votes = []
            for kind, signer, sig in c.execute(
                    "SELECT kind, signer, signature FROM block_votes WHERE height=? "
                    "ORDER BY kind, signer", (height,)):
                if kind not in (0, 1):
                    raise self._corrupt("block_votes", f"unknown vote kind {kind}", height)
                votes.append(vote_for(b, VoteKind(kind), signer, bytes(sig)))
            note = c.execute("SELECT note FROM checkpoints WHERE height=?", (height,)
                             ).fetchone()
            yield FinalizedBlock(b, certs.get(int(VoteKind.FINALIZE)),
                                 certs.get(int(VoteKind.NOTARIZE)), tuple(votes),
                                 "" if note is None else str(note[0]))

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A consistent read view (one read transaction) for export while a writer runs."""
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    def _audit_side_tables(self) -> None:
        """The columns the auditor does not see, and the unsigned tables (checksums)."""
        c = self._conn
        end = 0
        for height, first, count in c.execute(
                "SELECT height, first_entry, entry_count FROM blocks ORDER BY height"):
            if first != end:
                raise self._corrupt("blocks", "first entry index does not follow on", height)
            end = first + count
        for height, size, root, note in c.execute("SELECT height, size, root, note FROM "
                                                   "checkpoints ORDER BY height"):
            try:
                cp = verify_checkpoint(note, self.member)
            except CheckpointError as e:
                raise self._corrupt("checkpoints", f"checkpoint note: {e}", height) from None
            if (size, root) != (cp.size, cp.root):
                raise self._corrupt("checkpoints", "size/root columns differ from the note",
                                    height)
        self._check_guard_rows(None)
        for row in c.execute("SELECT member, epoch, view, kind, digest, signature, check_ "
                             "FROM seen_votes"):
            if row[6] != _row_check("seen", *row[:6]):
                raise self._corrupt("seen_votes", f"row (member {row[0]}, epoch {row[1]}, "
                                    f"view {row[2]}) fails its checksum")
        for ident, digest, body in c.execute("SELECT id, digest, body FROM evidence"):
            if blake3_digest(body) != digest:
                raise self._corrupt("evidence", f"evidence {ident}: body does not match its "
                                    f"digest")

    def audit(self) -> AuditSummary:
        """Full check of everything stored (what `coalitiond verify` does to an archive), plus
        every stored Merkle node against the entries. Raises StoreCorrupt naming the place.
        A state-synced log (no history below its base) is refused: BelowBase says where it
        starts."""
        if self.base is not None:
            raise self.base.below("a full audit from genesis")
        try:
            return self._audit()
        except sqlite3.DatabaseError as e:
            raise self._corrupt("sqlite", str(e)) from None

    def _audit(self) -> AuditSummary:
        auditor = LogAuditor(self.committee, self.member, keep_leaf_hashes=True)
        seen = {"certificates": 0, "block_votes": 0, "checkpoints": 0, "entries": 0}
        with self.snapshot():
            try:
                for fb in self.iter_finalized():
                    auditor.feed(fb)
                    # The stored leaves (served by index, /v1/entries) are the block's own.
                    first = auditor.summary.entries - len(fb.block.commands)
                    stored = self._conn.execute(
                        "SELECT idx, body FROM entries WHERE height=? ORDER BY idx",
                        (fb.height,)).fetchall()
                    for i, leaf in enumerate(fb.entries):
                        if i >= len(stored) or stored[i][0] != first + i \
                                or bytes(stored[i][1]) != leaf:
                            raise self._corrupt("entries", f"entry {first + i} does not match "
                                                f"its command", fb.height)
                    seen["entries"] += len(stored)
                    seen["certificates"] += (fb.finalization is not None) + (
                        fb.notarization is not None)
                    seen["block_votes"] += len(fb.votes)
                    seen["checkpoints"] += 1
                summary = auditor.finish()
            except AuditFailure as e:
                raise self._corrupt("log", e.what, e.height) from None
            # Rows the per-height reads did not reach (a damaged key moved them) are damage too.
            for table, n in seen.items():
                stored = self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                if stored != n:
                    raise self._corrupt(table, f"{stored} rows stored, {n} belong to blocks")
            tree = merkle.MemoryTree(summary.leaf_hashes)
            for level, idx, h in self._conn.execute("SELECT level, idx, hash FROM tree_nodes"):
                if level >= len(tree.levels) or idx >= len(tree.levels[level]) or \
                        tree.levels[level][idx] != h:
                    raise self._corrupt("tree_nodes", f"node (level {level}, index {idx}) "
                                        f"does not match the entries")
            expected = sum(len(row) for row in tree.levels)
            count = self._conn.execute("SELECT COUNT(*) FROM tree_nodes").fetchone()[0]
            if count != expected:
                raise self._corrupt("tree_nodes", f"{count} nodes stored, {expected} expected")
            self._audit_side_tables()
        return summary


def _committee_difference(path: str, stored: CommitteeSpec, given: CommitteeSpec) -> str:
    if stored.committee_id != given.committee_id:
        return (f"{path}: the store belongs to committee {stored.committee_id.hex()[:16]} "
                f"({stored.component_kind}/{stored.component_name}), the configuration names "
                f"committee {given.committee_id.hex()[:16]} ({given.component_kind}/"
                f"{given.component_name}); point [node] data dir at this committee's store")
    return (f"{path}: the store is for epoch {stored.epoch} of committee "
            f"{stored.committee_id.hex()[:16]}, the configuration says epoch {given.epoch}; "
            f"schema {SCHEMA_VERSION} keeps one epoch per store")
