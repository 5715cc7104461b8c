"""The `atlas` component (SPEC §3.1): the coalition's directory of citizen cards.

Parameters (`config.AtlasConfig.to_cbor()`): the ordered catalogue `citizens: [[stable_id,
operator_key], ...]` and `follow_almanac` (handled by the executor, ignored here).

Commands (client envelopes; the envelope's client key is the signer):

* `publish_card {card: {citizen_id, role, endpoint_hints, ticket_issuance_root, mrtd_pins,
  schema_version, metadata}}` — the citizen must be catalogued and the signer its operator;
* `retire_card {citizen_id, replacement: Id | null}` — same signer rule; the citizen must have
  a card that is not retired yet. A retired card is final: it cannot be republished.

Every accepted command stores the citizen's new record and produces one log entry (the new
leaf, below) whose entry index is the component's change counter (0, 1, 2, …).

State root: `hash_structure("atlas-state", 1, card_count, change_count, tree_root)`, where
`tree_root` is the RFC 6962 root over `encode([citizen_id, record])` in ascending citizen id
order (the leaf shape of `base.kv_root`), `record` being

    ["atlas-record", 1, card, retired, replacement, changed_height, changed_tick]
    card = ["citizen-card", 1, citizen_id, role, [hint…], ticket_issuance_root,
            [mrtd pin…], schema_version, {key: value}]

Reads: `head`, `card {citizen_id}` (with a `state_proof`), `cards {after?, limit?}`,
`changes {since_height, after?, limit?}`. Snapshot: `["atlas-snapshot", 1, change_count,
[leaf…]]`, every leaf re-validated on restore. docs/atlas.md has the details.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ...commands.envelope import Command, Envelope, InvalidCommand
from ...primitives.crypto import PUBLIC_KEY_LEN, SigningKey
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, LocalError, OperatorError
from ...primitives.identity import ID_LEN, hash_structure
from ...primitives.merkle import MemoryTree, leaf_hash
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
    is_id,
    is_uint,
    register,
    state_proof,
)
from ..paging import after_page, limit_arg, uint_arg
from ..snapshot import SnapshotFormat, any_value, is_list

CARD_TYPE: Final = "citizen-card"
RECORD_TYPE: Final = "atlas-record"
STATE_TYPE: Final = "atlas-state"
SNAPSHOT_TYPE: Final = "atlas-snapshot"
SCHEMA: Final = 1

PUBLISH_OP: Final = "publish_card"
RETIRE_OP: Final = "retire_card"

#: Catalogue size: the configuration's bound (`config.MAX_CITIZENS`); a test keeps them equal.
MAX_CATALOGUE: Final = 256
#: Roles are short lowercase labels ("lattice", "organism", "builder.v2").
MAX_ROLE_LEN: Final = 64
_LABEL_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:-]*")
#: Endpoint hints: printable ASCII without spaces (URLs, HOST:PORT, multiaddrs), in the
#: citizen's order of preference.
MAX_ENDPOINT_HINTS: Final = 16
MAX_HINT_LEN: Final = 256
_HINT_RE: Final = re.compile(r"[\x21-\x7e]+")
MRTD_LEN: Final = 48
MAX_MRTD_PINS: Final = 16
MAX_METADATA_KEYS: Final = 32
MAX_METADATA_KEY_LEN: Final = 64
MAX_METADATA_VALUE_LEN: Final = 512
MAX_SCHEMA_VERSION: Final = (1 << 32) - 1
#: Bound on one encoded card, below the sum of the per-field bounds on purpose: a card that
#: maxes out every field at once is not a directory entry any more.
MAX_CARD_BYTES: Final = 16 * 1024
#: A leaf is a card plus a few fixed-size fields.
MAX_LEAF_BYTES: Final = MAX_CARD_BYTES + 256
#: Upper bound of records one `cards`/`changes` read returns (the reader pages with `next`).
MAX_QUERY_CARDS: Final = 64
MAX_SNAPSHOT_SIZE: Final = MAX_CATALOGUE * MAX_LEAF_BYTES + 1024
#: Sorts after every citizen id: the default `after` of a `changes` cursor.
_PAST_EVERY_ID: Final = b"\xff" * ID_LEN

CARD_FIELDS: Final = ("citizen_id", "role", "endpoint_hints", "ticket_issuance_root",
                      "mrtd_pins", "schema_version", "metadata")
_PARAM_KEYS: Final = frozenset({"citizens", "follow_almanac"})
_SNAPSHOT: Final = SnapshotFormat("atlas", SNAPSHOT_TYPE, SCHEMA, (any_value, is_list),
                                  f'["{SNAPSHOT_TYPE}", {SCHEMA}, changes, [leaf…]]',
                                  max_size=MAX_SNAPSHOT_SIZE)


def _bad_args(op: str, detail: str) -> InvalidCommand:
    return InvalidCommand(f"{op}: {detail}", reason="bad_args")


def _too_large(op: str, detail: str) -> InvalidCommand:
    return InvalidCommand(f"{op}: {detail}", reason="too_large")


@dataclass(frozen=True, slots=True)
class CitizenCard:
    """One citizen's card. Immutable (tuples), so records can be shared without aliasing."""

    citizen_id: bytes
    role: str
    endpoint_hints: tuple[str, ...]
    ticket_issuance_root: bytes | None
    mrtd_pins: tuple[bytes, ...]
    schema_version: int
    #: Sorted by key (the order deterministic CBOR gives a map of text keys of equal type).
    metadata: tuple[tuple[str, str], ...]

    def to_wire(self) -> list[Any]:
        return [CARD_TYPE, SCHEMA, self.citizen_id, self.role, list(self.endpoint_hints),
                self.ticket_issuance_root, list(self.mrtd_pins), self.schema_version,
                dict(self.metadata)]

    def to_args(self) -> dict[str, Any]:
        """The map form: the `card` argument of `publish_card`, and what reads return."""
        return {"citizen_id": self.citizen_id, "role": self.role,
                "endpoint_hints": list(self.endpoint_hints),
                "ticket_issuance_root": self.ticket_issuance_root,
                "mrtd_pins": list(self.mrtd_pins), "schema_version": self.schema_version,
                "metadata": dict(self.metadata)}

    @classmethod
    def from_args(cls, card: Any, op: str = PUBLISH_OP) -> CitizenCard:
        """Validate the map form completely; InvalidCommand (bad_args/too_large) otherwise."""
        if not (isinstance(card, dict) and set(card) == set(CARD_FIELDS)):
            raise _bad_args(op, f"card must be a map of exactly {{{', '.join(CARD_FIELDS)}}}")
        citizen_id, role = card["citizen_id"], card["role"]
        if not is_id(citizen_id):
            raise _bad_args(op, f"card.citizen_id must be {ID_LEN} bytes")
        if not isinstance(role, str):
            raise _bad_args(op, "card.role must be text")
        if len(role) > MAX_ROLE_LEN:
            raise _too_large(op, f"card.role is longer than {MAX_ROLE_LEN} chars")
        if not _LABEL_RE.fullmatch(role):
            raise _bad_args(op, "card.role must match [a-z0-9][a-z0-9._:-]*")
        hints = card["endpoint_hints"]
        if not isinstance(hints, list):
            raise _bad_args(op, "card.endpoint_hints must be a list of text")
        if len(hints) > MAX_ENDPOINT_HINTS:
            raise _too_large(op, f"card.endpoint_hints has more than {MAX_ENDPOINT_HINTS} items")
        for i, hint in enumerate(hints):
            if not isinstance(hint, str):
                raise _bad_args(op, f"card.endpoint_hints[{i}] must be text")
            if len(hint) > MAX_HINT_LEN:
                raise _too_large(op, f"card.endpoint_hints[{i}] is longer than {MAX_HINT_LEN} "
                                 "chars")
            if not _HINT_RE.fullmatch(hint):
                raise _bad_args(op, f"card.endpoint_hints[{i}] must be non-empty printable "
                                "ASCII without spaces")
        if len(set(hints)) != len(hints):
            raise _bad_args(op, "card.endpoint_hints lists a hint twice")
        root = card["ticket_issuance_root"]
        if root is not None and not is_id(root):
            raise _bad_args(op, f"card.ticket_issuance_root must be {ID_LEN} bytes or null")
        pins = card["mrtd_pins"]
        if not isinstance(pins, list):
            raise _bad_args(op, f"card.mrtd_pins must be a list of {MRTD_LEN}-byte values")
        if len(pins) > MAX_MRTD_PINS:
            raise _too_large(op, f"card.mrtd_pins has more than {MAX_MRTD_PINS} items")
        for i, pin in enumerate(pins):
            if not (isinstance(pin, bytes) and len(pin) == MRTD_LEN):
                raise _bad_args(op, f"card.mrtd_pins[{i}] must be {MRTD_LEN} bytes")
        if len(set(pins)) != len(pins):
            raise _bad_args(op, "card.mrtd_pins lists a pin twice")
        version = card["schema_version"]
        if not (is_uint(version) and version <= MAX_SCHEMA_VERSION):
            raise _bad_args(op, f"card.schema_version must be an integer 0..{MAX_SCHEMA_VERSION}")
        metadata = card["metadata"]
        if not isinstance(metadata, dict):
            raise _bad_args(op, "card.metadata must be a map of text to text")
        if len(metadata) > MAX_METADATA_KEYS:
            raise _too_large(op, f"card.metadata has more than {MAX_METADATA_KEYS} keys")
        for key in sorted(metadata, key=repr):  # repr: keys of any type sort (refused next)
            value = metadata[key]
            if not (isinstance(key, str) and key and isinstance(value, str)):
                raise _bad_args(op, "card.metadata must be a map of non-empty text keys to text")
            if len(key) > MAX_METADATA_KEY_LEN:
                raise _too_large(op, f"card.metadata key {key[:16]!r}… is longer than "
                                 f"{MAX_METADATA_KEY_LEN} chars")
            if len(value) > MAX_METADATA_VALUE_LEN:
                raise _too_large(op, f"card.metadata[{key!r}] is longer than "
                                 f"{MAX_METADATA_VALUE_LEN} chars")
        parsed = cls(citizen_id, role, tuple(hints), root, tuple(pins), version,
                     tuple(sorted(metadata.items())))
        size = len(encode(parsed.to_wire()))
        if size > MAX_CARD_BYTES:
            raise _too_large(op, f"card of {size} bytes exceeds {MAX_CARD_BYTES}")
        return parsed

    @classmethod
    def from_wire(cls, obj: Any) -> CitizenCard:
        """From the array form (snapshots); InvalidCommand if it is not a valid card."""
        if not (isinstance(obj, list) and len(obj) == 9 and obj[0] == CARD_TYPE
                and obj[1] == SCHEMA and not isinstance(obj[1], bool)):
            raise _bad_args("card", f"expected a 9-item [\"{CARD_TYPE}\", {SCHEMA}, ...] array")
        return cls.from_args(dict(zip(CARD_FIELDS, obj[2:], strict=True)), "card")


@dataclass(frozen=True, slots=True)
class CardRecord:
    """What Atlas holds for one citizen: its card, retirement, and when it last changed."""

    card: CitizenCard
    retired: bool
    replacement: bytes | None
    changed_height: int
    #: The followed Almanac's tick at the change (`BlockContext.tick`), None without one.
    changed_tick: int | None

    @property
    def citizen_id(self) -> bytes:
        return self.card.citizen_id

    def to_wire(self) -> list[Any]:
        return [RECORD_TYPE, SCHEMA, self.card.to_wire(), self.retired, self.replacement,
                self.changed_height, self.changed_tick]

    def leaf(self) -> bytes:
        """`encode([citizen_id, record])`: the Merkle leaf, log entry and snapshot row."""
        return encode([self.citizen_id, self.to_wire()])

    def as_read(self) -> dict[str, Any]:
        return {"citizen_id": self.citizen_id, "card": self.card.to_args(),
                "retired": self.retired, "replacement": self.replacement,
                "changed_height": self.changed_height, "changed_tick": self.changed_tick}


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    stable_id: bytes
    operator_key: bytes


def _param_bytes(value: Any, nbytes: int, what: str) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise OperatorError(f"component.citizens: {what} {value!r} is not hex") from None
    if not (isinstance(value, bytes) and len(value) == nbytes):
        raise OperatorError(f"component.citizens: {what} must be {nbytes} bytes "
                            f"({2 * nbytes} hex chars)")
    return value


@register
class Atlas(Component):
    kind = "atlas"
    signature = "atlas/1"

    def __init__(self, catalogue: Sequence[CatalogueEntry]) -> None:
        if len(catalogue) > MAX_CATALOGUE:
            raise OperatorError(f"component.citizens: more than {MAX_CATALOGUE} citizens")
        operators: dict[bytes, bytes] = {}
        for entry in catalogue:
            if not (is_id(entry.stable_id) and isinstance(entry.operator_key, bytes)
                    and len(entry.operator_key) == PUBLIC_KEY_LEN):
                raise OperatorError("component.citizens: each citizen is [32-byte stable id, "
                                    "32-byte operator key]")
            if entry.stable_id in operators:
                raise OperatorError(f"component.citizens: citizen {entry.stable_id.hex()} is "
                                    "catalogued twice")
            operators[entry.stable_id] = entry.operator_key
        self.catalogue: tuple[CatalogueEntry, ...] = tuple(catalogue)
        self._operators = operators
        self._records: dict[bytes, CardRecord] = {}
        self._changes = 0
        #: Rebuilt lazily: a block changes a few cards, roots and reads come once after it.
        self._tree: MemoryTree | None = None
        self._order: list[bytes] = []

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Atlas:
        """From `config.AtlasConfig.to_cbor()`: `citizens` ([stable id, operator key] pairs,
        bytes or hex), `follow_almanac` (the executor's business: checked for shape only)."""
        unknown = sorted(set(params) - _PARAM_KEYS)
        if unknown:
            raise OperatorError(f"component.{unknown[0]}: unknown key for an atlas")
        follow = params.get("follow_almanac")
        if follow is not None and not is_id(follow):
            raise OperatorError("component.follow_almanac: must be a 32-byte committee id")
        raw = params.get("citizens")
        if not isinstance(raw, list | tuple):
            raise OperatorError("component.citizens: required, a list of [stable id, "
                                "operator key] pairs")
        if len(raw) > MAX_CATALOGUE:
            raise OperatorError(f"component.citizens: more than {MAX_CATALOGUE} citizens")
        entries = []
        for row in raw:
            if not (isinstance(row, list | tuple) and len(row) == 2):
                raise OperatorError("component.citizens: each citizen is [stable id, "
                                    "operator key]")
            entries.append(CatalogueEntry(_param_bytes(row[0], ID_LEN, "stable id"),
                                          _param_bytes(row[1], PUBLIC_KEY_LEN, "operator key")))
        return cls(entries)

    def config_digest(self) -> bytes:
        # The catalogue is ordered (SPEC §3.1), so its order is part of the configuration.
        return hash_structure("atlas-config", SCHEMA, self.signature,
                              [[e.stable_id, e.operator_key] for e in self.catalogue])

    # -- commands ---------------------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        self._check(client, command)

    def _check(self, client: bytes, command: Command) -> CitizenCard | tuple[bytes, bytes | None]:
        """Stateless validity; returns the parsed card, or (citizen, replacement)."""
        args = command.args
        parsed: CitizenCard | tuple[bytes, bytes | None]
        if command.op == PUBLISH_OP:
            if set(args) != {"card"}:
                raise _bad_args(PUBLISH_OP, "args must be exactly {card}")
            parsed = CitizenCard.from_args(args["card"])
            citizen = parsed.citizen_id
        elif command.op == RETIRE_OP:
            if set(args) != {"citizen_id", "replacement"}:
                raise _bad_args(RETIRE_OP, "args must be exactly {citizen_id, replacement}")
            citizen, replacement = args["citizen_id"], args["replacement"]
            if not is_id(citizen):
                raise _bad_args(RETIRE_OP, f"citizen_id must be {ID_LEN} bytes")
            if replacement is not None and not is_id(replacement):
                raise _bad_args(RETIRE_OP, f"replacement must be {ID_LEN} bytes or null")
            if replacement == citizen:
                raise _bad_args(RETIRE_OP, "a citizen cannot be its own replacement")
            parsed = (citizen, replacement)
        else:
            raise InvalidCommand(f"unknown op {command.op!r} (an atlas accepts: {PUBLISH_OP}, "
                                 f"{RETIRE_OP})", reason="unknown_op")
        operator = self._operators.get(citizen)
        if operator is None:
            raise InvalidCommand(f"{command.op}: citizen {citizen.hex()} is not catalogued",
                                 reason="not_catalogued")
        if client != operator:
            raise InvalidCommand(f"{command.op}: client {client.hex()} is not the operator of "
                                 f"citizen {citizen.hex()}", reason="not_operator")
        return parsed

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for envelope in envelopes:
            for command in envelope.commands:
                results.append(self._apply_one(ctx, envelope.client, command))
        return results

    def _apply_one(self, ctx: BlockContext, client: bytes, command: Command) -> CommandResult:
        try:
            parsed = self._check(client, command)
        except InvalidCommand as exc:
            return Refused(exc.reason, str(exc))
        if isinstance(parsed, CitizenCard):
            existing = self._records.get(parsed.citizen_id)
            if existing is not None and existing.retired:
                return Refused("retired", f"{PUBLISH_OP}: the card of citizen "
                               f"{parsed.citizen_id.hex()} is retired and cannot be republished")
            record = CardRecord(parsed, False, None, ctx.height, ctx.tick)
        else:
            citizen, replacement = parsed
            existing = self._records.get(citizen)
            if existing is None:
                return Refused("no_card", f"{RETIRE_OP}: citizen {citizen.hex()} has no card "
                               "to retire")
            if existing.retired:
                return Refused("retired", f"{RETIRE_OP}: the card of citizen {citizen.hex()} "
                               "is already retired")
            record = CardRecord(existing.card, True, replacement, ctx.height, ctx.tick)
        if record.citizen_id not in self._records:
            self._order = []  # a new key: the sorted order changes
        self._records[record.citizen_id] = record
        self._tree = None
        seq = self._changes
        self._changes += 1
        return Applied(seq, (record.leaf(),))

    # -- commitment -------------------------------------------------------------------

    def _sorted_ids(self) -> list[bytes]:
        if len(self._order) != len(self._records):
            self._order = sorted(self._records)
        return self._order

    def _current_tree(self) -> MemoryTree:
        if self._tree is None:
            self._tree = MemoryTree([leaf_hash(self._records[k].leaf())
                                     for k in self._sorted_ids()])
        return self._tree

    def _root_preimage(self) -> list[Any]:
        return [STATE_TYPE, SCHEMA, len(self._records), self._changes,
                self._current_tree().root()]

    def state_root(self) -> bytes:
        return hash_structure(*self._root_preimage())

    # -- reads ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            return {"count": len(self._records), "catalogued": len(self.catalogue),
                    "changes": self._changes, "tree_root": self._current_tree().root(),
                    "state_root": self.state_root()}
        if name == "card":
            expect_args(name, args, {"citizen_id"})
            citizen = args["citizen_id"]
            if not is_id(citizen):
                raise QueryError(f"card: citizen_id must be {ID_LEN} bytes")
            if citizen not in self._operators:
                raise QueryNotFound(f"card: citizen {citizen.hex()} is not catalogued")
            record = self._records.get(citizen)
            if record is None:
                raise QueryNotFound(f"card: citizen {citizen.hex()} has no card")
            index = self._sorted_ids().index(citizen)
            leaf = record.leaf()
            return {"record": record.as_read(), "leaf": leaf,
                    "state_proof": state_proof(leaf, index, self._current_tree(),
                                               self._root_preimage())}
        if name == "cards":
            expect_args(name, args, set(), {"after", "limit"})
            after = args.get("after")
            if after is not None and not is_id(after):
                raise QueryError(f"cards: after must be {ID_LEN} bytes or null")
            page, following = after_page(self._sorted_ids(), after,
                                         limit_arg(name, args, MAX_QUERY_CARDS))
            return {"cards": [self._records[k].as_read() for k in page],
                    "next": following, "count": len(self._records)}
        if name == "changes":
            expect_args(name, args, {"since_height"}, {"after", "limit"})
            since = uint_arg(name, args, "since_height")
            after = args.get("after", _PAST_EVERY_ID)
            if not is_id(after):
                raise QueryError(f"changes: after must be {ID_LEN} bytes")
            limit = limit_arg(name, args, MAX_QUERY_CARDS)
            cursor = (since, after)
            found = sorted((r.changed_height, r.citizen_id) for r in self._records.values()
                           if (r.changed_height, r.citizen_id) > cursor)
            changed = found[:limit]
            more = len(found) > limit
            return {"cards": [self._records[k].as_read() for _, k in changed],
                    "next": ({"since_height": changed[-1][0], "after": changed[-1][1]} if more
                             else None)}
        raise QueryError(f"unknown atlas query {name!r} (known: card, cards, changes, head)")

    # -- snapshot ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _SNAPSHOT.encode(self._changes,
                                [self._records[k].leaf() for k in self._sorted_ids()])

    def restore(self, data: bytes) -> None:
        _SNAPSHOT.restore(self, data, self._state_from_snapshot)

    def _state_from_snapshot(self, fields: list[Any]) -> dict[str, Any]:
        changes, rows = fields
        if len(rows) > len(self.catalogue):
            raise _SNAPSHOT.error(f"{len(rows)} cards for a catalogue of {len(self.catalogue)}")
        records: dict[bytes, CardRecord] = {}
        previous = b""
        for i, row in enumerate(rows):
            record = self._record_from_snapshot(i, row)
            if record.citizen_id <= previous:
                raise _SNAPSHOT.error(f"card {i}: citizen ids are not strictly ascending")
            previous = record.citizen_id
            records[record.citizen_id] = record
        # Every record is the result of at least one change.
        if not (is_uint(changes) and changes >= len(records)):
            raise _SNAPSHOT.error("change count must be an unsigned integer at least the "
                                  "number of cards")
        return {"_records": records, "_changes": changes, "_order": [], "_tree": None}

    def _record_from_snapshot(self, i: int, data: Any) -> CardRecord:
        def bad(what: str) -> MalformedSnapshot:
            return _SNAPSHOT.error(f"card {i}: {what}")

        if not isinstance(data, bytes):
            raise bad("expected a byte string")
        try:
            obj = decode(data, max_size=MAX_LEAF_BYTES)
        except EncodingError as exc:
            raise bad(str(exc)) from None
        if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], list)
                and len(obj[1]) == 7):
            raise bad(f"expected [citizen_id, [\"{RECORD_TYPE}\", {SCHEMA}, …7 items]]")
        citizen, (tag, schema, card_wire, retired, replacement, height, tick) = obj
        if tag != RECORD_TYPE or schema != SCHEMA or isinstance(schema, bool):
            raise bad("wrong record type tag or schema")
        try:
            card = CitizenCard.from_wire(card_wire)
        except InvalidCommand as exc:
            raise bad(str(exc)) from None
        if citizen != card.citizen_id:
            raise bad("the key is not the card's citizen id")
        if citizen not in self._operators:
            raise bad(f"citizen {citizen.hex()} is not catalogued")
        if not isinstance(retired, bool):
            raise bad("retired must be a boolean")
        if replacement is not None and not (retired and is_id(replacement)
                                            and replacement != citizen):
            raise bad("replacement must be null, or another 32-byte id of a retired card")
        if not (is_uint(height) and height >= 1):
            raise bad("changed_height must be an integer >= 1")
        if tick is not None and not is_uint(tick):
            raise bad("changed_tick must be an unsigned integer or null")
        record = CardRecord(card, retired, replacement, height, tick)
        if record.leaf() != data:
            raise bad("not the canonical encoding of its record")
        return record


# ---------------------------------------------------------------------------------------
# Client helpers


def publish_card(card: CitizenCard) -> Command:
    return Command(PUBLISH_OP, {"card": card.to_args()})


def retire_card(citizen_id: bytes, replacement: bytes | None = None) -> Command:
    return Command(RETIRE_OP, {"citizen_id": citizen_id, "replacement": replacement})


def demo_card(stable_id: bytes, round: int) -> CitizenCard:
    """The card a demo operator publishes in round `round`: a bumped metadata counter."""
    return CitizenCard(stable_id, "demo", (f"demo://{stable_id.hex()[:16]}",), None, (), 1,
                       (("round", str(round)),))


def demo_commands(catalogue_keys: Sequence[SigningKey], stable_ids: Sequence[bytes],
                  round: int) -> list[tuple[SigningKey, list[Command]]]:
    """Valid commands for round `round` of the demo workload (`coalitiond devnet --component
    atlas`): every catalogued citizen's operator republishes its card with metadata
    `round = str(round)`. Key i operates citizen i, or one key operates them all; the result
    has one (key, commands) pair per distinct key, in the order keys first appear."""
    if len(catalogue_keys) not in (1, len(stable_ids)):
        raise LocalError("demo_commands: give one key per citizen, or one key for all")
    if round < 0:
        raise LocalError("demo_commands: round must be >= 0")
    by_key: dict[bytes, tuple[SigningKey, list[Command]]] = {}
    for i, sid in enumerate(stable_ids):
        key = catalogue_keys[0] if len(catalogue_keys) == 1 else catalogue_keys[i]
        by_key.setdefault(key.public, (key, []))[1].append(publish_card(demo_card(sid, round)))
    return list(by_key.values())
