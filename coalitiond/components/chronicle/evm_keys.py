"""A Chronicle member's EVM account key: the secp256k1 key it posts anchors with.

Format (text, written with mode 0600, like the identity key of `primitives/keys.py`):

    coalitiond-secp256k1-evm-secret-v1
    <64 hex chars: the 32-byte secp256k1 private key>

`coalitiond evm-keygen --out PATH` writes one and prints its address; the committee config
lists every member's address (`[component.anchor_sink] members`), so readers attribute each
post on chain to a member.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ...primitives.errors import KeyFileError
from ...primitives.keys import read_secret_file, write_secret_file

EVM_KEY_FILE_HEADER: Final = "coalitiond-secp256k1-evm-secret-v1"
#: secp256k1's group order: a private key is 1..N-1.
_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def generate_evm_key() -> bytes:
    while True:
        secret = os.urandom(32)
        if 0 < int.from_bytes(secret, "big") < _SECP256K1_N:
            return secret


def write_evm_key_file(path: Path, secret: bytes, *, overwrite: bool = False) -> None:
    write_secret_file(path, EVM_KEY_FILE_HEADER, secret, overwrite=overwrite)


def load_evm_key_file(path: Path) -> LocalAccount:
    """The account in an EVM key file; KeyFileError (one line) if missing, malformed, out of
    range or readable by group or others."""
    secret = read_secret_file(path, EVM_KEY_FILE_HEADER)
    if not 0 < int.from_bytes(secret, "big") < _SECP256K1_N:
        raise KeyFileError(f"{path}: not a secp256k1 private key (out of range)")
    account: LocalAccount = Account.from_key(secret)
    return account


def evm_address(account: LocalAccount) -> bytes:
    return bytes.fromhex(account.address[2:])
