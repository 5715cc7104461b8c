"""Member commands: block commands the committee proposes itself (SPEC §3, *member*).

Client commands travel in signed envelopes (`coalitiond.commands.envelope`). A few things are not any
client's to say: an Almanac tick with the members' signed clock readings, the stamp of the
latest tick of a followed Almanac. The leader puts those into its proposal as *member
commands*; what authenticates one is the block's finalisation certificate (a quorum voted for
the block after checking it), plus whatever signatures the command carries inside (each
member's `observed_at`).

Wire format (deterministic CBOR), one block command:

    ["member", 1, committee_id, op, args]

`op` is a short identifier, `args` a map with text keys, as for client commands. Members never
accept a member command from a client or from gossip: only inside a proposal, where every
voter checks it before voting (`Executor.check_command`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..consensus.types import MAX_COMMAND_SIZE
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError
from ..primitives.identity import ID_LEN, digest
from .envelope import MAX_ARG_KEY_LEN, MAX_ARGS_KEYS, MAX_OP_LEN, MalformedEnvelope

MEMBER_COMMAND_TYPE: Final = "member"
MEMBER_COMMAND_SCHEMA: Final = 1
#: CBOR head of a 5-item array then the text "member": how block commands are told apart
#: without decoding (an envelope starts with a 7-item array and the text "envelope").
MEMBER_COMMAND_PREFIX: Final = b"\x85\x66member"
_OP_RE: Final = re.compile(r"[a-z][a-z0-9_]*")


class MalformedMemberCommand(MalformedEnvelope):
    """A block command that claims to be a member command but does not parse."""


@dataclass(frozen=True, slots=True)
class MemberCommand:
    committee_id: bytes
    op: str
    args: Mapping[str, Any]
    raw: bytes = field(compare=False, repr=False)

    @property
    def command_id(self) -> bytes:
        """blake3 of the bytes: how outcomes and logs name a member command."""
        return digest(self.raw)

    @classmethod
    def make(cls, committee_id: bytes, op: str, args: Mapping[str, Any]) -> MemberCommand:
        return cls.decode(encode([MEMBER_COMMAND_TYPE, MEMBER_COMMAND_SCHEMA, committee_id, op,
                                  dict(args)]))

    @classmethod
    def decode(cls, data: bytes) -> MemberCommand:
        if len(data) > MAX_COMMAND_SIZE:
            raise MalformedMemberCommand(
                f"member command of {len(data)} bytes exceeds {MAX_COMMAND_SIZE}")
        try:
            obj = decode(data, max_size=MAX_COMMAND_SIZE)
        except EncodingError as exc:
            raise MalformedMemberCommand(f"malformed member command: {exc}") from None
        if not (isinstance(obj, list) and len(obj) == 5 and obj[0] == MEMBER_COMMAND_TYPE):
            raise MalformedMemberCommand("member command: expected [\"member\", 1, committee, "
                                         "op, args]")
        _, schema, committee_id, op, args = obj
        if not (schema == MEMBER_COMMAND_SCHEMA and not isinstance(schema, bool)):
            raise MalformedMemberCommand(f"member command: unsupported schema {schema!r}")
        if not (isinstance(committee_id, bytes) and len(committee_id) == ID_LEN):
            raise MalformedMemberCommand(f"member command: committee id must be {ID_LEN} bytes")
        if not (isinstance(op, str) and len(op) <= MAX_OP_LEN and _OP_RE.fullmatch(op)):
            raise MalformedMemberCommand("member command: op must match [a-z][a-z0-9_]*")
        if not (isinstance(args, dict) and len(args) <= MAX_ARGS_KEYS
                and all(isinstance(k, str) and 0 < len(k) <= MAX_ARG_KEY_LEN for k in args)):
            raise MalformedMemberCommand(
                f"member command: args must be a map of at most {MAX_ARGS_KEYS} text keys")
        return cls(committee_id, op, args, bytes(data))


def is_member_command(data: bytes) -> bool:
    return data.startswith(MEMBER_COMMAND_PREFIX)
