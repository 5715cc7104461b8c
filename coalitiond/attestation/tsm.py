"""Quote generation inside a TD through configfs-tsm (Linux `Documentation/ABI/testing/
configfs-tsm`): `mkdir /sys/kernel/config/tsm/report/<name>`, write REPORTDATA to `inblob`,
read the quote from `outblob`, check `provider` and `generation`, `rmdir`.

`generation` counts writes to the entry's attributes. Reading it after `outblob` and finding
anything but the number of our own writes means another process wrote to the same entry
between our write and our read, so the quote may carry someone else's REPORTDATA: we retry
(a fresh entry name makes that unlikely; the check makes it impossible to miss).

File-system calls go through `TsmFs` so tests can run the same code against a fake tree that
behaves like the kernel (entries appear on mkdir, rmdir removes a populated entry).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Final, Protocol

from ..primitives.errors import LocalError, OperatorError
from .binding import REPORT_DATA_LEN
from .dcap import MAX_QUOTE_SIZE

TSM_REPORT_ROOT: Final = Path("/sys/kernel/config/tsm/report")
TDX_PROVIDER: Final = "tdx_guest"
#: Attempts before giving up when another writer races us on the entry.
MAX_ATTEMPTS: Final = 3
#: Small attribute files (provider, generation) are a few bytes; read at most this much.
MAX_ATTR_SIZE: Final = 256


class TsmFs(Protocol):
    def mkdir(self, path: Path) -> None: ...
    def rmdir(self, path: Path) -> None: ...
    def write(self, path: Path, data: bytes) -> None: ...
    def read(self, path: Path, limit: int) -> bytes: ...


class OsFs:
    """The real configfs."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)

    def read(self, path: Path, limit: int) -> bytes:
        with open(path, "rb") as f:
            return f.read(limit + 1)


class TsmError(OperatorError):
    """configfs-tsm is missing or misbehaves: the operator must run us in a TD with it."""


def get_quote(
    report_data: bytes, *, root: Path = TSM_REPORT_ROOT, fs: TsmFs | None = None
) -> bytes:
    """A TDX quote over `report_data` (64 bytes) from the kernel. Blocking; call in a thread."""
    if len(report_data) != REPORT_DATA_LEN:
        raise LocalError(f"REPORTDATA must be {REPORT_DATA_LEN} bytes, got {len(report_data)}")
    fs = fs or OsFs()
    if not os.path.isdir(root):
        raise TsmError(
            f"{root} not found: not inside a TD, or the kernel lacks configfs-tsm "
            "(CONFIG_TSM_REPORTS) or configfs is not mounted"
        )
    for _attempt in range(MAX_ATTEMPTS):
        entry = root / f"coalitiond-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            fs.mkdir(entry)
        except PermissionError:
            raise TsmError(f"cannot create {entry}: permission denied (needs root or CAP_SYS_ADMIN)") from None
        except OSError as e:
            raise TsmError(f"cannot create {entry}: {e.strerror}") from None
        try:
            provider = fs.read(entry / "provider", MAX_ATTR_SIZE).decode("ascii", "replace").strip()
            if provider != TDX_PROVIDER:
                raise TsmError(f"configfs-tsm provider is {provider!r}, not {TDX_PROVIDER!r}: not a TDX guest")
            fs.write(entry / "inblob", report_data)
            quote = fs.read(entry / "outblob", MAX_QUOTE_SIZE)
            generation = fs.read(entry / "generation", MAX_ATTR_SIZE).decode("ascii", "replace").strip()
        except OSError as e:
            raise TsmError(f"configfs-tsm request failed: {e.strerror or e}") from None
        finally:
            # A leftover entry only holds our own quote; failing to remove it is harmless.
            with contextlib.suppress(OSError):
                fs.rmdir(entry)
        if generation != "1":
            continue  # someone else wrote to our entry; never return their quote
        if not quote:
            raise TsmError("configfs-tsm returned an empty quote (is the quote service running?)")
        if len(quote) > MAX_QUOTE_SIZE:
            raise TsmError(f"configfs-tsm returned a quote larger than {MAX_QUOTE_SIZE} bytes")
        return quote
    raise TsmError(f"configfs-tsm entry raced by another writer {MAX_ATTEMPTS} times in a row")
