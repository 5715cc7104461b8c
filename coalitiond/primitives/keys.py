"""Identity key files.

Format (text, one key per file, written with mode 0600):

    coalitiond-ed25519-secret-v1
    <64 hex chars: the 32-byte ed25519 seed>

A file readable by group or others is refused: a leaked member key lets anyone sign votes
in that member's name, and the fault bound counts such a member as Byzantine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from .crypto import SigningKey
from .errors import KeyFileError

KEY_FILE_HEADER: Final = "coalitiond-ed25519-secret-v1"


def write_key_file(path: Path, key: SigningKey, *, overwrite: bool = False) -> None:
    """Write `key` to `path` with mode 0600, atomically and durably."""
    write_secret_file(path, KEY_FILE_HEADER, key.seed, overwrite=overwrite)


def write_secret_file(path: Path, header: str, secret: bytes, *, overwrite: bool = False
                      ) -> None:
    """`header`, then the secret in hex, to `path` with mode 0600, atomically and durably
    (identity keys here; the EVM anchor keys of components/chronicle/evm_keys.py too)."""
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: refusing to overwrite an existing key file")
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:  # missing directory, read-only file system, permissions
        raise KeyFileError(f"{path}: cannot write key file: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but an existing tmp file might be wider
        os.write(fd, f"{header}\n{secret.hex()}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_key_file(path: Path) -> SigningKey:
    """Load an identity key; refuse loose permissions or a malformed file with one line."""
    return SigningKey(read_secret_file(path, KEY_FILE_HEADER))


def read_secret_file(path: Path, header: str) -> bytes:
    """The 32-byte secret of a file `write_secret_file` wrote; refuse loose permissions or
    a malformed file with one line."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: key file is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: key file mode is {mode:04o}; it must not be readable by group or "
            f"others (run: chmod 600 {path})"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise KeyFileError(f"{path}: malformed key file (not ASCII text)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != 2 or lines[0] != header:
        raise KeyFileError(
            f"{path}: malformed key file (expected the line {header!r} "
            f"then 64 hex characters)"
        )
    seed_hex = lines[1].strip()
    try:
        seed = bytes.fromhex(seed_hex)
    except ValueError:
        seed = b""
    if len(seed) != 32 or len(seed_hex) != 64:
        raise KeyFileError(f"{path}: malformed key file (the secret must be 64 hex characters)")
    return seed
