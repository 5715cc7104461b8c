"""Domain-separated ed25519 signatures (DESIGN §2.2).

Every signature is over `domain_tag ‖ 0x00 ‖ encoded_message`. Tags are ASCII, contain no
NUL, and each message kind has its own, so a signature can never be replayed as another kind.
The NUL separator makes the tag set prefix-free: no tag ‖ message can equal another
tag ‖ message unless both tag and message are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.signing

from .errors import LocalError, SignatureError

PUBLIC_KEY_LEN: Final = 32
SIGNATURE_LEN: Final = 64


def _check_tag(domain_tag: bytes) -> None:
    if not domain_tag or b"\x00" in domain_tag or not domain_tag.isascii():
        raise LocalError(f"invalid domain tag {domain_tag!r}")


def signing_input(domain_tag: bytes, message: bytes) -> bytes:
    _check_tag(domain_tag)
    return domain_tag + b"\x00" + message


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An ed25519 identity. `public` is the 32-byte PeerId."""

    seed: bytes
    # Derived once: deriving the key pair from the seed is a scalar multiplication, and a
    # member signs several times per view.
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    public: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise LocalError("ed25519 seed must be 32 bytes")
        signer = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_signer", signer)
        object.__setattr__(self, "public", bytes(signer.verify_key))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    def sign(self, domain_tag: bytes, message: bytes) -> bytes:
        return self._signer.sign(signing_input(domain_tag, message)).signature

    def sign_untagged(self, message: bytes) -> bytes:
        """Plain ed25519 over `message`, for formats that fix the signed bytes themselves
        (C2SP signed notes). Everything of ours signs with `sign` and a domain tag."""
        return self._signer.sign(message).signature

    def __repr__(self) -> str:  # never print the seed
        return f"SigningKey(public={self.public.hex()[:16]}…)"


def verify(public_key: bytes, domain_tag: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `public_key`'s over tag ‖ message."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise SignatureError(f"public key must be {PUBLIC_KEY_LEN} bytes, got {len(public_key)}")
    if len(signature) != SIGNATURE_LEN:
        raise SignatureError(f"signature must be {SIGNATURE_LEN} bytes, got {len(signature)}")
    try:
        nacl.signing.VerifyKey(public_key).verify(signing_input(domain_tag, message), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise SignatureError(f"bad {domain_tag.decode()} signature") from None


def is_valid(public_key: bytes, domain_tag: bytes, message: bytes, signature: bytes) -> bool:
    try:
        verify(public_key, domain_tag, message, signature)
    except SignatureError:
        return False
    return True
