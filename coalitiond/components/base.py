"""The component interface (DESIGN §2.8) and the registry of component kinds.

A component is a deterministic state machine. Every member runs the same one over the same
finalised blocks and must reach byte-identical state, so `apply` may use only its arguments
and its own state: no clock, no randomness, no I/O, no iteration over unordered containers
(iterate sorted keys or insertion-ordered lists of things that arrived in block order).

Life cycle, driven by the executor (`coalitiond.components.executor`):

* `check(client, command)` — stateless validity, run by every member for every command of a
  proposed block before voting for it (the consensus core's validation hook), and again by
  the executor. Raises `InvalidCommand` with a reason the submitter can read.
* `bind(committee)` — once, before anything else: the committee the component serves (its
  members' keys verify member-signed items such as Almanac observations).
* `check_member(command)` — stateless validity of a member command (`coalitiond.
  member_commands`: something the committee proposes itself, e.g. an Almanac tick). The
  default refuses every member command.
* Per finalised block, in this order:
  `apply_member(ctx, command)` for each member command of the block, in block order;
  `apply(ctx, envelopes)` — the client envelopes that passed admission and deduplication, in
  block order. Returns one `CommandResult` per command, in order: either `Applied` (with the
  log entries it produced and the index of the first) or `Refused`. A refused command must
  leave the state untouched;
  `end_block(ctx)` — the component's own deterministic work at every block (Compute's
  clearing, lapses and expiries; Chronicle's anchors), returning the entries it produced.
* `state_root()` — a 32-byte commitment to the whole state, so reads can come with proofs.
* `query(name, args)` — reads; plain CBOR-ready values; `QueryError` for bad requests.
* `snapshot()` / `restore(bytes)` — the state as deterministic bytes and back, for restart
  and catch-up; `restore` validates everything (the bytes may come from a peer).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from ..commands.envelope import Command, Envelope, InvalidCommand
from ..commands.member import MemberCommand
from ..primitives import merkle
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import encode
from ..primitives.errors import LocalError, OperatorError, RemoteError
from ..primitives.identity import ID_LEN, hash_structure
from ..primitives.merkle import MemoryTree, inclusion_path
from ..verify import merkle_root


class QueryError(RemoteError):
    """A reader asked for something malformed or absent. `str(err)` says what."""


class QueryNotFound(QueryError):
    """A well-formed read of something that does not exist (HTTP 404, not 400)."""


class MalformedSnapshot(RemoteError):
    """Snapshot bytes that do not describe a valid state of this component."""


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a component may know about the block it applies (nothing else: no time)."""

    height: int
    digest: bytes
    #: The latest tick of the followed Almanac stamped into this committee's state
    #: (`follow_almanac`), after this block's own stamp if it carries one; None when the
    #: component follows no Almanac or no stamp has been committed yet.
    tick: int | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """The command changed the state. `entries` are the log entries it produced, in order;
    `entry_index` is the component's index of the first of them (None if it produced none)."""

    entry_index: int | None
    entries: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """The command did nothing. `reason` is a stable code; `detail` a one-line explanation."""

    reason: str
    detail: str


CommandResult = Applied | Refused


class Component(abc.ABC):
    #: Registry key and `[committee] component` value, e.g. "feed".
    kind: ClassVar[str]
    #: The versioned state-machine signature, e.g. "feed/1". Changing what `apply` does to
    #: any input changes the version: members on different versions must not share a quorum.
    signature: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_params(cls, params: Mapping[str, Any]) -> Component:
        """Build from the `[component]` configuration table; OperatorError on bad params."""

    @abc.abstractmethod
    def config_digest(self) -> bytes:
        """32 bytes committing to the parameters (folded into the committee id)."""

    @abc.abstractmethod
    def check(self, client: bytes, command: Command) -> None:
        """Stateless validity of one command from `client`; raise InvalidCommand."""

    @abc.abstractmethod
    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        """Apply every command of `envelopes` in order; one result per command."""

    def bind(self, committee: CommitteeSpec) -> None:  # noqa: B027 - optional hook
        """The committee this component serves; called once, before any other method."""

    def check_member(self, command: MemberCommand) -> None:
        """Stateless validity of a member command; raise InvalidCommand."""
        raise InvalidCommand(f"{self.signature} takes no member command {command.op!r}",
                             reason="unknown_op")

    def apply_member(self, ctx: BlockContext, command: MemberCommand) -> CommandResult:
        """Apply one member command that passed `check_member`."""
        return Refused("unknown_op", f"{self.signature} takes no member command {command.op!r}")

    def end_block(self, ctx: BlockContext) -> Applied | None:
        """Deterministic per-block work after the block's commands; entries it produced."""
        return None

    @abc.abstractmethod
    def state_root(self) -> bytes:
        """32-byte commitment to the state."""

    @abc.abstractmethod
    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        """A read; raise QueryError for unknown names or bad arguments."""

    @abc.abstractmethod
    def snapshot(self) -> bytes:
        """The state as deterministic bytes."""

    @abc.abstractmethod
    def restore(self, data: bytes) -> None:
        """Replace the state by `data` (from `snapshot`); MalformedSnapshot leaves it as is."""

    def restore_own(self, data: bytes) -> None:
        """`restore` for bytes this member's own `snapshot` wrote (a snapshot file whose
        checksum held). A component may skip the per-row checks a peer's bytes need; the
        caller then compares `state_root()` with the root the snapshot was taken at, and that
        root commits to every row. Default: `restore`."""
        self.restore(data)


# ---------------------------------------------------------------------------------------
# State proofs: one shape for every component, so one integrator-side check covers all.
#
#   {"leaf": bytes, "index": int, "size": int, "path": [bytes], "tree_root": bytes,
#    "root_preimage": [type_name, version, *fields]}
#
# `leaf` is the encoded item (a map entry `encode([key, value])`, a feed entry, a tick...),
# `path` its RFC 6962 inclusion path in a tree of `size` leaves with root `tree_root`, and
# `hash_structure(*root_preimage)` is the component's `state_root()`, with `tree_root` one of
# the preimage's fields. The executor's state root commits to the component root, and
# certified blocks commit to the executor's root (docs/api.md).


class BadStateProof(RemoteError):
    """A state proof that does not verify (from a member we do not trust)."""


def state_proof(leaf: bytes, index: int, tree: MemoryTree, root_preimage: Sequence[Any]
                ) -> dict[str, Any]:
    return {"leaf": leaf, "index": index, "size": tree.size,
            "path": inclusion_path(tree, index, tree.size), "tree_root": tree.root(),
            "root_preimage": list(root_preimage)}


def check_state_proof(proof: Any, component_root: bytes) -> bytes:
    """Verify a state proof against a component root; return the proven leaf bytes."""
    if not (isinstance(proof, dict) and set(proof) == {"leaf", "index", "size", "path",
                                                        "tree_root", "root_preimage"}):
        raise BadStateProof("state proof: expected {leaf, index, size, path, tree_root, "
                            "root_preimage}")
    leaf, index, size, path = proof["leaf"], proof["index"], proof["size"], proof["path"]
    tree_root, preimage = proof["tree_root"], proof["root_preimage"]
    if not (isinstance(leaf, bytes) and isinstance(index, int) and isinstance(size, int)
            and not isinstance(index, bool) and not isinstance(size, bool)
            and 0 <= index < size and isinstance(path, list)
            and all(isinstance(h, bytes) and len(h) == 32 for h in path)
            and isinstance(tree_root, bytes) and len(tree_root) == 32
            and isinstance(preimage, list) and len(preimage) >= 2
            and isinstance(preimage[0], str) and isinstance(preimage[1], int)):
        raise BadStateProof("state proof: fields have the wrong types")
    if tree_root not in preimage[2:]:
        raise BadStateProof("state proof: the tree root is not part of the root preimage")
    if hash_structure(*preimage) != component_root:
        raise BadStateProof("state proof: root preimage does not hash to the component root")
    if not merkle.verify_inclusion_hash(merkle.leaf_hash(leaf), index, size, path, tree_root):
        raise BadStateProof("state proof: inclusion path does not lead to the tree root")
    return leaf


# ---------------------------------------------------------------------------------------
# Small validators every component uses on commands, reads and snapshots


def is_uint(x: Any) -> bool:
    """An unsigned CBOR integer (a bool is not one)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def is_id(x: Any) -> bool:
    return isinstance(x, bytes) and len(x) == ID_LEN


def expect_args(name: str, args: Mapping[str, Any], required: set[str],
                optional: Iterable[str] = ()) -> None:
    """QueryError unless `args` has every `required` key and nothing but `optional` else."""
    keys = set(args)
    if not required <= keys or keys - required - set(optional):
        allowed = sorted(required | set(optional))
        raise QueryError(f"{name}: arguments must be {allowed}, got {sorted(keys)}")


def kv_root(items: Mapping[bytes, Any]) -> bytes:
    """RFC 6962 root over `encode([key, value])` leaves in ascending key order: the state
    commitment for map-shaped components (one inclusion proof per key)."""
    return merkle_root([encode([k, items[k]]) for k in sorted(items)])


# ---------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, type[Component]] = {}
SIGNATURE_SEPARATOR: Final = "/"

C = TypeVar("C", bound=type[Component])


def register(cls: C) -> C:
    """Class decorator: make `cls` constructible by its `kind`."""
    kind = cls.kind
    if not cls.signature.startswith(kind + SIGNATURE_SEPARATOR):
        raise LocalError(f"component signature {cls.signature!r} must start with {kind!r}/")
    if kind in _REGISTRY and _REGISTRY[kind] is not cls:
        raise LocalError(f"component kind {kind!r} registered twice")
    _REGISTRY[kind] = cls
    return cls


def component_class(kind: str) -> type[Component]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise OperatorError(f"unknown component kind {kind!r} (known: {known})") from None


def known_kinds() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def build(kind: str, params: Mapping[str, Any]) -> Component:
    return component_class(kind).from_params(params)

