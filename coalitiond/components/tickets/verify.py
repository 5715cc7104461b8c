"""Anyone's check that the ticket issuer issued a ticket (SPEC §3.5): pure and offline, from
the block that carries the `issue`, its finalization certificate and the issuer committee's
public config (`verify_issued_ticket`); and the names a committee gives its issuer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ...commands.envelope import Command, CommandRefused, Envelope, InvalidCommand
from ...commands.member import is_member_command
from ...consensus.types import Block, Certificate, InvalidCertificate, VoteKind
from ...log.records import FinalizedBlock
from ...primitives.coalition import Coalition
from ...primitives.committee import CommitteeSpec
from ...primitives.errors import OperatorError, RemoteError
from ...primitives.identity import hash_structure
from .component import ISSUE_OP, KIND, Ticket, Tickets


class TicketVerificationError(RemoteError):
    """The evidence offered for a ticket does not show that the issuer issued it."""


class WrongIssuerCommittee(TicketVerificationError):
    """The committee or parameters given are not those of a ticket issuer committee."""


class NotCertified(TicketVerificationError):
    """The block's finalization certificate is missing, not for the block, or invalid."""


class TicketNotInBlock(TicketVerificationError):
    """The block holds no `issue` command for this ticket."""


class NotAnIssuer(TicketVerificationError):
    """The block carries an `issue` of this ticket that the executor would refuse: a signer
    that is not an issuer key or not admitted by the ACL, a bad envelope signature."""


def component_config_digest(params: Mapping[str, Any], acl: Mapping[str, Any]) -> bytes:
    """The committee's `component_config_digest` for a tickets committee with these
    parameters (`TicketsConfig.to_cbor()`) and ACL (`AclConfig.to_cbor()`); the same preimage
    as `config.MemberConfig.component_config_digest` (a test keeps them equal)."""
    return hash_structure("component-config", 1, KIND, dict(params), dict(acl))


def issuer_root(coalition: Coalition) -> bytes:
    """`derive(COALITION_ROOT, "tickets")`: the name a committee's ACL would give the
    coalition's ticket issuer. OperatorError if the coalition declares no ticket issuer."""
    root = coalition.ticket_issuer_root
    if root is None:
        raise OperatorError(f"coalition {coalition.name!r} declares no ticket issuer")
    return root


def verify_issued_ticket(ticket: Ticket, block: FinalizedBlock | Block,
                         committee: CommitteeSpec, *, params: Mapping[str, Any],
                         acl: Mapping[str, Any], certificate: Certificate | None = None
                         ) -> bytes:
    """Check that the issuer committee `committee` finalised `ticket`; return its ticket id.

    Pure and offline. `params` and `acl` are the issuer committee's `[component]` parameters
    and client ACL in their CBOR form (`TicketsConfig.to_cbor()`, `AclConfig.to_cbor()`);
    they are bound to `committee` by its `component_config_digest`, so the allowed issuer keys
    come from the committee's identity, not from the caller's word. `block` is a
    `FinalizedBlock` (its own `finalization` is used unless `certificate` is given) or a bare
    `Block` with `certificate`.

    Checks: the committee is a tickets committee with exactly these parameters; the
    certificate is a finalize certificate for this block with a quorum of valid member
    signatures (`Certificate.verify`, as `node.client` and `consensus.messages` use it); the
    block holds a client envelope for this committee, with a valid signature, from an
    issuer key the ACL admits, carrying an `issue` command for exactly this ticket and valid
    under the parameters. Raises a `TicketVerificationError` subclass otherwise.

    It proves issuance, not current standing: revocation (and the rare stateful refusals —
    `already_issued`, `full`, a replayed nonce) are state, read with the `ticket` query's
    state proof against a state root a later certified block commits to.
    """
    if committee.component_kind != KIND:
        raise WrongIssuerCommittee(f"committee {committee.committee_id.hex()} runs "
                                   f"{committee.component_kind!r}, not {KIND!r}")
    if component_config_digest(params, acl) != committee.component_config_digest:
        raise WrongIssuerCommittee("the parameters and ACL given are not the ones the "
                                   f"committee {committee.committee_id.hex()} was configured "
                                   "with")
    try:
        issuer = Tickets.from_params(params)
    except OperatorError as exc:
        raise WrongIssuerCommittee(f"the issuer's parameters are invalid: {exc}") from None
    admitted = _acl_clients(acl)

    if isinstance(block, FinalizedBlock):
        cert = certificate if certificate is not None else block.finalization
        body = block.block
    else:
        cert, body = certificate, block
    if cert is None:
        raise NotCertified(f"height {body.height}: no finalization certificate for the block")
    if cert.kind is not VoteKind.FINALIZE or cert.digest != body.digest or \
            cert.view != body.view or body.epoch != committee.epoch:
        raise NotCertified(f"height {body.height}: the certificate is not a finalization of "
                           "this block in this epoch")
    try:
        cert.verify(committee)
    except InvalidCertificate as exc:
        raise NotCertified(f"height {body.height}: {exc}") from None

    wanted = ticket.encode()
    refusal: str | None = None
    for data in body.commands:
        if is_member_command(data):
            continue
        try:
            envelope = Envelope.decode(data)
        except CommandRefused:
            continue  # an unreadable command issued nothing
        if envelope.committee_id != committee.committee_id:
            continue
        for command in envelope.commands:
            if command.op != ISSUE_OP:
                continue
            try:
                found = Ticket.from_args(command.args)
            except InvalidCommand:
                continue
            if found.encode() != wanted:
                continue
            refusal = _refusal(issuer, admitted, envelope, command)
            if refusal is None:
                return ticket.ticket_id
    if refusal is not None:
        raise NotAnIssuer(f"height {body.height}: ticket {ticket.ticket_id.hex()} is in the "
                          f"block, but {refusal}")
    raise TicketNotInBlock(f"height {body.height}: the block holds no issue command for ticket "
                           f"{ticket.ticket_id.hex()}")


def _acl_clients(acl: Mapping[str, Any]) -> Collection[bytes]:
    clients = acl.get("clients")
    if not (isinstance(clients, list | tuple) and all(isinstance(c, bytes) for c in clients)):
        raise WrongIssuerCommittee("the ACL given has no list of client keys")
    return frozenset(clients)


def _refusal(issuer: Tickets, admitted: Collection[bytes], envelope: Envelope,
             command: Command) -> str | None:
    """Why the executor would have refused this `issue` statelessly (ACL, signature, the
    component's `check`), or None if it would have applied it."""
    if envelope.client not in admitted:
        return f"its signer {envelope.client.hex()} is not admitted by the issuer's ACL"
    try:
        envelope.verify_signature()
        issuer.check(envelope.client, command)
    except CommandRefused as exc:
        return f"that issue is refused: {exc.reason}: {exc}"
    return None
