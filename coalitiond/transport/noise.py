"""The Noise Protocol Framework, revision 34 — a sans-IO engine (bytes in, bytes out).

Scope: DH `25519` (X25519 via libsodium's `crypto_scalarmult`), cipher `ChaChaPoly`
(IETF ChaCha20-Poly1305, nonce = 4 zero bytes ‖ 64-bit little-endian counter), and the hash
functions `SHA256`, `SHA512`, `BLAKE2s`, `BLAKE2b` (hashlib; HMAC and HKDF exactly as §4.3).
Every handshake pattern of §7 (one-way N/K/X, the twelve interactive fundamental patterns),
pre-messages, and the `pskN` modifiers of §9 are supported by one general token engine, so
the published vectors for every pattern can be replayed, not only the XX the link uses.
The deferred patterns (§18, e.g. `X1X`) are not implemented and are refused by name.

This module does no I/O, reads no clock, and draws randomness only when no ephemeral key was
injected (tests inject the vectors' ephemerals). Failures of authentication are `NoiseError`
(a RemoteError: the peer sent bad bytes); misuse of the API is `LocalError`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import nacl.utils

from ..primitives.errors import LocalError, RemoteError

#: §3: every Noise message is at most 65535 bytes.
MAX_MESSAGE_LEN: Final = 65535
DHLEN: Final = 32
TAGLEN: Final = 16
#: §5.1: nonce 2^64-1 is reserved (used by REKEY); a CipherState never encrypts with it.
MAX_NONCE: Final = (1 << 64) - 1
_ZEROS32: Final = b"\x00" * 32


class NoiseError(RemoteError):
    """A Noise message failed to authenticate or is malformed."""


# ---------------------------------------------------------------------------------------
# Primitives (§4)


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DHLEN:
            raise LocalError(f"X25519 private key must be {DHLEN} bytes")
        return cls(private, nacl.bindings.crypto_scalarmult_base(private))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(nacl.utils.random(DHLEN))

    def __repr__(self) -> str:  # never print the private key
        return f"KeyPair(public={self.public.hex()[:16]}…)"


def dh(keypair: KeyPair, public: bytes) -> bytes:
    if len(public) != DHLEN:
        raise NoiseError(f"X25519 public key must be {DHLEN} bytes, got {len(public)}")
    try:
        return nacl.bindings.crypto_scalarmult(keypair.private, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError, ValueError):
        # libsodium refuses low-order points (all-zero output); §12.1 allows rejecting them.
        raise NoiseError("X25519 with a low-order public key") from None


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def cipher_encrypt(k: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    out: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        plaintext, ad, _nonce(n), k
    )
    return out


def cipher_decrypt(k: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    try:
        out: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
            ciphertext, ad, _nonce(n), k
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise NoiseError("ChaChaPoly authentication failed") from None
    return out


@dataclass(frozen=True, slots=True)
class HashFunction:
    name: str
    hashlen: int
    blocklen: int
    new: Callable[[], Any]

    def hash(self, data: bytes) -> bytes:
        h = self.new()
        h.update(data)
        out: bytes = h.digest()
        return out

    def hmac(self, key: bytes, data: bytes) -> bytes:
        # hmac with a hashlib constructor is exactly §4.3's HMAC-HASH (RFC 2104).
        return hmac.new(key, data, self.new).digest()

    def hkdf(self, chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
        temp = self.hmac(chaining_key, ikm)
        out1 = self.hmac(temp, b"\x01")
        out2 = self.hmac(temp, out1 + b"\x02")
        if outputs == 2:
            return out1, out2
        return out1, out2, self.hmac(temp, out2 + b"\x03")


HASHES: Final[dict[str, HashFunction]] = {
    "SHA256": HashFunction("SHA256", 32, 64, hashlib.sha256),
    "SHA512": HashFunction("SHA512", 64, 128, hashlib.sha512),
    "BLAKE2s": HashFunction("BLAKE2s", 32, 64, hashlib.blake2s),
    "BLAKE2b": HashFunction("BLAKE2b", 64, 128, hashlib.blake2b),
}


# ---------------------------------------------------------------------------------------
# CipherState and SymmetricState (§5.1, §5.2)


class CipherState:
    """One direction's key and nonce. `rekey` is §11.3's REKEY()."""

    __slots__ = ("k", "n")

    def __init__(self, k: bytes | None = None) -> None:
        self.k = k
        self.n = 0

    def has_key(self) -> bool:
        return self.k is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.k is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise LocalError("Noise nonce exhausted; the link must rekey or close earlier")
        out = cipher_encrypt(self.k, self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.k is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise NoiseError("Noise nonce exhausted")
        # On failure n is not incremented (§5.1); the link closes anyway.
        out = cipher_decrypt(self.k, self.n, ad, ciphertext)
        self.n += 1
        return out

    def rekey(self) -> None:
        if self.k is None:
            raise LocalError("rekey without a key")
        self.k = cipher_encrypt(self.k, MAX_NONCE, b"", _ZEROS32)[:32]


class SymmetricState:
    __slots__ = ("cipher", "ck", "h", "hashfn")

    def __init__(self, protocol_name: bytes, hashfn: HashFunction) -> None:
        self.hashfn = hashfn
        if len(protocol_name) <= hashfn.hashlen:
            self.h = protocol_name + b"\x00" * (hashfn.hashlen - len(protocol_name))
        else:
            self.h = hashfn.hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hashfn.hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self.hashfn.hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = self.hashfn.hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = self.hashfn.hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:32]), CipherState(temp_k2[:32])


# ---------------------------------------------------------------------------------------
# Handshake patterns (§7)

# Each pattern: (initiator pre-message tokens, responder pre-message tokens, messages).
# Messages alternate initiator → responder → initiator …, starting with the initiator.
_PATTERNS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]]] = {
    "N": ((), ("s",), (("e", "es"),)),
    "K": (("s",), ("s",), (("e", "es", "ss"),)),
    "X": ((), ("s",), (("e", "es", "s", "ss"),)),
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": ((), (), (("e",), ("e", "ee", "s", "es"))),
    "KN": (("s",), (), (("e",), ("e", "ee", "se"))),
    "KK": (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": (("s",), (), (("e",), ("e", "ee", "se", "s", "es"))),
    "XN": ((), (), (("e",), ("e", "ee"), ("s", "se"))),
    "XK": ((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IN": ((), (), (("e", "s"), ("e", "ee", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": ((), (), (("e", "s"), ("e", "ee", "se", "s", "es"))),
}
ONE_WAY_PATTERNS: Final = frozenset({"N", "K", "X"})


@dataclass(frozen=True, slots=True)
class Protocol:
    """A parsed protocol name, e.g. `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b`."""

    name: str
    pattern: str
    psk_positions: tuple[int, ...]
    hashfn: HashFunction
    pre_initiator: tuple[str, ...]
    pre_responder: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def one_way(self) -> bool:
        return self.pattern in ONE_WAY_PATTERNS


class UnsupportedProtocol(LocalError):
    """A protocol name this engine does not implement."""


def parse_protocol(name: str) -> Protocol:
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise UnsupportedProtocol(f"not a Noise protocol name: {name!r}")
    _, handshake, dh_name, cipher_name, hash_name = parts
    if dh_name != "25519":
        raise UnsupportedProtocol(f"DH function {dh_name} is not implemented")
    if cipher_name != "ChaChaPoly":
        raise UnsupportedProtocol(f"cipher {cipher_name} is not implemented")
    if hash_name not in HASHES:
        raise UnsupportedProtocol(f"hash {hash_name} is not implemented")
    base = handshake
    psks: list[int] = []
    if "psk" in handshake:
        base, _, mods = handshake.partition("psk")
        for mod in ("psk" + mods).split("+"):
            if not mod.startswith("psk") or not mod[3:].isdigit():
                raise UnsupportedProtocol(f"modifier {mod!r} is not implemented")
            psks.append(int(mod[3:]))
    elif not handshake.isalpha() or not handshake.isupper():
        raise UnsupportedProtocol(f"handshake {handshake!r} is not implemented")
    if base not in _PATTERNS:
        raise UnsupportedProtocol(f"pattern {base!r} is not implemented")
    pre_i, pre_r, messages = _PATTERNS[base]
    msgs = [list(m) for m in messages]
    for pos in psks:
        # §9.2: psk0 goes at the start of the first message, pskN at the end of message N.
        if pos == 0:
            msgs[0].insert(0, "psk")
        elif 1 <= pos <= len(msgs):
            msgs[pos - 1].append("psk")
        else:
            raise UnsupportedProtocol(f"psk{pos} out of range for {base}")
    return Protocol(
        name, base, tuple(psks), HASHES[hash_name], pre_i, pre_r, tuple(tuple(m) for m in msgs)
    )


# ---------------------------------------------------------------------------------------
# HandshakeState (§5.3)


class HandshakeState:
    """Drives one handshake. Call `write_message` / `read_message` in the pattern's order;
    when `complete`, `split()` returns (send, receive) CipherStates for this side.
    """

    def __init__(
        self,
        protocol: Protocol | str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        self.protocol = parse_protocol(protocol) if isinstance(protocol, str) else protocol
        self.initiator = initiator
        self.s, self.e, self.rs, self.re = s, e, rs, re
        self._psks = list(psks)
        if len(self._psks) != len(self.protocol.psk_positions):
            raise LocalError(
                f"{self.protocol.name} needs {len(self.protocol.psk_positions)} PSKs"
            )
        if any(len(p) != 32 for p in self._psks):
            raise LocalError("every PSK must be 32 bytes")
        self.symmetric = SymmetricState(self.protocol.name.encode("ascii"), self.protocol.hashfn)
        self.symmetric.mix_hash(prologue)
        # Pre-messages: the initiator's first, then the responder's (§7.1).
        for owner_is_initiator, tokens in (
            (True, self.protocol.pre_initiator),
            (False, self.protocol.pre_responder),
        ):
            for token in tokens:
                mine = owner_is_initiator == initiator
                key = (self.s.public if self.s else None) if mine else self.rs
                if token != "s" or key is None:
                    raise LocalError(f"pre-message token {token} needs a known static key")
                self.symmetric.mix_hash(key)
        self._index = 0
        self._split: tuple[CipherState, CipherState] | None = None

    @property
    def complete(self) -> bool:
        return self._index >= len(self.protocol.messages)

    @property
    def message_index(self) -> int:
        """How many handshake messages were written or read so far."""
        return self._index

    @property
    def my_turn(self) -> bool:
        return not self.complete and (self._index % 2 == 0) == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.h

    def _dh(self, token: str) -> bytes:
        # "es": initiator's e with responder's s, seen from either side.
        ini, res = token[0], token[1]
        mine, theirs = (ini, res) if self.initiator else (res, ini)
        local = self.e if mine == "e" else self.s
        remote = self.re if theirs == "e" else self.rs
        if local is None or remote is None:
            raise LocalError(f"token {token} without the keys it needs")
        return dh(local, remote)

    def _psk_mode(self) -> bool:
        return bool(self.protocol.psk_positions)

    def write_message(self, payload: bytes = b"") -> bytes:
        if not self.my_turn:
            raise LocalError("write_message out of turn")
        out: list[bytes] = []
        sym = self.symmetric
        for token in self.protocol.messages[self._index]:
            if token == "e":
                if self.e is None:
                    self.e = KeyPair.generate()
                out.append(self.e.public)
                sym.mix_hash(self.e.public)
                if self._psk_mode():
                    sym.mix_key(self.e.public)
            elif token == "s":
                if self.s is None:
                    raise LocalError("pattern sends s but no static key was given")
                out.append(sym.encrypt_and_hash(self.s.public))
            elif token == "psk":
                sym.mix_key_and_hash(self._psks.pop(0))
            else:
                sym.mix_key(self._dh(token))
        out.append(sym.encrypt_and_hash(payload))
        message = b"".join(out)
        if len(message) > MAX_MESSAGE_LEN:
            raise LocalError(f"handshake message of {len(message)} bytes exceeds 65535")
        self._advance()
        return message

    def read_message(self, message: bytes) -> bytes:
        if self.complete or self.my_turn:
            raise LocalError("read_message out of turn")
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {len(message)} bytes exceeds 65535")
        sym = self.symmetric
        pos = 0
        for token in self.protocol.messages[self._index]:
            if token == "e":
                if len(message) - pos < DHLEN:
                    raise NoiseError("handshake message too short for an ephemeral key")
                self.re = message[pos : pos + DHLEN]
                pos += DHLEN
                sym.mix_hash(self.re)
                if self._psk_mode():
                    sym.mix_key(self.re)
            elif token == "s":
                n = DHLEN + (TAGLEN if sym.cipher.has_key() else 0)
                if len(message) - pos < n:
                    raise NoiseError("handshake message too short for a static key")
                self.rs = sym.decrypt_and_hash(message[pos : pos + n])
                pos += n
            elif token == "psk":
                sym.mix_key_and_hash(self._psks.pop(0))
            else:
                sym.mix_key(self._dh(token))
        rest = message[pos:]
        if sym.cipher.has_key() and len(rest) < TAGLEN:
            raise NoiseError("handshake message too short for its payload tag")
        payload = sym.decrypt_and_hash(rest)
        self._advance()
        return payload

    def _advance(self) -> None:
        self._index += 1
        if self.complete:
            c1, c2 = self.symmetric.split()
            self._split = (c1, c2) if self.initiator else (c2, c1)

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) for this side. One-way patterns: the responder only receives."""
        if self._split is None:
            raise LocalError("split before the handshake is complete")
        return self._split
