"""The deterministic executor: finalised blocks in, command outcomes and log entries out.

Why this module is long: the three steps below, the ticket-admitted client set they consult
and the outcomes they produce are one replay path; kept in one class, the order in which a
block's commands are checked, deduplicated and applied reads top to bottom.

Pure (no clock, no I/O, no randomness); the daemon's trio shell feeds it finalised blocks in
height order and stores what it returns. For each command of a block (a block's `commands`
are envelope bytes), in block order:

1. the stateless admission check (`check_envelope`: size, structure, committee, ACL,
   signature) — the same check members ran before voting, repeated because catch-up and
   offline replay must not trust that a quorum checked;
2. deduplication against the replicated nonce state (`dedup.DedupState`);
3. the component's `apply` over the admitted envelopes of the block.

Each command ends `applied` (with the component's entry index) or `refused` (with a reason);
an envelope refused at step 1 or 2 changes nothing at all. An envelope admitted at step 2
consumes its nonce even if the component refuses every one of its commands: a refusal is
final, nobody can replay the envelope later when it might succeed.

The state root commits to the component signature, the nonce state and the component state
(not to the height: a block whose commands are all refused leaves the root unchanged).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..commands.dedup import DedupState
from ..commands.envelope import (
    MAX_ACL_CLIENTS,
    Acl,
    CommandRefused,
    Envelope,
    InvalidCommand,
    WrongCommittee,
    admit_envelope,
    check_envelope,
)
from ..commands.member import MemberCommand, is_member_command
from ..primitives.crypto import PUBLIC_KEY_LEN
from ..primitives.encoding import encode
from ..primitives.errors import LocalError, RemoteError
from ..primitives.identity import ID_LEN, digest, hash_structure
from ..primitives.metrics import counter
from .base import (
    Applied,
    BlockContext,
    CommandResult,
    Component,
    MalformedSnapshot,
    QueryError,
    is_uint,
)
from .base import Refused as ComponentRefused
from .snapshot import SnapshotFormat, any_value

APPLIED: Final = "applied"
REFUSED: Final = "refused"
OUTCOME_TYPE: Final = "outcome"
SNAPSHOT_TYPE: Final = "executor-snapshot"
#: Executor snapshots hold the component's snapshot; the bound is the component's problem
#: first, this one only stops a peer from handing us something absurd.
MAX_SNAPSHOT_SIZE: Final = 1 << 31
_SNAPSHOT: Final = SnapshotFormat("executor", SNAPSHOT_TYPE, 1, (any_value,) * 7,
                                  "a 9-item executor-snapshot", max_size=MAX_SNAPSHOT_SIZE)

COMMANDS: Final = counter("component_commands_total",
                          "Client commands executed, by status and reason", ("status", "reason"))


class InvalidBlock(RemoteError):
    """A proposed block holds a command that fails the stateless check: do not vote for it."""

    def __init__(self, position: int, cause: CommandRefused) -> None:
        super().__init__(
            f"envelope {position} of the block is refused: {cause.reason}: {cause}")
        self.position = position
        self.cause = cause


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What the submitter learns about one command.

    `command_index` is None when the envelope could not be read at all (too large or
    malformed), in which case `envelope_id` is blake3 of the raw bytes.
    """

    envelope_id: bytes
    command_index: int | None
    status: str
    height: int
    #: The envelope's index among the block's commands: with `height`, where the store's
    #: signed log holds the envelope itself (an inclusion proof for it is the receipt).
    position: int
    entry_index: int | None = None
    reason: str | None = None
    detail: str | None = None

    def to_wire(self) -> list[Any]:
        return [OUTCOME_TYPE, 1, self.envelope_id, self.command_index, self.status, self.height,
                self.position, self.entry_index, self.reason, self.detail]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> CommandOutcome:
        """For submitters reading outcomes from a member: RemoteError if malformed."""
        if not (isinstance(obj, list) and len(obj) == 10 and obj[0] == OUTCOME_TYPE
                and obj[1] == 1 and not isinstance(obj[1], bool)):
            raise MalformedOutcome("outcome: expected a 10-item [\"outcome\", 1, ...] array")
        _, _, envelope_id, index, status, height, position, entry_index, reason, detail = obj
        ok = (isinstance(envelope_id, bytes) and len(envelope_id) == ID_LEN
              and (index is None or is_uint(index)) and is_uint(height) and is_uint(position)
              and (entry_index is None or (status == APPLIED and is_uint(entry_index)))
              and (status == REFUSED) == isinstance(reason, str)
              and (status == REFUSED) == isinstance(detail, str)
              and status in (APPLIED, REFUSED))
        if not ok:
            raise MalformedOutcome("outcome: fields do not describe an applied or refused command")
        return cls(envelope_id, index, status, height, position, entry_index, reason, detail)


class MalformedOutcome(RemoteError):
    """An outcome record from a member that does not parse."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One component entry (an output: e.g. a feed entry), in the order produced. The store's
    signed log holds the inputs (the envelopes); these are committed by the state root."""

    height: int
    envelope_id: bytes
    command_index: int
    entry_index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BlockResult:
    height: int
    digest: bytes
    outcomes: tuple[CommandOutcome, ...]
    entries: tuple[LogEntry, ...]
    state_root: bytes


@dataclass(frozen=True, slots=True)
class Stamp:
    """The latest tick of the followed Almanac committed into this committee's state: the
    tick's `seq` and where the Almanac's own log holds it (height, block digest), so anyone
    can check the stamp against the Almanac's archive."""

    almanac: bytes
    seq: int
    height: int
    block: bytes

    def to_wire(self) -> list[Any]:
        return [self.almanac, self.seq, self.height, self.block]

    def to_args(self) -> dict[str, Any]:
        return {"almanac": self.almanac, "seq": self.seq, "height": self.height,
                "block": self.block}

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Stamp:
        """RemoteError (InvalidCommand) unless `args` is exactly a stamp."""
        if set(args) != {"almanac", "seq", "height", "block"}:
            raise InvalidCommand("stamp: args must be exactly {almanac, seq, height, block}",
                                 reason="bad_args")
        almanac, seq, height, block = (args["almanac"], args["seq"], args["height"],
                                       args["block"])
        if not (isinstance(almanac, bytes) and len(almanac) == ID_LEN
                and isinstance(block, bytes) and len(block) == ID_LEN
                and is_uint(seq) and is_uint(height) and height >= 1):
            raise InvalidCommand("stamp: almanac and block are 32 bytes, seq and height "
                                 "unsigned (height >= 1)", reason="bad_args")
        return cls(almanac, seq, height, block)


STAMP_OP: Final = "stamp"
#: Member commands that keep the set of ticket-admitted clients current (TicketFollower).
ADMIT_CLIENTS_OP: Final = "admit_clients"
REMOVE_CLIENTS_OP: Final = "remove_clients"
#: Clients one admit/remove command names.
MAX_CLIENTS_PER_COMMAND: Final = 256
#: Ticket-admitted clients at once (like the allow-list: dedup keeps state per client).
MAX_TICKET_CLIENTS: Final = MAX_ACL_CLIENTS


def _ticket_args(command: MemberCommand, with_ticket: bool) -> tuple[bytes, list[Any]]:
    """(issuer root, rows) of an admit/remove command; InvalidCommand unless exact."""
    op, args = command.op, command.args
    if set(args) != {"issuer", "clients"}:
        raise InvalidCommand(f"{op}: args must be exactly {{issuer, clients}}", reason="bad_args")
    issuer, rows = args["issuer"], args["clients"]
    if not (isinstance(issuer, bytes) and len(issuer) == ID_LEN and isinstance(rows, list)
            and 0 < len(rows) <= MAX_CLIENTS_PER_COMMAND):
        raise InvalidCommand(f"{op}: issuer is 32 bytes, clients a list of 1.."
                             f"{MAX_CLIENTS_PER_COMMAND}", reason="bad_args")
    keys = []
    for row in rows:
        if with_ticket:
            ok = (isinstance(row, list) and len(row) == 2 and isinstance(row[0], bytes)
                  and len(row[0]) == PUBLIC_KEY_LEN and isinstance(row[1], bytes)
                  and len(row[1]) == ID_LEN)
            keys.append(row[0] if ok else b"")
        else:
            ok = isinstance(row, bytes) and len(row) == PUBLIC_KEY_LEN
            keys.append(row if ok else b"")
        if not ok:
            raise InvalidCommand(f"{op}: each client must be " + (
                "[32-byte key, 32-byte ticket id]" if with_ticket else "a 32-byte key"),
                reason="bad_args")
    if any(a >= b for a, b in itertools.pairwise(keys)):
        raise InvalidCommand(f"{op}: clients must be in strictly ascending key order",
                             reason="bad_args")
    return issuer, rows


class Executor:
    def __init__(self, committee_id: bytes, acl: Acl, component: Component, *,
                 follow_almanac: bytes | None = None) -> None:
        if len(committee_id) != ID_LEN:
            raise LocalError(f"committee id must be {ID_LEN} bytes")
        if follow_almanac is not None and len(follow_almanac) != ID_LEN:
            raise LocalError(f"followed Almanac id must be {ID_LEN} bytes")
        self.committee_id = committee_id
        self.acl = acl
        self.component = component
        #: The Almanac committee whose ticks this committee stamps its blocks with, if any.
        self.follow_almanac = follow_almanac
        self.stamp: Stamp | None = None
        #: Clients admitted by a ticket of a recognised issuer: key -> (issuer root, ticket
        #: id). Changed only by admit/remove member commands; `_ticket_view` is the frozen
        #: copy worker threads read when checking envelopes.
        self.ticket_clients: dict[bytes, tuple[bytes, bytes]] = {}
        self._ticket_view: frozenset[bytes] = frozenset()
        self._ticket_digest: bytes | None = None
        self.dedup = DedupState()
        #: Height of the last executed block (0: nothing executed; genesis carries nothing).
        self.executed_height = 0
        self.last_digest = b"\x00" * ID_LEN
        #: Set when apply_block raised half-way (a bug): the state may be half-applied, so
        #: the executor refuses to go on until `restore` replaces the whole state.
        self._broken: str | None = None

    # -- stateless checks (before voting) ---------------------------------------------

    def check_command(self, data: bytes) -> Envelope | MemberCommand:
        """The stateless check of one block command, a client envelope or a member command.

        Reads no mutable state, so the shell may run it in worker threads (signature checks off
        the event loop) while `apply_block` runs elsewhere."""
        if is_member_command(data):
            return self.check_member_command(data)
        return self.check_client_command(data)

    def check_member_command(self, data: bytes) -> MemberCommand:
        command = MemberCommand.decode(data)
        if command.committee_id != self.committee_id:
            raise WrongCommittee(f"member command is for committee {command.committee_id.hex()}")
        if command.op in (ADMIT_CLIENTS_OP, REMOVE_CLIENTS_OP):
            issuer, _ = _ticket_args(command, command.op == ADMIT_CLIENTS_OP)
            if issuer not in self.acl.ticket_issuers:
                raise InvalidCommand(f"{command.op}: issuer {issuer.hex()} is not recognised "
                                     "by this committee's ACL", reason="unknown_issuer")
            return command
        if command.op == STAMP_OP:
            if self.follow_almanac is None:
                raise InvalidCommand("stamp: this committee follows no Almanac",
                                     reason="unknown_op")
            stamp = Stamp.from_args(command.args)
            if stamp.almanac != self.follow_almanac:
                raise InvalidCommand(f"stamp: names Almanac {stamp.almanac.hex()}, this "
                                     f"committee follows {self.follow_almanac.hex()}",
                                     reason="wrong_almanac")
            return command
        self.component.check_member(command)
        return command

    def check_client_command(self, data: bytes) -> Envelope:
        """Admission plus the component's stateless check of every command in the envelope:
        what clients and gossip may hand us (never a member command)."""
        envelope = check_envelope(self.committee_id, self.acl, data, self._ticket_view)
        for index, command in enumerate(envelope.commands):
            try:
                self.component.check(envelope.client, command)
            except InvalidCommand as exc:
                raise InvalidCommand(f"command {index}: {exc}", reason=exc.reason) from None
        return envelope

    def check_block(self, commands: Sequence[bytes]) -> list[Envelope | MemberCommand]:
        """The consensus core's validation hook: raise InvalidBlock on the first bad command.

        Returns the checked envelopes; pass them to `apply_block(checked=...)` to skip a second
        signature verification of the same bytes.
        """
        out = []
        for position, data in enumerate(commands):
            try:
                out.append(self.check_command(data))
            except CommandRefused as exc:
                raise InvalidBlock(position, exc) from None
        return out

    def validate_block_commands(self, commands: Sequence[bytes]) -> bool:
        """`check_block` in the shape of the consensus core's hook (docs/protocol.md §6)."""
        try:
            self.check_block(commands)
        except InvalidBlock:
            return False
        return True

    # -- execution ----------------------------------------------------------------------

    def apply_block(self, height: int, block_digest: bytes, commands: Sequence[bytes], *,
                    checked: Sequence[Envelope | MemberCommand | None] | None = None
                    ) -> BlockResult:
        """Execute the finalised block at `height` (the next one).

        `checked[p]`, when given and not None, is the envelope `check_command` returned for
        exactly `commands[p]` on this executor — or, replaying our own verified store, one
        decoded without its signature checked; it saves a second signature verification
        (admission by the ACL is still decided here, against the current state).
        """
        if self._broken is not None:
            raise LocalError(f"executor: stopped after an earlier failure ({self._broken}); "
                             "restore a snapshot")
        if height != self.executed_height + 1:
            raise LocalError(f"executor: block {height} out of order (executed "
                             f"{self.executed_height})")
        if len(block_digest) != ID_LEN:
            raise LocalError(f"executor: block digest must be {ID_LEN} bytes")
        if checked is not None and len(checked) != len(commands):
            raise LocalError("executor: checked envelopes do not match the block's commands")
        try:
            return self._apply(height, block_digest, commands, checked)
        except BaseException as exc:
            self._broken = f"block {height}: {type(exc).__name__}: {exc}"
            raise

    def _apply(self, height: int, block_digest: bytes, commands: Sequence[bytes],
               checked: Sequence[Envelope | MemberCommand | None] | None) -> BlockResult:
        # Member commands first, in block order (a stamp then dates the client commands of
        # its own block), then the client envelopes, then the component's per-block work.
        outcomes: list[CommandOutcome] = []
        entries: list[LogEntry] = []
        client_positions = []
        for position, data in enumerate(commands):
            if not is_member_command(data):
                client_positions.append(position)
                continue
            known = checked[position] if checked is not None else None
            result = self._apply_member(height, block_digest, data,
                                        known if isinstance(known, MemberCommand) else None)
            command_id = digest(data)
            outcomes.append(_outcome(command_id, 0, height, position, result))
            entries.extend(_entries(height, command_id, 0, result))

        # slots[p] is either the refusal outcomes of command p or the admitted envelope.
        slots: list[tuple[int, list[CommandOutcome] | Envelope]] = []
        admitted: list[Envelope] = []
        for position in client_positions:
            data = commands[position]
            known = checked[position] if checked is not None else None
            signature_checked = isinstance(known, Envelope) and known.raw == data
            if isinstance(known, Envelope) and signature_checked:
                envelope = known
            else:
                try:
                    envelope = Envelope.decode(data)
                except CommandRefused as exc:
                    # Unreadable: no commands to name, so one outcome under blake3(bytes).
                    slots.append((position, [CommandOutcome(
                        digest(data), None, REFUSED, height, position, reason=exc.reason,
                        detail=str(exc))]))
                    continue
            try:
                # Admission is re-run even for a checked envelope: the ticket-admitted set may
                # have changed since (earlier in this very block, even). Only the signature
                # check is what `checked` saves.
                admit_envelope(self.committee_id, self.acl, envelope, self._ticket_view,
                               verify_signature=not signature_checked)
            except CommandRefused as exc:
                slots.append((position, _refuse_all(envelope, height, position, exc)))
                continue
            try:
                self.dedup.check(envelope.client, envelope.nonce)
            except CommandRefused as exc:
                slots.append((position, _refuse_all(envelope, height, position, exc)))
                continue
            self.dedup.record(envelope.client, envelope.nonce)
            slots.append((position, envelope))
            admitted.append(envelope)

        ctx = self._context(height, block_digest)
        results = self.component.apply(ctx, admitted) if admitted else []
        expected = sum(len(e.commands) for e in admitted)
        if len(results) != expected:
            raise LocalError(f"component {self.component.signature} returned {len(results)} "
                             f"results for {expected} commands")

        cursor = 0
        for position, slot in slots:
            if isinstance(slot, list):
                outcomes.extend(slot)
                continue
            for index in range(len(slot.commands)):
                result = results[cursor]
                cursor += 1
                outcomes.append(_outcome(slot.envelope_id, index, height, position, result))
                entries.extend(_entries(height, slot.envelope_id, index, result))
        produced = self.component.end_block(ctx)
        if produced is not None:
            # The block's own work: named by the block digest, command index 0.
            entries.extend(_entries(height, block_digest, 0, produced))
        outcomes.sort(key=lambda o: (o.position, -1 if o.command_index is None
                                     else o.command_index))
        # One metric update per (status, reason) of the block, not one per command.
        for (status, reason), count in sorted(Counter(
                (o.status, o.reason or "") for o in outcomes).items()):
            COMMANDS.labels(status, reason).inc(count)
        self.executed_height = height
        self.last_digest = block_digest
        return BlockResult(height, block_digest, tuple(outcomes), tuple(entries),
                           self.state_root())

    def _context(self, height: int, block_digest: bytes) -> BlockContext:
        return BlockContext(height, block_digest,
                            None if self.stamp is None else self.stamp.seq)

    def _apply_member(self, height: int, block_digest: bytes, data: bytes,
                      known: MemberCommand | None) -> CommandResult:
        try:
            command = (known if known is not None and known.raw == data
                       else self.check_member_command(data))
        except CommandRefused as exc:
            return ComponentRefused(exc.reason, str(exc))
        if command.op in (ADMIT_CLIENTS_OP, REMOVE_CLIENTS_OP):
            return self._apply_ticket_clients(command)
        if command.op != STAMP_OP:
            return self.component.apply_member(self._context(height, block_digest), command)
        stamp = Stamp.from_args(command.args)
        if self.stamp is not None and stamp.seq <= self.stamp.seq:
            return ComponentRefused("stale_stamp", f"stamp: tick {stamp.seq} is not after the "
                                    f"stamped tick {self.stamp.seq}")
        self.stamp = stamp
        return Applied(None)

    def _apply_ticket_clients(self, command: MemberCommand) -> CommandResult:
        admit = command.op == ADMIT_CLIENTS_OP
        issuer, rows = _ticket_args(command, admit)
        clients = dict(self.ticket_clients)
        if admit:
            for client, ticket_id in rows:
                clients[client] = (issuer, ticket_id)
            if len(clients) > MAX_TICKET_CLIENTS:
                return ComponentRefused("ticket_clients_full", f"{command.op}: more than "
                                        f"{MAX_TICKET_CLIENTS} ticket-admitted clients")
        else:
            for client in rows:
                # Only what this issuer admitted: another issuer's admission stands.
                if clients.get(client, (None,))[0] == issuer:
                    del clients[client]
        self._set_ticket_clients(clients)
        return Applied(None)

    def _set_ticket_clients(self, clients: dict[bytes, tuple[bytes, bytes]]) -> None:
        self.ticket_clients = clients
        self._ticket_view = frozenset(clients)
        self._ticket_digest = None

    def _ticket_clients_wire(self) -> list[list[bytes]]:
        return [[k, *self.ticket_clients[k]] for k in sorted(self.ticket_clients)]

    def ticket_clients_digest(self) -> bytes:
        if self._ticket_digest is None:  # recomputed only after a change
            self._ticket_digest = hash_structure("ticket-clients", 1,
                                                 self._ticket_clients_wire())
        return self._ticket_digest

    # -- commitment, reads, snapshots ---------------------------------------------------

    def state_root(self) -> bytes:
        # Fields appear only for committees that use them, so the roots of committees that
        # follow no Almanac and recognise no ticket issuer are what they always were.
        optional: list[Any] = []
        if self.follow_almanac is not None:
            optional.append(None if self.stamp is None else self.stamp.to_wire())
        if self.acl.ticket_issuers:
            optional.append(self.ticket_clients_digest())
        return hash_structure("executor-state", 1, self.component.signature, self.dedup.root(),
                              self.component.state_root(), *optional)

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        """`client_nonce {client}`: the highest nonce applied for a client (0 if none), so a
        client that lost its counter can resume above it. `stamp`: the latest Almanac tick
        stamped (None if none). Anything else: the component's."""
        if name == "client_nonce":
            client = args.get("client")
            if set(args) != {"client"} or not (isinstance(client, bytes)
                                              and len(client) == PUBLIC_KEY_LEN):
                raise QueryError("client_nonce: arguments must be {client: 32-byte key}")
            return {"client": client, "highest": self.dedup.highest(client),
                    "height": self.executed_height}
        if name == "stamp":
            if args:
                raise QueryError("stamp: takes no arguments")
            return None if self.stamp is None else self.stamp.to_args()
        return self.component.query(name, args)

    def snapshot(self) -> bytes:
        return _SNAPSHOT.encode(self.component.signature, self.executed_height,
                                self.last_digest, self.dedup.to_wire(),
                                self.component.snapshot(),
                                None if self.stamp is None else self.stamp.to_args(),
                                self._ticket_clients_wire())

    def restore(self, data: bytes, *, own: bool = False) -> None:
        """Replace the whole state; on MalformedSnapshot nothing changes. The caller compares
        `state_root()` afterwards with the root a certified block committed to. `own`: the
        bytes are this member's own snapshot (`Component.restore_own`)."""
        (signature, height, last_digest, dedup_wire, component_bytes, stamp_args,
         ticket_rows) = _SNAPSHOT.decode(data)
        ticket_clients = _ticket_clients_from_wire(ticket_rows, self.acl)
        stamp: Stamp | None = None
        if stamp_args is not None:
            try:
                stamp = Stamp.from_args(stamp_args if isinstance(stamp_args, dict) else {})
            except CommandRefused as exc:
                raise MalformedSnapshot(f"executor snapshot: {exc}") from None
            if stamp.almanac != self.follow_almanac:
                raise MalformedSnapshot("executor snapshot: stamp of an Almanac this "
                                        "committee does not follow")
        if signature != self.component.signature:
            raise MalformedSnapshot(f"executor snapshot is for {signature!r}, this member runs "
                                    f"{self.component.signature!r}")
        if not (isinstance(height, int) and not isinstance(height, bool) and height >= 0):
            raise MalformedSnapshot("executor snapshot: height must be unsigned")
        if not (isinstance(last_digest, bytes) and len(last_digest) == ID_LEN):
            raise MalformedSnapshot("executor snapshot: block digest must be 32 bytes")
        if not isinstance(component_bytes, bytes):
            raise MalformedSnapshot("executor snapshot: component state must be bytes")
        try:
            dedup = DedupState.from_wire(dedup_wire)
        except RemoteError as exc:
            raise MalformedSnapshot(f"executor snapshot: {exc}") from None
        # Atomic on its own; the last thing that can fail.
        if own:
            self.component.restore_own(component_bytes)
        else:
            self.component.restore(component_bytes)
        self._broken = None
        self.dedup = dedup
        self.executed_height = height
        self.last_digest = last_digest
        self.stamp = stamp
        self._set_ticket_clients(ticket_clients)


def _ticket_clients_from_wire(rows: Any, acl: Acl) -> dict[bytes, tuple[bytes, bytes]]:
    def bad(what: str) -> MalformedSnapshot:
        return MalformedSnapshot(f"executor snapshot: ticket clients: {what}")

    if not (isinstance(rows, list) and len(rows) <= MAX_TICKET_CLIENTS):
        raise bad(f"expected a list of at most {MAX_TICKET_CLIENTS}")
    out: dict[bytes, tuple[bytes, bytes]] = {}
    previous = b""
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3
                and all(isinstance(x, bytes) for x in row) and len(row[0]) == PUBLIC_KEY_LEN
                and len(row[1]) == ID_LEN and len(row[2]) == ID_LEN):
            raise bad("each row is [32-byte client, 32-byte issuer, 32-byte ticket id]")
        client, issuer, ticket_id = row
        if client <= previous:
            raise bad("clients must be in strictly ascending order")
        if issuer not in acl.ticket_issuers:
            raise bad(f"issuer {issuer.hex()} is not recognised by the ACL")
        previous = client
        out[client] = (issuer, ticket_id)
    return out


def _outcome(envelope_id: bytes, index: int, height: int, position: int,
             result: CommandResult) -> CommandOutcome:
    if isinstance(result, Applied):
        return CommandOutcome(envelope_id, index, APPLIED, height, position,
                              entry_index=result.entry_index)
    return CommandOutcome(envelope_id, index, REFUSED, height, position, reason=result.reason,
                          detail=result.detail)


def _entries(height: int, envelope_id: bytes, index: int, result: CommandResult
             ) -> list[LogEntry]:
    if not isinstance(result, Applied) or not result.entries:
        return []
    if result.entry_index is None:
        raise LocalError("component produced entries without an index")
    return [LogEntry(height, envelope_id, index, result.entry_index + k, data)
            for k, data in enumerate(result.entries)]


def _refuse_all(envelope: Envelope, height: int, position: int,
                exc: CommandRefused) -> list[CommandOutcome]:
    return [CommandOutcome(envelope.envelope_id, i, REFUSED, height, position, reason=exc.reason,
                           detail=str(exc))
            for i in range(len(envelope.commands))]
