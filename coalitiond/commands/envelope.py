"""Signed client command envelopes and the committee's client ACL (DESIGN §2.5).

A client signs one *envelope* holding one or more commands. Every member checks every client
signature before it votes for a block, so one signature per envelope (not per command) is what
lets a committee carry more commands per second than it can verify signatures.

Wire format (deterministic CBOR, see docs/components.md for the byte layout):

    envelope = ["envelope", 1, committee_id, client, nonce, [[op, args], ...], signature]
    signed   = ["envelope", 1, committee_id, client, nonce, [[op, args], ...]]
    signature = ed25519(client, "coalitiond/client-envelope/v1" ‖ 0x00 ‖ encode(signed))

Naming the committee id inside the signed bytes is what stops an envelope meant for one
committee from being replayed into another. The nonce is what deduplication works on
(`coalitiond.commands.dedup`); this module is stateless.

`check_envelope` is the stateless admission check every member runs before voting and the
executor runs again before applying: size, structure, committee, ACL, signature, in that order
(cheapest first, so junk and strangers never cost a signature verification). Each refusal is a
`CommandRefused` subclass carrying a stable `reason` code for the submitter and a one-line
message for humans.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..consensus.types import MAX_COMMAND_SIZE
from ..primitives.crypto import PUBLIC_KEY_LEN, SIGNATURE_LEN, SigningKey, is_valid
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError, OperatorError, RemoteError
from ..primitives.identity import ID_LEN, digest, hash_structure

ENVELOPE_TAG: Final = b"coalitiond/client-envelope/v1"
ENVELOPE_TYPE: Final = "envelope"
ENVELOPE_SCHEMA: Final = 1

#: One envelope travels as one command of a block, so the block's per-command bound is ours.
MAX_ENVELOPE_SIZE: Final = MAX_COMMAND_SIZE
#: Enough to amortise a signature over hundreds of commands; small enough that one bad
#: envelope cannot make a member do unbounded work before it is refused.
MAX_COMMANDS_PER_ENVELOPE: Final = 1024
#: Operation names are short identifiers: `[a-z][a-z0-9_]*`.
MAX_OP_LEN: Final = 32
#: Arguments are a flat map from short text keys to CBOR values.
MAX_ARGS_KEYS: Final = 32
MAX_ARG_KEY_LEN: Final = 64
#: Nonces are CBOR unsigned integers, 1 … 2^64 − 1 (0 is reserved for "none yet").
MIN_NONCE: Final = 1
MAX_NONCE: Final = (1 << 64) - 1
#: Bound on the allow-list so the per-client dedup state (one entry per admitted client) is
#: bounded too.
MAX_ACL_CLIENTS: Final = 10_000

_OP_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
# The encoded signature is the last item: a byte-string head 0x58 0x40 then 64 bytes.
_SIG_ITEM_LEN: Final = 2 + SIGNATURE_LEN


# ---------------------------------------------------------------------------------------
# Refusals


class CommandRefused(RemoteError):
    """A client command or envelope is refused. `reason` is a stable code for the submitter;
    `str(err)` is a one-line explanation."""

    reason: str = "refused"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        if reason is not None:
            self.reason = reason


class EnvelopeTooLarge(CommandRefused):
    reason = "too_large"


class MalformedEnvelope(CommandRefused):
    reason = "malformed"


class WrongCommittee(CommandRefused):
    reason = "wrong_committee"


class NotAdmitted(CommandRefused):
    reason = "not_admitted"


class BadSignature(CommandRefused):
    reason = "bad_signature"


class ReplayedNonce(CommandRefused):
    reason = "replayed_nonce"


class NonceBelowWindow(CommandRefused):
    reason = "nonce_below_window"


class InvalidCommand(CommandRefused):
    """The component refuses one command (stateless check or at apply time)."""

    reason = "invalid_command"


# ---------------------------------------------------------------------------------------
# Commands and envelopes


@dataclass(frozen=True, slots=True)
class Command:
    """One operation for the component: `op` names it, `args` is a map of text keys.

    `args` must not be mutated after construction (it is part of signed bytes).
    """

    op: str
    args: Mapping[str, Any]

    def to_wire(self) -> list[Any]:
        return [self.op, dict(self.args)]


def _malformed(what: str) -> MalformedEnvelope:
    return MalformedEnvelope(f"malformed envelope: {what}")


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _command_from_wire(i: int, obj: Any) -> Command:
    # Hot path (every command of every envelope, before voting): messages are only
    # formatted on refusal.
    if not (isinstance(obj, list) and len(obj) == 2):
        raise _malformed(f"command {i} must be a 2-item array [op, args]")
    op, args = obj
    if not (isinstance(op, str) and len(op) <= MAX_OP_LEN and _OP_RE.fullmatch(op)):
        raise _malformed(
            f"command {i}: op must match [a-z][a-z0-9_]* and be at most {MAX_OP_LEN} chars")
    if not isinstance(args, dict):
        raise _malformed(f"command {i}: args must be a map")
    if len(args) > MAX_ARGS_KEYS:
        raise _malformed(f"command {i}: args has more than {MAX_ARGS_KEYS} keys")
    # Text keys only: a map mixing key types is where RFC 7049 and RFC 8949 orderings
    # disagree (DESIGN §2.2), so we never let one into signed bytes.
    for key in args:
        if not (isinstance(key, str) and 0 < len(key) <= MAX_ARG_KEY_LEN):
            raise _malformed(f"command {i}: args keys must be text of 1..{MAX_ARG_KEY_LEN} chars")
    return Command(op, args)


def signed_payload(committee_id: bytes, client: bytes, nonce: int,
                   commands: Sequence[Command]) -> bytes:
    """The bytes the client signs (under ENVELOPE_TAG)."""
    return encode([ENVELOPE_TYPE, ENVELOPE_SCHEMA, committee_id, client, nonce,
                   [c.to_wire() for c in commands]])


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope. `envelope_id` names what the client signed (blake3 of the signed
    payload, signature excluded), so it is what a submitter tracks its outcome by."""

    committee_id: bytes
    client: bytes
    nonce: int
    commands: tuple[Command, ...]
    signature: bytes
    envelope_id: bytes = field(compare=False, repr=False)
    payload: bytes = field(compare=False, repr=False)
    raw: bytes = field(compare=False, repr=False)

    @classmethod
    def sign(cls, key: SigningKey, committee_id: bytes, nonce: int,
             commands: Sequence[Command]) -> Envelope:
        if len(committee_id) != ID_LEN:
            raise LocalError(f"committee id must be {ID_LEN} bytes")
        if not MIN_NONCE <= nonce <= MAX_NONCE:
            raise LocalError(f"nonce {nonce} outside {MIN_NONCE}..{MAX_NONCE}")
        if not 0 < len(commands) <= MAX_COMMANDS_PER_ENVELOPE:
            raise LocalError(f"an envelope holds 1..{MAX_COMMANDS_PER_ENVELOPE} commands")
        payload = signed_payload(committee_id, key.public, nonce, commands)
        signature = key.sign(ENVELOPE_TAG, payload)
        raw = encode([ENVELOPE_TYPE, ENVELOPE_SCHEMA, committee_id, key.public, nonce,
                      [c.to_wire() for c in commands], signature])
        if len(raw) > MAX_ENVELOPE_SIZE:
            raise LocalError(f"envelope of {len(raw)} bytes exceeds {MAX_ENVELOPE_SIZE}")
        # Round-trip through the decoder so a signed envelope is exactly what members see.
        return cls.decode(raw)

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Structure only: no committee, ACL or signature check (see `check_envelope`)."""
        if len(data) > MAX_ENVELOPE_SIZE:
            raise EnvelopeTooLarge(
                f"envelope of {len(data)} bytes exceeds the limit of {MAX_ENVELOPE_SIZE}")
        try:
            obj = decode(data, max_size=MAX_ENVELOPE_SIZE)
        except EncodingError as exc:
            raise MalformedEnvelope(f"malformed envelope: {exc}") from None
        if not (isinstance(obj, list) and len(obj) == 7):
            raise _malformed("expected a 7-item array")
        tag, schema, committee_id, client, nonce, commands, signature = obj
        if tag != ENVELOPE_TYPE:
            raise _malformed("wrong type tag")
        if not (schema == ENVELOPE_SCHEMA and _is_uint(schema)):
            raise _malformed(f"unsupported schema {schema!r} (this member speaks "
                             f"{ENVELOPE_SCHEMA})")
        if not (isinstance(committee_id, bytes) and len(committee_id) == ID_LEN):
            raise _malformed(f"committee id must be {ID_LEN} bytes")
        if not (isinstance(client, bytes) and len(client) == PUBLIC_KEY_LEN):
            raise _malformed(f"client key must be {PUBLIC_KEY_LEN} bytes")
        if not (_is_uint(nonce) and nonce >= MIN_NONCE):
            raise _malformed(f"nonce must be an integer >= {MIN_NONCE}")
        if not (isinstance(commands, list) and 0 < len(commands) <= MAX_COMMANDS_PER_ENVELOPE):
            raise _malformed(f"commands must be an array of 1..{MAX_COMMANDS_PER_ENVELOPE} items")
        if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_LEN):
            raise _malformed(f"signature must be {SIGNATURE_LEN} bytes")
        parsed = tuple(_command_from_wire(i, c) for i, c in enumerate(commands))
        raw = bytes(data)
        # The decoder accepted only canonical bytes, so the 7-item array is 0x87, the six
        # signed items, then the signature item (0x58 0x40 + 64 bytes). The signed payload is
        # the same items under a 6-item head: slice instead of re-encoding every command.
        payload = b"\x86" + raw[1:-_SIG_ITEM_LEN]
        return cls(committee_id, client, nonce, parsed, signature, digest(payload), payload, raw)

    def verify_signature(self) -> None:
        if not is_valid(self.client, ENVELOPE_TAG, self.payload, self.signature):
            raise BadSignature(
                f"envelope signature does not verify for client {self.client.hex()}")


# ---------------------------------------------------------------------------------------
# ACL


@dataclass(frozen=True, slots=True)
class Acl:
    """Which clients a committee admits commands from.

    An allow-list of ed25519 client keys, and the roots of recognised ticket issuers (SPEC
    §3.5). A ticket's subject is admitted once the committee has committed it to its
    replicated set of ticket-admitted clients (`Executor.ticket_clients`, kept current by the
    members' `TicketFollower`s): admission stays a pure function of the envelope, this ACL
    and that set.
    """

    clients: frozenset[bytes]
    ticket_issuers: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        if len(self.clients) > MAX_ACL_CLIENTS:
            raise OperatorError(
                f"ACL lists {len(self.clients)} client keys, the limit is {MAX_ACL_CLIENTS}")
        for key in self.clients:
            if len(key) != PUBLIC_KEY_LEN:
                raise OperatorError(
                    f"ACL client key must be {PUBLIC_KEY_LEN} bytes, got {len(key)}")
        for root in self.ticket_issuers:
            if len(root) != ID_LEN:
                raise OperatorError(f"ACL ticket issuer root must be {ID_LEN} bytes")

    @classmethod
    def allow(cls, keys: Iterable[bytes], ticket_issuers: Iterable[bytes] = ()) -> Acl:
        return cls(frozenset(keys), frozenset(ticket_issuers))

    @classmethod
    def from_hex(cls, keys: Iterable[str]) -> Acl:
        out = []
        for k in keys:
            try:
                out.append(bytes.fromhex(k))
            except ValueError:
                raise OperatorError(f"ACL client key {k!r} is not hex") from None
        return cls(frozenset(out))

    def admit(self, envelope: Envelope, ticket_clients: Container[bytes] = ()) -> None:
        """`ticket_clients`: the clients the committee admitted by ticket (its state)."""
        if envelope.client in self.clients:
            return
        if self.ticket_issuers and envelope.client in ticket_clients:
            return
        raise NotAdmitted(f"client {envelope.client.hex()} is not admitted by this "
                          "committee's ACL" + (" (no valid ticket from a recognised issuer "
                                                "has been admitted for it)"
                                                if self.ticket_issuers else ""))

    def digest(self) -> bytes:
        """Folded into the committee's component-config digest, so members with different
        ACLs never form a quorum together."""
        return hash_structure("acl", 1, sorted(self.clients), sorted(self.ticket_issuers))


# ---------------------------------------------------------------------------------------
# The stateless check


def check_envelope(committee_id: bytes, acl: Acl, data: bytes,
                   ticket_clients: Container[bytes] = ()) -> Envelope:
    """Admit `data` as an envelope for this committee, or raise a `CommandRefused` subclass.

    Stateless and deterministic: the same inputs give the same answer on every member, which
    is what lets members use it before voting and the executor use it again when applying.
    It does not look at nonces (deduplication is replicated state) or at the commands'
    meaning (the component's `check`).
    """
    envelope = Envelope.decode(data)
    admit_envelope(committee_id, acl, envelope, ticket_clients)
    return envelope


def admit_envelope(committee_id: bytes, acl: Acl, envelope: Envelope,
                   ticket_clients: Container[bytes] = (), *,
                   verify_signature: bool = True) -> None:
    """The checks of `check_envelope` after decoding: committee, ACL, signature."""
    if envelope.committee_id != committee_id:
        raise WrongCommittee(
            f"envelope is for committee {envelope.committee_id.hex()}, this is committee "
            f"{committee_id.hex()}")
    acl.admit(envelope, ticket_clients)
    if verify_signature:
        envelope.verify_signature()
