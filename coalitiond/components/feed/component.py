"""The `feed` component (SPEC §5): a certified feed that its operators publish into.

Command: `publish {kind: text, body: any CBOR value}`, accepted only from a client key listed
in the feed's `publishers` parameter (the feed operator's keys). Each accepted publish appends one entry with the next
sequence number (0, 1, 2, …); that number is the entry index the submitter is told.

Entry encoding (the log entry bytes, and the leaves of the feed's Merkle tree):

    ["feed-entry", 1, seq, height, envelope_id, command_index, publisher, kind, body]

State root: `blake3(cbor(["feed-state", 1, count, tree_root]))` where `tree_root` is the
RFC 6962 root over the entry encodings in sequence order; an entry read comes with an
inclusion proof against `tree_root`.

Reads: `head`, `entry {index}`, `latest`, `since {index, limit?}`.
Snapshot: `["feed-snapshot", 1, [entry bytes…]]`, every entry re-validated on restore.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ...commands.envelope import Command, Envelope, InvalidCommand
from ...consensus.types import MAX_COMMAND_SIZE
from ...primitives.crypto import PUBLIC_KEY_LEN
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, OperatorError
from ...primitives.identity import ID_LEN, hash_structure
from ...primitives.merkle import MemoryTree, inclusion_path, leaf_hash
from ..base import (
    Applied,
    BlockContext,
    CommandResult,
    Component,
    MalformedSnapshot,
    QueryError,
    QueryNotFound,
    Refused,
    expect_args,
    is_uint,
    register,
    state_proof,
)
from ..paging import since_page
from ..snapshot import SnapshotFormat, is_list

ENTRY_TYPE: Final = "feed-entry"
ENTRY_SCHEMA: Final = 1
SNAPSHOT_TYPE: Final = "feed-snapshot"
#: Kinds are short lowercase labels ("intent", "refund.v1", "price:eth-usd").
MAX_KIND_LEN: Final = 64
_KIND_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:-]*")
#: Encoded body bound (parameter `max_body_bytes`): the default leaves room for the rest of
#: the envelope; the maximum is what one envelope can carry at all.
DEFAULT_MAX_BODY_BYTES: Final = MAX_COMMAND_SIZE // 2
MAX_BODY_BYTES: Final = MAX_COMMAND_SIZE
#: The feed keeps its entries in memory until the store serves old ones; past this bound
#: publishes are refused ("feed_full") rather than growing without limit.
MAX_FEED_ENTRIES: Final = 1_000_000
MAX_PUBLISHERS: Final = 64
#: Upper bound of entries one `since` read returns (the reader pages with `next`).
MAX_QUERY_ENTRIES: Final = 256
MAX_SNAPSHOT_SIZE: Final = 1 << 31

_PARAM_KEYS: Final = frozenset({"publishers", "max_body_bytes", "follow_almanac"})
_SNAPSHOT: Final = SnapshotFormat("feed", SNAPSHOT_TYPE, 1, (is_list,),
                                  '["feed-snapshot", 1, [entry bytes]]',
                                  max_size=MAX_SNAPSHOT_SIZE)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    seq: int
    height: int
    envelope_id: bytes
    command_index: int
    publisher: bytes
    kind: str
    body: Any

    def to_wire(self) -> list[Any]:
        return [ENTRY_TYPE, ENTRY_SCHEMA, self.seq, self.height, self.envelope_id,
                self.command_index, self.publisher, self.kind, self.body]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> FeedEntry:
        """From bytes this feed wrote itself (fresh objects: readers cannot alias the state)."""
        _, _, seq, height, envelope_id, command_index, publisher, kind, body = decode(data)
        return cls(seq, height, envelope_id, command_index, publisher, kind, body)

    def as_read(self) -> dict[str, Any]:
        return {"seq": self.seq, "height": self.height, "envelope_id": self.envelope_id,
                "command_index": self.command_index, "publisher": self.publisher,
                "kind": self.kind, "body": self.body}


def _bad_args(detail: str) -> InvalidCommand:
    return InvalidCommand(f"publish: {detail}", reason="bad_args")


@register
class Feed(Component):
    kind = "feed"
    signature = "feed/1"

    def __init__(self, publishers: Sequence[bytes],
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if not 0 < len(publishers) <= MAX_PUBLISHERS:
            raise OperatorError(f"component.publishers: list 1..{MAX_PUBLISHERS} client keys")
        if len(set(publishers)) != len(publishers):
            raise OperatorError("component.publishers: a key is listed twice")
        for key in publishers:
            if not (isinstance(key, bytes) and len(key) == PUBLIC_KEY_LEN):
                raise OperatorError(
                    f"component.publishers: keys must be {PUBLIC_KEY_LEN} bytes (64 hex chars)")
        if not (is_uint(max_body_bytes) and 0 < max_body_bytes <= MAX_BODY_BYTES):
            raise OperatorError(f"component.max_body_bytes: must be 1..{MAX_BODY_BYTES}")
        self.publishers: tuple[bytes, ...] = tuple(publishers)
        self.max_body_bytes = max_body_bytes
        self._publisher_set = frozenset(publishers)
        #: The entries' encodings, in sequence order: the Merkle leaves, the log entries and the
        #: snapshot rows. Reads decode them afresh, so no reader can alias (and mutate) state.
        self._entries: list[bytes] = []
        self._tree = MemoryTree()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Feed:
        """From the parsed `[component]` table (`config.FeedConfig.to_cbor()`): `publishers`
        (32-byte keys, or 64-char hex strings), optional `max_body_bytes`."""
        unknown = sorted(set(params) - _PARAM_KEYS)
        if unknown:
            raise OperatorError(f"component.{unknown[0]}: unknown key for a feed")
        if params.get("follow_almanac") is not None:
            # Refused rather than ignored: the operator would expect stamped entries.
            raise OperatorError(f"component.follow_almanac: not supported by {cls.signature} yet")
        raw = params.get("publishers")
        if not isinstance(raw, list | tuple):
            raise OperatorError("component.publishers: required, a list of client keys")
        keys = []
        for k in raw:
            if isinstance(k, str):
                try:
                    k = bytes.fromhex(k)
                except ValueError:
                    raise OperatorError(f"component.publishers: {k!r} is not hex") from None
            keys.append(k)
        return cls(keys, params.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))

    def config_digest(self) -> bytes:
        # Sorted: the set of publishers is what matters, not the order the config lists them.
        return hash_structure("feed-config", 1, self.signature, sorted(self.publishers),
                              self.max_body_bytes)

    # -- commands ---------------------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        if command.op != "publish":
            raise InvalidCommand(f"unknown op {command.op!r} (a feed accepts: publish)",
                                 reason="unknown_op")
        args = command.args
        if set(args) != {"kind", "body"}:
            raise _bad_args("args must be exactly {kind, body}")
        kind = args["kind"]
        if not (isinstance(kind, str) and len(kind) <= MAX_KIND_LEN
                and _KIND_RE.fullmatch(kind)):
            raise _bad_args(f"kind must match [a-z0-9][a-z0-9._:-]* and be at most "
                            f"{MAX_KIND_LEN} chars")
        size = len(encode(args["body"]))
        if size > self.max_body_bytes:
            raise InvalidCommand(f"publish: body of {size} bytes exceeds {self.max_body_bytes}",
                                 reason="too_large")
        if client not in self._publisher_set:
            raise InvalidCommand(f"client {client.hex()} is not a publisher of this feed",
                                 reason="not_publisher")

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for envelope in envelopes:
            for index, command in enumerate(envelope.commands):
                results.append(self._apply_one(ctx, envelope, index, command))
        return results

    def _apply_one(self, ctx: BlockContext, envelope: Envelope, index: int,
                   command: Command) -> CommandResult:
        try:
            self.check(envelope.client, command)
        except InvalidCommand as exc:
            return Refused(exc.reason, str(exc))
        if len(self._entries) >= MAX_FEED_ENTRIES:
            return Refused("feed_full", f"the feed holds its maximum of {MAX_FEED_ENTRIES} "
                           "entries")
        entry = FeedEntry(len(self._entries), ctx.height, envelope.envelope_id, index,
                          envelope.client, command.args["kind"], command.args["body"])
        encoded = entry.encode()
        self._entries.append(encoded)
        self._tree.append_hash(leaf_hash(encoded))
        return Applied(entry.seq, (encoded,))

    # -- commitment -------------------------------------------------------------------

    def tree_root(self) -> bytes:
        return self._tree.root()

    def _root_preimage(self) -> list[Any]:
        return ["feed-state", 1, len(self._entries), self._tree.root()]

    def state_root(self) -> bytes:
        return hash_structure(*self._root_preimage())

    # -- reads ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def encoded(self, index: int) -> bytes:
        """Entry `index`'s encoding, without a proof: for a replica reading its own copy
        (a confluence's citizen follower, the audit)."""
        return self._entries[index]

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            return {"count": len(self._entries), "tree_root": self._tree.root(),
                    "state_root": self.state_root()}
        if name == "entry":
            expect_args(name, args, {"index"})
            index = self._index(args["index"])
            return {"entry": self._read(index), "encoded": self._entries[index],
                    "tree_size": len(self._entries),
                    "tree_root": self._tree.root(),
                    "proof": inclusion_path(self._tree, index, self._tree.size),
                    "state_proof": state_proof(self._entries[index], index, self._tree,
                                               self._root_preimage())}
        if name == "latest":
            expect_args(name, args, set())
            return self._read(len(self._entries) - 1) if self._entries else None
        if name == "since":
            return since_page(name, args, "index", self._entries, MAX_QUERY_ENTRIES,
                              lambda row: FeedEntry.decode(row).as_read())
        raise QueryError(f"unknown feed query {name!r} (known: entry, head, latest, since)")


    def _index(self, index: Any) -> int:
        if not is_uint(index):
            raise QueryError("entry: index must be an unsigned integer")
        if index >= len(self._entries):
            raise QueryNotFound(f"entry: no entry {index} (the feed has {len(self._entries)})")
        return int(index)

    def _read(self, index: int) -> dict[str, Any]:
        return FeedEntry.decode(self._entries[index]).as_read()

    # -- snapshot ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _SNAPSHOT.encode(self._entries)

    def restore(self, data: bytes) -> None:
        _SNAPSHOT.restore(self, data, self._state_from_snapshot)

    def restore_own(self, data: bytes) -> None:
        # Our own snapshot: every row is one of our entries' encodings, and the state root
        # (count and tree root over the rows) is checked by the caller; decoding and
        # checking each row again cost ~35 µs an entry (most of a restart).
        def load(fields: list[Any]) -> dict[str, Any]:
            (rows,) = fields
            if len(rows) > MAX_FEED_ENTRIES or not all(isinstance(r, bytes) for r in rows):
                raise _SNAPSHOT.error(f"expected at most {MAX_FEED_ENTRIES} byte strings")
            tree = MemoryTree()
            for row in rows:
                tree.append_hash(leaf_hash(row))
            return {"_entries": rows, "_tree": tree}

        _SNAPSHOT.restore(self, data, load)

    def _state_from_snapshot(self, fields: list[Any]) -> dict[str, Any]:
        (rows,) = fields
        if len(rows) > MAX_FEED_ENTRIES:
            raise _SNAPSHOT.error(f"more than {MAX_FEED_ENTRIES} entries")
        entries: list[bytes] = []
        tree = MemoryTree()
        previous_height = 0
        for seq, row in enumerate(rows):
            entry = self._entry_from_snapshot(seq, row)
            if entry.height < previous_height:
                raise _SNAPSHOT.error(f"entry {seq}: height goes backwards")
            previous_height = entry.height
            entries.append(row)
            tree.append_hash(leaf_hash(row))
        return {"_entries": entries, "_tree": tree}

    def _entry_from_snapshot(self, seq: int, data: Any) -> FeedEntry:
        def bad(what: str) -> MalformedSnapshot:
            return _SNAPSHOT.error(f"entry {seq}: {what}")

        if not isinstance(data, bytes):
            raise bad("expected a byte string")
        try:
            row = decode(data, max_size=MAX_COMMAND_SIZE)
        except EncodingError as exc:
            raise bad(str(exc)) from None
        if not (isinstance(row, list) and len(row) == 9):
            raise bad("expected a 9-item array")
        tag, schema, s, height, envelope_id, command_index, publisher, kind, body = row
        if tag != ENTRY_TYPE or schema != ENTRY_SCHEMA or isinstance(schema, bool):
            raise bad("wrong type tag or schema")
        if s != seq or not is_uint(s):
            raise bad(f"sequence number {s!r}, expected {seq}")
        if not (is_uint(height) and height >= 1 and is_uint(command_index)):
            raise bad("height must be >= 1 and command index unsigned")
        if not (isinstance(envelope_id, bytes) and len(envelope_id) == ID_LEN):
            raise bad("envelope id must be 32 bytes")
        if not (isinstance(publisher, bytes) and len(publisher) == PUBLIC_KEY_LEN):
            raise bad("publisher must be a 32-byte key")
        try:
            self.check(publisher, Command("publish", {"kind": kind, "body": body}))
        except InvalidCommand as exc:
            raise bad(str(exc)) from None
        return FeedEntry(s, height, envelope_id, command_index, publisher, kind, body)
