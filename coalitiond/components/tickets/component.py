"""The `tickets` component (SPEC §3.5): the coalition's optional ticket issuer.

A ticket says "the issuer vouches that `subject` holds `class`, with `claims`, between
`not_before` and `expires` (unix seconds)". The issuer committee commits tickets; anyone can
check that one was issued from the block that carries it and the block's finalization
certificate (`verify_issued_ticket`), with nothing but the issuer committee's public config.

Parameters (`config.TicketsConfig.to_cbor()`): `issuers` (the client keys allowed to issue
and revoke), `max_claims_bytes`, `max_lifetime_s`.

Commands: `issue {class, subject, claims, not_before, expires}` and `revoke {ticket_id}`, both
only from an issuer key.

    ticket    = ["ticket", 1, class, subject, claims, not_before, expires]
    ticket_id = blake3(encode(ticket))
    record    = ["ticket-record", 1, ticket, issuer, issued_height, envelope_id,
                 revoked_height | null]

State root: `hash_structure("tickets-state", 1, count, revoked, events, tree_root)`, where
`tree_root` is the RFC 6962 root over `encode([ticket_id, record])` in ascending ticket id
order. Every accepted command produces one log entry (the new leaf) indexed by the event
counter. Reads: `head`, `ticket {ticket_id}` (with a `state_proof`), `tickets {after?,
limit?}`. Snapshot: `["tickets-snapshot", 1, events, [leaf…]]`. docs/tickets.md has the rest.
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
from ...primitives.identity import ID_LEN, digest, hash_structure
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
from ..paging import after_page, limit_arg
from ..snapshot import SnapshotFormat, any_value, is_list

KIND: Final = "tickets"
TICKET_TYPE: Final = "ticket"
RECORD_TYPE: Final = "ticket-record"
STATE_TYPE: Final = "tickets-state"
SNAPSHOT_TYPE: Final = "tickets-snapshot"
SCHEMA: Final = 1

ISSUE_OP: Final = "issue"
REVOKE_OP: Final = "revoke"
TICKET_FIELDS: Final = ("class", "subject", "claims", "not_before", "expires")

#: Issuer keys (one per operator of the issuer, plus rotation overlap).
MAX_ISSUERS: Final = 64
#: Ticket classes are short lowercase labels ("member", "reader.v1", "acme:builder").
MAX_CLASS_LEN: Final = 64
_CLASS_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:-]*")
MAX_CLAIMS_KEYS: Final = 32
MAX_CLAIM_KEY_LEN: Final = 64
#: Encoded `claims` bound (parameter `max_claims_bytes`); the maximum leaves room for the rest
#: of the envelope.
DEFAULT_MAX_CLAIMS_BYTES: Final = 4096
MAX_CLAIMS_BYTES: Final = MAX_COMMAND_SIZE // 2
#: Longest validity `expires - not_before` (parameter `max_lifetime_s`).
DEFAULT_MAX_LIFETIME_S: Final = 30 * 86_400
MAX_LIFETIME_S: Final = 10 * 366 * 86_400
#: Times are unix seconds in a signed 64-bit range (no ticket starts before 1970).
MAX_TIME: Final = (1 << 63) - 1
#: Tickets are kept until this many are held; past it `issue` is refused ("full").
MAX_TICKETS: Final = 100_000
MAX_QUERY_TICKETS: Final = 64
MAX_LEAF_BYTES: Final = MAX_COMMAND_SIZE + 512
MAX_SNAPSHOT_SIZE: Final = 1 << 31

_PARAM_KEYS: Final = frozenset({"issuers", "max_claims_bytes", "max_lifetime_s"})
_SNAPSHOT: Final = SnapshotFormat("tickets", SNAPSHOT_TYPE, SCHEMA, (any_value, is_list),
                                  f'["{SNAPSHOT_TYPE}", {SCHEMA}, events, [leaf…]]',
                                  max_size=MAX_SNAPSHOT_SIZE)


def _bad_args(op: str, detail: str) -> InvalidCommand:
    return InvalidCommand(f"{op}: {detail}", reason="bad_args")


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket. `claims` is kept encoded, so a ticket is immutable and hashable."""

    ticket_class: str
    subject: bytes
    claims_cbor: bytes
    not_before: int
    expires: int

    @property
    def claims(self) -> dict[str, Any]:
        """A fresh copy of the claims map (readers cannot alias the state)."""
        value: dict[str, Any] = decode(self.claims_cbor)
        return value

    def to_wire(self) -> list[Any]:
        return [TICKET_TYPE, SCHEMA, self.ticket_class, self.subject, self.claims,
                self.not_before, self.expires]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @property
    def ticket_id(self) -> bytes:
        return digest(self.encode())

    def to_args(self) -> dict[str, Any]:
        """The `issue` command's arguments (and the map form reads return)."""
        return {"class": self.ticket_class, "subject": self.subject, "claims": self.claims,
                "not_before": self.not_before, "expires": self.expires}

    @classmethod
    def make(cls, ticket_class: str, subject: bytes, claims: Mapping[str, Any],
             not_before: int, expires: int) -> Ticket:
        return cls(ticket_class, subject, encode(dict(claims)), not_before, expires)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], *, max_claims_bytes: int = MAX_CLAIMS_BYTES,
                  max_lifetime_s: int = MAX_LIFETIME_S) -> Ticket:
        """Validate the map form completely; InvalidCommand (bad_args/too_large) otherwise."""
        if set(args) != set(TICKET_FIELDS):
            raise _bad_args(ISSUE_OP, f"args must be exactly {{{', '.join(TICKET_FIELDS)}}}")
        ticket_class, subject, claims = args["class"], args["subject"], args["claims"]
        not_before, expires = args["not_before"], args["expires"]
        if not (isinstance(ticket_class, str) and len(ticket_class) <= MAX_CLASS_LEN
                and _CLASS_RE.fullmatch(ticket_class)):
            raise _bad_args(ISSUE_OP, f"class must match [a-z0-9][a-z0-9._:-]* and be at most "
                            f"{MAX_CLASS_LEN} chars")
        if not (isinstance(subject, bytes) and len(subject) == PUBLIC_KEY_LEN):
            raise _bad_args(ISSUE_OP, f"subject must be a {PUBLIC_KEY_LEN}-byte peer id")
        if not isinstance(claims, dict):
            raise _bad_args(ISSUE_OP, "claims must be a map with text keys")
        if len(claims) > MAX_CLAIMS_KEYS:
            raise InvalidCommand(f"{ISSUE_OP}: claims has more than {MAX_CLAIMS_KEYS} keys",
                                 reason="too_large")
        if not all(isinstance(k, str) and 0 < len(k) <= MAX_CLAIM_KEY_LEN for k in claims):
            raise _bad_args(ISSUE_OP, f"claims keys must be text of 1..{MAX_CLAIM_KEY_LEN} chars")
        claims_cbor = encode(claims)
        if len(claims_cbor) > max_claims_bytes:
            raise InvalidCommand(f"{ISSUE_OP}: claims of {len(claims_cbor)} bytes exceed "
                                 f"{max_claims_bytes}", reason="too_large")
        if not (is_uint(not_before) and is_uint(expires) and expires <= MAX_TIME):
            raise _bad_args(ISSUE_OP, f"not_before and expires must be unix seconds "
                            f"0..{MAX_TIME}")
        if expires <= not_before:
            raise _bad_args(ISSUE_OP, "expires must be after not_before")
        if expires - not_before > max_lifetime_s:
            raise _bad_args(ISSUE_OP, f"lifetime of {expires - not_before} s exceeds "
                            f"{max_lifetime_s} s")
        return cls(ticket_class, subject, claims_cbor, not_before, expires)


@dataclass(frozen=True, slots=True)
class TicketRecord:
    ticket: Ticket
    issuer: bytes
    issued_height: int
    #: The envelope that issued it: with the height, where the issuer's log holds the proof.
    envelope_id: bytes
    revoked_height: int | None

    def to_wire(self) -> list[Any]:
        return [RECORD_TYPE, SCHEMA, self.ticket.to_wire(), self.issuer, self.issued_height,
                self.envelope_id, self.revoked_height]

    def leaf(self) -> bytes:
        return encode([self.ticket.ticket_id, self.to_wire()])

    def as_read(self) -> dict[str, Any]:
        return {"ticket_id": self.ticket.ticket_id, "ticket": self.ticket.to_args(),
                "issuer": self.issuer, "issued_height": self.issued_height,
                "envelope_id": self.envelope_id, "revoked": self.revoked_height is not None,
                "revoked_height": self.revoked_height}


def _issuer_keys(raw: Any) -> list[bytes]:
    if not isinstance(raw, list | tuple):
        raise OperatorError("component.issuers: required, a list of client keys")
    keys = []
    for k in raw:
        if isinstance(k, str):
            try:
                k = bytes.fromhex(k)
            except ValueError:
                raise OperatorError(f"component.issuers: {k!r} is not hex") from None
        keys.append(k)
    return keys


@register
class Tickets(Component):
    kind = KIND
    signature = "tickets/1"

    def __init__(self, issuers: Sequence[bytes], max_claims_bytes: int = DEFAULT_MAX_CLAIMS_BYTES,
                 max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S) -> None:
        # Zero issuers is allowed: `coalitiond init` writes a loadable config before the
        # operator has chosen keys, and such a committee simply issues nothing.
        if len(issuers) > MAX_ISSUERS:
            raise OperatorError(f"component.issuers: more than {MAX_ISSUERS} keys")
        if len(set(issuers)) != len(issuers):
            raise OperatorError("component.issuers: a key is listed twice")
        for key in issuers:
            if not (isinstance(key, bytes) and len(key) == PUBLIC_KEY_LEN):
                raise OperatorError(
                    f"component.issuers: keys must be {PUBLIC_KEY_LEN} bytes (64 hex chars)")
        if not (is_uint(max_claims_bytes) and 0 < max_claims_bytes <= MAX_CLAIMS_BYTES):
            raise OperatorError(f"component.max_claims_bytes: must be 1..{MAX_CLAIMS_BYTES}")
        if not (is_uint(max_lifetime_s) and 0 < max_lifetime_s <= MAX_LIFETIME_S):
            raise OperatorError(f"component.max_lifetime_s: must be 1..{MAX_LIFETIME_S}")
        self.issuers: tuple[bytes, ...] = tuple(issuers)
        self.max_claims_bytes = max_claims_bytes
        self.max_lifetime_s = max_lifetime_s
        self._issuer_set = frozenset(issuers)
        self._records: dict[bytes, TicketRecord] = {}
        #: Leaf hash per ticket id, so a rebuild hashes only what changed.
        self._leaf_hashes: dict[bytes, bytes] = {}
        self._revoked = 0
        self._events = 0
        self._tree: MemoryTree | None = None
        self._order: list[bytes] = []

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Tickets:
        """From `config.TicketsConfig.to_cbor()`: `issuers` (32-byte keys or hex), optional
        `max_claims_bytes` and `max_lifetime_s`."""
        unknown = sorted(set(params) - _PARAM_KEYS)
        if unknown:
            raise OperatorError(f"component.{unknown[0]}: unknown key for a ticket issuer")
        return cls(_issuer_keys(params.get("issuers")),
                   params.get("max_claims_bytes", DEFAULT_MAX_CLAIMS_BYTES),
                   params.get("max_lifetime_s", DEFAULT_MAX_LIFETIME_S))

    def config_digest(self) -> bytes:
        return hash_structure("tickets-config", SCHEMA, self.signature, sorted(self.issuers),
                              self.max_claims_bytes, self.max_lifetime_s)

    # -- commands ---------------------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        self._check(client, command)

    def _check(self, client: bytes, command: Command) -> Ticket | bytes:
        """Stateless validity; returns the ticket to issue or the ticket id to revoke."""
        parsed: Ticket | bytes
        if command.op == ISSUE_OP:
            parsed = Ticket.from_args(command.args, max_claims_bytes=self.max_claims_bytes,
                                      max_lifetime_s=self.max_lifetime_s)
        elif command.op == REVOKE_OP:
            if set(command.args) != {"ticket_id"}:
                raise _bad_args(REVOKE_OP, "args must be exactly {ticket_id}")
            parsed = command.args["ticket_id"]
            if not is_id(parsed):
                raise _bad_args(REVOKE_OP, f"ticket_id must be {ID_LEN} bytes")
        else:
            raise InvalidCommand(f"unknown op {command.op!r} (a ticket issuer accepts: "
                                 f"{ISSUE_OP}, {REVOKE_OP})", reason="unknown_op")
        if client not in self._issuer_set:
            raise InvalidCommand(f"{command.op}: client {client.hex()} is not an issuer of this "
                                 "committee", reason="not_issuer")
        return parsed

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for envelope in envelopes:
            for command in envelope.commands:
                results.append(self._apply_one(ctx, envelope, command))
        return results

    def _apply_one(self, ctx: BlockContext, envelope: Envelope,
                   command: Command) -> CommandResult:
        try:
            parsed = self._check(envelope.client, command)
        except InvalidCommand as exc:
            return Refused(exc.reason, str(exc))
        if isinstance(parsed, Ticket):
            ticket_id = parsed.ticket_id
            if ticket_id in self._records:
                return Refused("already_issued", f"{ISSUE_OP}: ticket {ticket_id.hex()} is "
                               "already issued (change a field to issue a new one)")
            if len(self._records) >= MAX_TICKETS:
                return Refused("full", f"{ISSUE_OP}: the issuer holds its maximum of "
                               f"{MAX_TICKETS} tickets")
            record = TicketRecord(parsed, envelope.client, ctx.height, envelope.envelope_id,
                                  None)
            self._order = []  # a new key: the sorted order changes
        else:
            ticket_id = parsed
            existing = self._records.get(ticket_id)
            if existing is None:
                return Refused("unknown_ticket", f"{REVOKE_OP}: no ticket {ticket_id.hex()}")
            if existing.revoked_height is not None:
                return Refused("already_revoked", f"{REVOKE_OP}: ticket {ticket_id.hex()} was "
                               f"revoked at height {existing.revoked_height}")
            record = TicketRecord(existing.ticket, existing.issuer, existing.issued_height,
                                  existing.envelope_id, ctx.height)
            self._revoked += 1
        leaf = record.leaf()
        self._records[ticket_id] = record
        self._leaf_hashes[ticket_id] = leaf_hash(leaf)
        self._tree = None
        seq = self._events
        self._events += 1
        return Applied(seq, (leaf,))

    # -- commitment -------------------------------------------------------------------

    def record(self, ticket_id: bytes) -> TicketRecord | None:
        return self._records.get(ticket_id)

    def records(self) -> list[tuple[bytes, TicketRecord]]:
        """Every (ticket id, record), in ticket id order."""
        return [(k, self._records[k]) for k in self._sorted_ids()]

    def _sorted_ids(self) -> list[bytes]:
        if len(self._order) != len(self._records):
            self._order = sorted(self._records)
        return self._order

    def _current_tree(self) -> MemoryTree:
        if self._tree is None:
            self._tree = MemoryTree([self._leaf_hashes[k] for k in self._sorted_ids()])
        return self._tree

    def _root_preimage(self) -> list[Any]:
        return [STATE_TYPE, SCHEMA, len(self._records), self._revoked, self._events,
                self._current_tree().root()]

    def state_root(self) -> bytes:
        return hash_structure(*self._root_preimage())

    # -- reads ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            return {"count": len(self._records), "revoked": self._revoked,
                    "events": self._events, "tree_root": self._current_tree().root(),
                    "state_root": self.state_root()}
        if name == "ticket":
            expect_args(name, args, {"ticket_id"})
            ticket_id = args["ticket_id"]
            if not is_id(ticket_id):
                raise QueryError(f"ticket: ticket_id must be {ID_LEN} bytes")
            record = self._records.get(ticket_id)
            if record is None:
                raise QueryNotFound(f"ticket: no ticket {ticket_id.hex()}")
            index = self._sorted_ids().index(ticket_id)
            leaf = record.leaf()
            return {"record": record.as_read(), "leaf": leaf,
                    "state_proof": state_proof(leaf, index, self._current_tree(),
                                               self._root_preimage())}
        if name == "tickets":
            expect_args(name, args, set(), {"after", "limit"})
            after = args.get("after")
            if after is not None and not is_id(after):
                raise QueryError(f"tickets: after must be {ID_LEN} bytes or null")
            page, following = after_page(self._sorted_ids(), after,
                                         limit_arg(name, args, MAX_QUERY_TICKETS))
            return {"tickets": [self._records[k].as_read() for k in page],
                    "next": following, "count": len(self._records)}
        raise QueryError(f"unknown tickets query {name!r} (known: head, ticket, tickets)")

    # -- snapshot ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _SNAPSHOT.encode(self._events,
                                [self._records[k].leaf() for k in self._sorted_ids()])

    def restore(self, data: bytes) -> None:
        _SNAPSHOT.restore(self, data, self._state_from_snapshot)

    def _state_from_snapshot(self, fields: list[Any]) -> dict[str, Any]:
        events, rows = fields
        if len(rows) > MAX_TICKETS:
            raise _SNAPSHOT.error(f"more than {MAX_TICKETS} tickets")
        records: dict[bytes, TicketRecord] = {}
        hashes: dict[bytes, bytes] = {}
        previous = b""
        revoked = 0
        for i, row in enumerate(rows):
            ticket_id, record = self._record_from_snapshot(i, row)
            if ticket_id <= previous:
                raise _SNAPSHOT.error(f"ticket {i}: ticket ids are not strictly ascending")
            previous = ticket_id
            records[ticket_id] = record
            hashes[ticket_id] = leaf_hash(row)
            revoked += record.revoked_height is not None
        # Every ticket took one event to issue and one more to revoke.
        if not (is_uint(events) and events >= len(records) + revoked):
            raise _SNAPSHOT.error("event count must be an unsigned integer at least tickets + "
                                  "revocations")
        return {"_records": records, "_leaf_hashes": hashes, "_revoked": revoked,
                "_events": events, "_order": [], "_tree": None}

    def _record_from_snapshot(self, i: int, data: Any) -> tuple[bytes, TicketRecord]:
        def bad(what: str) -> MalformedSnapshot:
            return _SNAPSHOT.error(f"ticket {i}: {what}")

        if not isinstance(data, bytes):
            raise bad("expected a byte string")
        try:
            obj = decode(data, max_size=MAX_LEAF_BYTES)
        except EncodingError as exc:
            raise bad(str(exc)) from None
        if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], list)
                and len(obj[1]) == 7):
            raise bad(f"expected [ticket_id, [\"{RECORD_TYPE}\", {SCHEMA}, …7 items]]")
        ticket_id, (tag, schema, wire, issuer, height, envelope_id, revoked) = obj
        if tag != RECORD_TYPE or schema != SCHEMA or isinstance(schema, bool):
            raise bad("wrong record type tag or schema")
        if not (isinstance(wire, list) and len(wire) == 7 and wire[0] == TICKET_TYPE
                and wire[1] == SCHEMA and not isinstance(wire[1], bool)):
            raise bad(f"expected a [\"{TICKET_TYPE}\", {SCHEMA}, …7 items] ticket")
        try:
            ticket = Ticket.from_args(dict(zip(TICKET_FIELDS, wire[2:], strict=True)),
                                      max_claims_bytes=self.max_claims_bytes,
                                      max_lifetime_s=self.max_lifetime_s)
        except InvalidCommand as exc:
            raise bad(str(exc)) from None
        if issuer not in self._issuer_set:
            raise bad("issued by a key that is not an issuer of this committee")
        if not (is_uint(height) and height >= 1 and is_id(envelope_id)):
            raise bad("issued_height must be >= 1 and envelope_id 32 bytes")
        if revoked is not None and not (is_uint(revoked) and revoked >= height):
            raise bad("revoked_height must be null or at least issued_height")
        record = TicketRecord(ticket, issuer, height, envelope_id, revoked)
        if ticket_id != ticket.ticket_id or record.leaf() != data:
            raise bad("not the canonical encoding of its record (or a wrong ticket id)")
        return ticket_id, record


# ---------------------------------------------------------------------------------------
# Client helpers


def issue(ticket: Ticket) -> Command:
    return Command(ISSUE_OP, ticket.to_args())


def revoke(ticket_id: bytes) -> Command:
    return Command(REVOKE_OP, {"ticket_id": ticket_id})
