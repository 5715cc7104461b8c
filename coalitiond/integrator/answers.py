"""What the integrator client returns and raises: the errors that name what did not verify,
the verified results, and the shape checks every decoded answer goes through first."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..consensus.types import Block, BlockHeader, Certificate
from ..log.checkpoint import Checkpoint
from ..log.records import FinalizedBlock
from ..primitives.errors import RemoteError

T = TypeVar("T")


class ApiError(RemoteError):
    """The member answered with an HTTP error; `status` and the member's one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class VerificationFailed(RemoteError):
    """Something the member sent does not verify against the committee."""


class MalformedResponse(VerificationFailed):
    """A response that does not have the documented shape."""


class BadCheckpoint(VerificationFailed):
    """A checkpoint note without a valid member signature, or not for this committee."""


class BadCertificate(VerificationFailed):
    """A finalization that is not a quorum of valid member signatures over the block."""


class BadInclusionProof(VerificationFailed):
    """An entry whose inclusion proof does not lead to the checkpoint's root."""


class BadConsistencyProof(VerificationFailed):
    """Two checkpoints whose trees the consistency proof does not connect."""


class BadBlocks(VerificationFailed):
    """Blocks that do not chain, or carry votes or notes that do not verify."""


class BadStateRead(VerificationFailed):
    """A state read whose proof or executor-root pieces do not verify."""


class UncertifiedState(VerificationFailed):
    """The member holds no certified block committing to the state it read (yet)."""


class UnprovenRead(VerificationFailed):
    """A state read that carries no state proof: its result would be the member's word.
    Refused unless the caller passes `allow_unproven=True` (then `StateRead.proven` is
    False)."""


class BadEvidence(VerificationFailed):
    """An evidence record that does not prove the misbehaviour it names."""


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint whose (size, root) a quorum certified: `certifier`, a block of the
    finalised chain ending at `finalization`, commits to them (docs/protocol.md §7). The note
    is signed by `signers` (member indices); `block` is the block at its height."""

    checkpoint: Checkpoint
    note: str
    signers: tuple[int, ...]
    block: Block
    finalization: Certificate
    certifier: BlockHeader

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    @property
    def height(self) -> int:
        return self.checkpoint.height


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log entry: the leaf bytes and what they say (docs/formats.md). The leaf is
    `entry_leaf` of the final block at `height`; `index` is its place in the checkpoint
    signer's tree (that signer's word)."""

    index: int
    height: int
    block_digest: bytes
    position: int
    command: bytes
    leaf: bytes


@dataclass(frozen=True, slots=True)
class BlockPage:
    """Blocks proven final, in height order; `next` is where to continue (blocks after the
    last finalization in the page are fetched again from there)."""

    blocks: tuple[FinalizedBlock, ...]
    next: int
    head: int


@dataclass(frozen=True, slots=True)
class StateRead:
    """A component read.

    `proven` reads (the proof-carrying reads of `PROVEN_READS`): `result` is rebuilt by the
    client from `proven_leaf`, the leaf the state proof proves, after checking that the leaf
    is the item the read asked for, in the tree the read is about; the member's own `result`
    must agree with it field by field. `unproven_fields` holds the member's extra fields the
    proof does not cover (e.g. compute `provider`'s `remaining`): its word, kept apart.
    Unproven reads (`allow_unproven=True` only): `result` is the member's word, `proven_leaf`
    None.

    `certified_by` is the finalised block whose state_root is `executor_root`, and
    `certified_height` its executed_height: the state read is the committee's state at that
    height (the root does not depend on the height, so it is also the state at
    `executed_height` when the member is further on with nothing changed)."""

    result: Any
    proven_leaf: bytes | None
    executed_height: int
    executor_root: bytes
    component_root: bytes
    certified_by: Block | None
    certified_height: int | None
    proven: bool = False
    unproven_fields: Mapping[str, Any] = field(default_factory=dict)





# ---------------------------------------------------------------------------------------
# Shape checks of decoded responses


def expect_field(obj: Any, name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise MalformedResponse(f"{what}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise MalformedResponse(f"{what}: field {name!r} has the wrong type")
    return value


def expect_uint(obj: Any, name: str, what: str) -> int:
    value: int = expect_field(obj, name, int, what)
    if value < 0:
        raise MalformedResponse(f"{what}: field {name!r} must be unsigned")
    return value


def expect_hashes(obj: Any, name: str, what: str) -> list[bytes]:
    value = expect_field(obj, name, list, what)
    if not all(isinstance(h, bytes) and len(h) == 32 for h in value):
        raise MalformedResponse(f"{what}: {name!r} must be a list of 32-byte hashes")
    return list(value)


def _decoded(decode: Callable[[bytes], T], data: Any, what: str, name: str) -> T:
    """`decode(data)`, or MalformedResponse naming `what` and the `name` of the item."""
    if not isinstance(data, bytes):
        raise MalformedResponse(f"{what}: {name} must be bytes")
    try:
        return decode(data)
    except (RemoteError, ValueError) as e:
        raise MalformedResponse(f"{what}: {name} does not decode: {e}") from None


def decode_block(data: Any, what: str) -> Block:
    return _decoded(Block.decode, data, what, "block")


def decode_header(data: Any, what: str) -> BlockHeader:
    return _decoded(BlockHeader.decode, data, what, "block header")


def decode_certificate(data: Any, what: str) -> Certificate:
    return _decoded(Certificate.decode, data, what, "certificate")


def certifier_of(cp: Checkpoint, chain: Sequence[BlockHeader], certifier: int, what: str
                 ) -> BlockHeader:
    """The header of `chain` (the checkpoint's block first, then its finalised descendants)
    at height `certifier`, which must commit to the checkpoint's height, size and root
    (docs/protocol.md §7): then the size and root are a quorum's, not the note signer's.
    BadCheckpoint naming what failed otherwise."""
    found = next((h for h in chain[1:] if h.height == certifier), None)
    if found is None:
        raise BadCheckpoint(f"{what}: no block at certifier height {certifier} among the "
                            f"finalised descendants {cp.height + 1}..{chain[-1].height} of "
                            "the note's block: the size and root would rest on one member's "
                            "signature")
    roots = found.roots
    if (roots.height, roots.log_size, roots.log_root) != (cp.height, cp.size, cp.root):
        raise BadCheckpoint(
            f"{what}: the note says size {cp.size} root {cp.root.hex()[:16]} at height "
            f"{cp.height}; the finalised block {found.height} commits to size "
            f"{roots.log_size} root {roots.log_root.hex()[:16]} at height {roots.height}")
    return found
