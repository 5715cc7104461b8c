"""Client side of DESIGN §2.5: build and sign envelopes with increasing nonces.

Used by `coalitiond submit` and the devnet load generator. Not thread-safe: one
`EnvelopeSigner` per client task.

Nonces: the signer hands out `next_nonce`, `next_nonce + 1`, … A client that restarts must not
reuse a nonce it already signed (the committee would refuse the new envelope as replayed), so
it either persists `next_nonce` or asks the committee (`client_nonce` query) for the highest
applied nonce and starts above it — plus the number of envelopes it may have had in flight,
since those may still land.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..primitives.crypto import SigningKey
from ..primitives.encoding import encode
from ..primitives.errors import LocalError
from .envelope import (
    MAX_COMMANDS_PER_ENVELOPE,
    MAX_ENVELOPE_SIZE,
    MAX_NONCE,
    MIN_NONCE,
    Command,
    Envelope,
)

# Envelope overhead without commands: array head, tag, schema, two 32-byte ids, a 9-byte
# nonce, the commands array head (≤ 3 bytes), a 66-byte signature item.
_ENVELOPE_OVERHEAD = 1 + 9 + 1 + 34 + 34 + 9 + 3 + 66


class EnvelopeSigner:
    def __init__(self, key: SigningKey, committee_id: bytes, next_nonce: int = MIN_NONCE) -> None:
        if not MIN_NONCE <= next_nonce <= MAX_NONCE:
            raise LocalError(f"next nonce {next_nonce} outside {MIN_NONCE}..{MAX_NONCE}")
        self.key = key
        self.committee_id = committee_id
        self.next_nonce = next_nonce

    @property
    def client(self) -> bytes:
        return self.key.public

    def sign(self, commands: Sequence[Command]) -> Envelope:
        """One envelope with the next nonce. LocalError if it would break a limit."""
        envelope = Envelope.sign(self.key, self.committee_id, self.next_nonce, commands)
        self.next_nonce += 1
        return envelope

    def command(self, op: str, **args: Any) -> Envelope:
        """Sign a single command: `signer.command("publish", kind="k", body=b"")`."""
        return self.sign([Command(op, args)])

    def sign_all(self, commands: Iterable[Command], *,
                 max_commands: int = MAX_COMMANDS_PER_ENVELOPE) -> list[Envelope]:
        """Pack `commands`, in order, into as few envelopes as the limits allow."""
        if not 0 < max_commands <= MAX_COMMANDS_PER_ENVELOPE:
            raise LocalError(f"max_commands must be 1..{MAX_COMMANDS_PER_ENVELOPE}")
        out: list[Envelope] = []
        batch: list[Command] = []
        size = _ENVELOPE_OVERHEAD
        for command in commands:
            csize = len(encode(command.to_wire()))
            if _ENVELOPE_OVERHEAD + csize > MAX_ENVELOPE_SIZE:
                raise LocalError(f"command {command.op!r} of {csize} bytes cannot fit an envelope")
            if batch and (len(batch) == max_commands or size + csize > MAX_ENVELOPE_SIZE):
                out.append(self.sign(batch))
                batch, size = [], _ENVELOPE_OVERHEAD
            batch.append(command)
            size += csize
        if batch:
            out.append(self.sign(batch))
        return out


def publish(kind: str, body: Any) -> Command:
    """The feed component's one command."""
    return Command("publish", {"kind": kind, "body": body})


def command(op: str, args: Mapping[str, Any]) -> Command:
    return Command(op, dict(args))
