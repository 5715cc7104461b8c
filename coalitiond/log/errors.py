"""Store errors, each saying whose fault it is (coalitiond.primitives.errors)."""

from __future__ import annotations

from ..primitives.errors import LocalError, OperatorError


class StoreOpenError(OperatorError):
    """The data directory holds no usable store (missing, not ours, unreadable)."""


class SchemaMismatch(OperatorError):
    """The store was written by a coalitiond with another schema version."""


class CommitteeMismatch(OperatorError):
    """The store belongs to another committee (or member) than the one configured."""


class StoreCorrupt(OperatorError):
    """Damage inside committed data. Never truncated away: the operator must act.

    `table` and `height` say where; the message says what is wrong.
    """

    def __init__(self, path: str, table: str, problem: str, *, height: int | None = None) -> None:
        self.path = path
        self.table = table
        self.height = height
        self.problem = problem
        where = f"table {table}" + (f", height {height}" if height is not None else "")
        super().__init__(
            f"{path}: store damaged ({where}): {problem}; the member must not vote on this "
            f"data — restore it from a peer's certified log (coalitiond verify names the damage)")


class StoreIOError(OperatorError):
    """A write or fsync failed. The writer has stopped: no later write is attempted, because
    after a failed fsync the kernel may have dropped dirty pages ("fsyncgate")."""


#: Signer-guard kinds: the vote kinds' values (VoteKind) plus the proposal (docs/formats.md).
GUARD_KIND_NAMES = ("notarize", "finalize", "nullify", "propose")


def guard_kind_name(kind: int) -> str:
    k = int(kind)
    return GUARD_KIND_NAMES[k] if 0 <= k < len(GUARD_KIND_NAMES) else f"kind {k}"


class SignerConflict(LocalError):
    """The signer guard refused a signature: this member already signed something that the
    requested signature would contradict. Sending it would be equivocation."""

    def __init__(self, epoch: int, view: int, kind: int, digest: bytes,
                 recorded_kind: int, recorded_digest: bytes) -> None:
        self.epoch = epoch
        self.view = view
        self.kind = kind
        self.digest = digest
        self.recorded_kind = recorded_kind
        self.recorded_digest = recorded_digest
        super().__init__(
            f"signer guard: refusing {guard_kind_name(kind)} for epoch {epoch} view {view} "
            f"digest {digest.hex()[:16]}: already signed {guard_kind_name(recorded_kind)} digest "
            f"{recorded_digest.hex()[:16]} for that view")


class StoreUsageError(LocalError):
    """The caller asked for something the log cannot do (out of order block, bad votes...)."""
