"""A confluence record presented to a consumer, verifiable offline (docs/confluences.md §5).

A `SharedAttestation { recipient, total, upto, certificate }` (and likewise a routed-intents
record) is one `attest` (`route`) member command in a certified confluence block. The
presentation carries everything needed to check it against the confluence committee alone:

    ["confluence-record", 1, header, commands, index, certificate]

`header` is the block header (`BlockHeader.to_wire()`), `commands` every command of the block
(their list digest is the header's `commands_digest`), `index` the position of the record's
command, `certificate` the block's finalise certificate. `verify_presentation` checks, in
order: the header's `commands_digest` is `blake3(cbor(commands))`; the certificate is a
finalise certificate on `blake3(cbor(header))` with `q` valid member signatures; the command
at `index` is `["member", 1, committee_id, op, record]` with the expected op; the record has
the shape of its kind. It returns the record.
"""

from __future__ import annotations

from typing import Any, Final

from ..commands.envelope import InvalidCommand
from ..commands.member import MalformedMemberCommand, MemberCommand
from ..components.confluence.component import Confluence
from ..consensus.types import (
    Block,
    BlockHeader,
    Certificate,
    InvalidCertificate,
    MalformedMessage,
    VoteKind,
)
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, RemoteError
from ..primitives.identity import digest

PRESENTATION_TYPE: Final = "confluence-record"
MAX_PRESENTATION_SIZE: Final = 16 * 1024 * 1024


class BadPresentation(RemoteError):
    """A presented confluence record that does not verify; `str()` says which check."""


def make_presentation(block: Block, certificate: Certificate, index: int) -> bytes:
    return encode([PRESENTATION_TYPE, 1, block.header.to_wire(), list(block.commands), index,
                   certificate.to_wire()])


def verify_presentation(committee: CommitteeSpec, component: Confluence, data: bytes
                        ) -> dict[str, Any]:
    """The record a presentation proves, checked against `committee` (the confluence's) and
    `component` (its parameters: the record's shape). BadPresentation otherwise."""
    try:
        obj = decode(data, max_size=MAX_PRESENTATION_SIZE)
        if not (isinstance(obj, list) and len(obj) == 6 and obj[:2] == [PRESENTATION_TYPE, 1]
                and isinstance(obj[3], list) and isinstance(obj[4], int)):
            raise BadPresentation("presentation: expected [\"confluence-record\", 1, header, "
                                  "commands, index, certificate]")
        header = BlockHeader.from_wire(obj[2])
        commands, index = obj[3], obj[4]
        certificate = Certificate.from_wire(obj[5])
    except (EncodingError, MalformedMessage) as exc:
        raise BadPresentation(f"presentation: {exc}") from None
    if digest(encode(commands)) != header.commands_digest:
        raise BadPresentation("presentation: the commands are not the block's (commands "
                              "digest differs)")
    if certificate.kind is not VoteKind.FINALIZE or certificate.digest != header.digest:
        raise BadPresentation("presentation: the certificate does not finalise this block")
    try:
        certificate.verify(committee)
    except InvalidCertificate as exc:
        raise BadPresentation(f"presentation: {exc}") from None
    if not 0 <= index < len(commands) or not isinstance(commands[index], bytes):
        raise BadPresentation(f"presentation: no command {index} in the block")
    try:
        command = MemberCommand.decode(commands[index])
    except MalformedMemberCommand as exc:
        raise BadPresentation(f"presentation: {exc}") from None
    if command.committee_id != committee.committee_id or command.op != component.OUTPUT_OP:
        raise BadPresentation(f"presentation: command {index} is not a {component.OUTPUT_OP} "
                              "of this confluence")
    try:
        component.check_output(command.args)
    except InvalidCommand as exc:
        raise BadPresentation(f"presentation: {exc}") from None
    return dict(command.args)
