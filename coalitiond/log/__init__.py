"""The per-member signed log (DESIGN §2.6): everything about storing finalised blocks and
proving what was stored. `sqlite` (the store: blocks, certificates, votes, entries, Merkle
nodes, signer guard), `aio` (the store on one worker thread, for the trio daemon), `records`
and `schema` (what a row and a served block are), `checkpoint` (C2SP signed notes), `chain`
(checking a run of finalised blocks someone handed out), `archive` (export and offline
verification) and `audit` (re-checking a whole log).

`Store` is synchronous (tests, export, verify); `AsyncStore` runs it on one worker thread
for the trio daemon. The integrator API is `coalitiond.verify`.
"""

from .aio import AsyncStore
from .audit import AuditFailure, AuditSummary, LogAuditor
from .errors import (
    CommitteeMismatch,
    SchemaMismatch,
    SignerConflict,
    StoreCorrupt,
    StoreIOError,
    StoreOpenError,
    StoreUsageError,
)
from .records import FinalizedBlock, committee_from_record, committee_record, entry_leaf
from .sqlite import (
    STORE_FILENAME,
    BlockToAppend,
    EventResult,
    EvidenceRecord,
    GuardRecord,
    SeenRecord,
    Store,
    store_path,
)

__all__ = [
    "STORE_FILENAME",
    "AsyncStore",
    "AuditFailure",
    "AuditSummary",
    "BlockToAppend",
    "CommitteeMismatch",
    "EventResult",
    "EvidenceRecord",
    "FinalizedBlock",
    "GuardRecord",
    "LogAuditor",
    "SchemaMismatch",
    "SeenRecord",
    "SignerConflict",
    "Store",
    "StoreCorrupt",
    "StoreIOError",
    "StoreOpenError",
    "StoreUsageError",
    "committee_from_record",
    "committee_record",
    "entry_leaf",
    "store_path",
]
