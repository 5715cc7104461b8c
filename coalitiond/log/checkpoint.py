"""Checkpoints in the C2SP signed-note format (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A checkpoint body (the signed text) is, line by line:

    coalitiond/<committee id, 64 hex>          origin: the committee's log
    <tree size, decimal>
    <root hash, standard base64>
    committee <committee id, 64 hex>           extension lines (ours)
    epoch <decimal>
    height <decimal>
    block <block digest, 64 hex>

followed by a blank line and one or more signature lines

    — <key name> <base64(key id ‖ ed25519 signature)>

Key name of a member: `<origin>/<peer id hex>`. Key id (signed-note spec):
`SHA-256(key name ‖ "\\n" ‖ 0x01 ‖ public key)[:4]`.

Design choice (docs/formats.md): the origin names the *committee's* log, not the member's,
because honest members hold byte-identical logs, so their checkpoint bodies at one height are
byte-identical and one note can carry several members' signatures (cosigning for free). The
key name says which member signed.

Parsing is strict (one canonical text per checkpoint): anything else is a CheckpointError,
a RemoteError, since notes arrive from other members, archives and integrators.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final

import nacl.exceptions
import nacl.signing

from ..primitives.crypto import PUBLIC_KEY_LEN, SIGNATURE_LEN, SigningKey
from ..primitives.errors import LocalError, RemoteError
from ..primitives.merkle import HASH_LEN

ORIGIN_PREFIX: Final = "coalitiond/"
#: Signature type byte for Ed25519 in the signed-note key id rule.
ALG_ED25519: Final = 0x01
#: The signed-note spec lets verifiers refuse notes with more than 100 signatures.
MAX_SIGNATURES: Final = 100
#: A checkpoint note is a few hundred bytes; a bound keeps parsing cheap for any input.
MAX_NOTE_SIZE: Final = 64 * 1024
SIG_PREFIX: Final = "\u2014 "  # em dash, space

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(RemoteError):
    """A note or checkpoint that is malformed or whose signature does not verify."""


def origin_for(committee_id: bytes) -> str:
    return ORIGIN_PREFIX + committee_id.hex()


def key_name(origin: str, public_key: bytes) -> str:
    return f"{origin}/{public_key.hex()}"


def key_id(name: str, public_key: bytes) -> bytes:
    """First 4 bytes of SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key) — the signed-note rule."""
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes((ALG_ED25519,)) + public_key
    ).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise LocalError(f"signed-note key name {name!r} must be non-empty, without spaces or '+'")


def sign_text(text: str, name: str, key: SigningKey) -> str:
    """One signature line for `text`.

    Plain ed25519 over the note text, NOT `SigningKey.sign` (which signs
    `domain_tag ‖ 0x00 ‖ message`): the signed-note format fixes the signed bytes, and any
    prefix would make the note unverifiable by every other signed-note implementation.
    Domain separation comes from the note text itself (its origin line).
    """
    _check_name(name)
    sig = key.sign_untagged(text.encode("utf-8"))
    blob = base64.b64encode(key_id(name, key.public) + sig).decode("ascii")
    return f"{SIG_PREFIX}{name} {blob}\n"


def sign_note(text: str, name: str, key: SigningKey) -> str:
    _check_text(text, LocalError)
    return text + "\n" + sign_text(text, name, key)


def add_signature(note: str, name: str, key: SigningKey) -> str:
    """Append one more signature line (a cosignature by another member) to a note."""
    text, _ = split_note(note)
    return note + sign_text(text, name, key)


def _check_text(text: str, err: type[Exception]) -> None:
    if not text.endswith("\n"):
        raise err("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise err("note text holds a control character")
    if "\n\n" in text:
        raise err("note text holds a blank line")


@dataclass(frozen=True, slots=True)
class SignatureLine:
    name: str
    key_id: bytes
    signature: bytes


def split_note(note: str) -> tuple[str, list[SignatureLine]]:
    """Split a note into its text and its signature lines (not verified)."""
    if len(note) > MAX_NOTE_SIZE:
        raise CheckpointError(f"note of {len(note)} characters exceeds {MAX_NOTE_SIZE}")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("note has no blank line before its signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text, CheckpointError)
    if not block.endswith("\n"):
        raise CheckpointError("note signatures must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note has {len(lines)} signatures, at most {MAX_SIGNATURES}")
    sigs = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"note signature line {number} does not start with '— '")
        parts = line[len(SIG_PREFIX):].split(" ")
        if len(parts) != 2 or not parts[0]:
            raise CheckpointError(f"note signature line {number} is not '— <name> <base64>'")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError(f"note signature line {number}: invalid base64") from None
        if len(blob) < 5:
            raise CheckpointError(f"note signature line {number}: too short")
        sigs.append(SignatureLine(parts[0], blob[:4], blob[4:]))
    return text, sigs


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one signed checkpoint states about the committee's log."""

    size: int
    root: bytes
    committee_id: bytes
    epoch: int
    height: int
    block_digest: bytes

    @property
    def origin(self) -> str:
        return origin_for(self.committee_id)

    def text(self) -> str:
        if len(self.root) != HASH_LEN or len(self.block_digest) != 32 or len(self.committee_id) != 32:
            raise LocalError("checkpoint: root, committee id and block digest are 32 bytes")
        return (
            f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"
            f"committee {self.committee_id.hex()}\nepoch {self.epoch}\n"
            f"height {self.height}\nblock {self.block_digest.hex()}\n"
        )

    def sign(self, key: SigningKey) -> str:
        """The signed note, signed by `key` under the member key name for this origin."""
        return sign_note(self.text(), key_name(self.origin, key.public), key)

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) != 8 or lines[7] != "":
            raise CheckpointError(f"checkpoint has {len(lines) - 1} lines, expected 7")
        origin, size, root_b64, committee, epoch, height, block = lines[:7]
        size_v = _decimal(size, "tree size")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError("checkpoint root is not base64") from None
        if len(root) != HASH_LEN or base64.b64encode(root).decode("ascii") != root_b64:
            raise CheckpointError("checkpoint root must be 32 bytes in standard base64")
        committee_id = _field_hex(committee, "committee")
        if origin != origin_for(committee_id):
            raise CheckpointError(
                f"checkpoint origin {origin!r} does not match its committee line")
        epoch_v = _decimal(_field(epoch, "epoch"), "epoch")
        height_v = _decimal(_field(height, "height"), "height")
        block_digest = _field_hex(block, "block")
        return cls(size_v, root, committee_id, epoch_v, height_v, block_digest)


def _decimal(s: str, what: str) -> int:
    if not _DECIMAL.fullmatch(s) or int(s) >= 1 << 64:
        raise CheckpointError(f"checkpoint {what} {s!r} is not a canonical decimal")
    return int(s)


def _field(line: str, name: str) -> str:
    prefix = name + " "
    if not line.startswith(prefix):
        raise CheckpointError(f"checkpoint line {line!r} should start with {prefix!r}")
    return line[len(prefix):]


def _field_hex(line: str, name: str) -> bytes:
    value = _field(line, name)
    if not _HEX64.fullmatch(value):
        raise CheckpointError(f"checkpoint {name} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def verify_note(note: str, name: str, public_key: bytes) -> str:
    """Return the note's text if it carries a valid signature by (name, public_key).

    Signatures by other keys are ignored, as the signed-note spec requires; a signature line
    that claims this key (same name and key id) but does not verify is an error.
    """
    if len(public_key) != PUBLIC_KEY_LEN:
        raise CheckpointError(f"public key must be {PUBLIC_KEY_LEN} bytes")
    text, sigs = split_note(note)
    want = key_id(name, public_key)
    verifier = nacl.signing.VerifyKey(public_key)
    found = False
    for sig in sigs:
        if sig.name != name or sig.key_id != want:
            continue
        if len(sig.signature) != SIGNATURE_LEN:
            raise CheckpointError(f"signature by {name} has the wrong length")
        try:
            verifier.verify(text.encode("utf-8"), sig.signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            raise CheckpointError(f"signature by {name} does not verify") from None
        found = True
    if not found:
        raise CheckpointError(f"note carries no signature by {name}")
    return text


def verify_checkpoint(note: str, public_key: bytes) -> Checkpoint:
    """Parse a signed checkpoint note and check `public_key`'s signature on it.

    Pure (no I/O). Raises CheckpointError naming what is wrong.
    """
    text, _ = split_note(note)
    cp = Checkpoint.parse_text(text)
    verify_note(note, key_name(cp.origin, public_key), public_key)
    return cp
