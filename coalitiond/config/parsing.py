"""The TOML reader every configuration section is parsed with (SPEC §1).

`Table` reads one TOML table with typed getters, bounds and one-line `ConfigError`s naming
the file, the dotted key and the problem, and remembers which keys it consumed so `finish`
can refuse every key nobody asked for. The other helpers here are the value parsers and
checks more than one section shares (hex, `HOST:PORT`, URLs, duplicate entries, the
`follow_almanac` committee id). Pure: reads no file except in `read_toml`.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from ..primitives.errors import ConfigError
from ..primitives.identity import ID_LEN

#: Size bounds. Everything read from a file is bounded like everything read from a peer.
MAX_CONFIG_FILE_BYTES: Final = 1024 * 1024
MAX_CITIZENS: Final = 256
MAX_KEYS_PER_LIST: Final = 1024
#: Longest string value (names, labels, URLs).
MAX_STRING_LEN: Final = 512

_HEX_DIGITS: Final = frozenset(string.hexdigits)
T = TypeVar("T")
MISSING: Final = object()


# ---------------------------------------------------------------------------------------
# A typed reader over one TOML table that remembers which keys it consumed.


def toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def parse_hex(text: str, nbytes: int) -> bytes | str:
    """bytes, or the problem with `text` as a hex string of `nbytes` bytes."""
    if len(text) != 2 * nbytes:
        return f"expected {2 * nbytes} hex characters ({nbytes} bytes), got {len(text)}"
    # Checked by hand: bytes.fromhex would skip embedded whitespace and return fewer bytes.
    if not all(c in _HEX_DIGITS for c in text):
        return f"not a hex string: {text!r}"
    return bytes.fromhex(text)


@dataclass(frozen=True, slots=True)
class Address:
    """`HOST:PORT`; IPv6 hosts in brackets (`[::1]:7000`)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address | str:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return f"expected HOST:PORT, got {text!r}"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return f"an IPv6 host must be in brackets ([::1]:PORT), got {text!r}"
    port = int(port_text)
    if not 1 <= port <= 65535 or not host:
        return f"expected HOST:PORT with a port in 1..65535, got {text!r}"
    return Address(host, port)


class Table:
    def __init__(self, path: str, data: Mapping[str, Any], prefix: str) -> None:
        self.path = path
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, default: object, want: type, want_text: str) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is MISSING:
                raise self.error(name, "missing required key")
            return default
        value = self.data[name]
        # bool is an int in Python but not in TOML.
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise self.error(name, f"expected {want_text}, got {toml_type(value)}")
        return value

    def string(
        self, name: str, default: object = MISSING, *, choices: tuple[str, ...] = ()
    ) -> Any:
        value = self._get(name, default, str, "a string")
        if value is default:
            return value
        if choices and value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}; got {value!r}")
        if not choices and not value:
            raise self.error(name, "must not be empty")
        if len(value) > MAX_STRING_LEN:
            raise self.error(name, f"longer than {MAX_STRING_LEN} characters")
        return value

    def integer(
        self, name: str, default: object = MISSING, *, minimum: int = 0, maximum: int = 2**63 - 1
    ) -> Any:
        value = self._get(name, default, int, "an integer")
        if value is default:
            return value
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        if value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return value

    def hex(self, name: str, nbytes: int, default: object = MISSING) -> Any:
        value = self._get(name, default, str, "a hex string")
        if value is default:
            return value
        parsed = parse_hex(value, nbytes)
        if isinstance(parsed, str):
            raise self.error(name, parsed)
        return parsed

    def address(self, name: str, default: object = MISSING) -> Any:
        value = self._get(name, default, str, "a string HOST:PORT")
        if value is default:
            return value
        parsed = parse_address(value)
        if isinstance(parsed, str):
            raise self.error(name, parsed)
        return parsed

    def path_value(self, name: str, base: Path, default: object = MISSING) -> Any:
        """A path; relative paths resolve against the config file's directory."""
        value = self._get(name, default, str, "a string (a path)")
        if value is default:
            return value
        if not value:
            raise self.error(name, "must not be empty")
        if "\0" in value:
            raise self.error(name, "must not contain a NUL character")
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # `~user/...` for a user this host does not know
            raise self.error(name, f"cannot expand {value.split('/')[0][:64]!r}: no such "
                             "user's home directory") from None
        return p if p.is_absolute() else base / p

    def array(
        self,
        name: str,
        item: Callable[[str, Any], T],
        default: object = MISSING,
        *,
        limit: int = MAX_KEYS_PER_LIST,
    ) -> tuple[T, ...]:
        value = self._get(name, default, list, "an array")
        if value is default:
            return cast("tuple[T, ...]", default)
        if len(value) > limit:
            raise self.error(name, f"more than {limit} entries ({len(value)})")
        return tuple(item(f"{name}[{i}]", v) for i, v in enumerate(value))

    def hex_array(self, name: str, nbytes: int, default: object = MISSING) -> tuple[bytes, ...]:
        def one(key: str, v: Any) -> bytes:
            if not isinstance(v, str):
                raise self.error(key, f"expected a hex string, got {toml_type(v)}")
            parsed = parse_hex(v, nbytes)
            if isinstance(parsed, str):
                raise self.error(key, parsed)
            return parsed

        values = self.array(name, one, default)
        if values is not default:
            refuse_duplicates(self, name, values)
        return values

    def string_array(
        self, name: str, default: object = MISSING, *, choices: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        def one(key: str, v: Any) -> str:
            if not isinstance(v, str):
                raise self.error(key, f"expected a string, got {toml_type(v)}")
            if choices and v not in choices:
                raise self.error(key, f"expected one of {', '.join(choices)}; got {v!r}")
            if not v:
                raise self.error(key, "must not be empty")
            return v

        values = self.array(name, one, default)
        if values is not default:
            refuse_duplicates(self, name, values)
        return values

    def table(self, name: str) -> Table:
        found = self.optional_table(name)
        if found is None:
            raise self.error(name, "missing required table")
        return found

    def optional_table(self, name: str) -> Table | None:
        self.used.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table, got {toml_type(value)}")
        return Table(self.path, value, self.key(name))

    def tables(
        self, name: str, *, limit: int, default: object = MISSING
    ) -> tuple[Table, ...]:
        def one(key: str, v: Any) -> Table:
            if not isinstance(v, dict):
                raise self.error(key, f"expected a table, got {toml_type(v)}")
            return Table(self.path, v, self.key(key))

        return self.array(name, one, default, limit=limit)

    def finish(self) -> None:
        """Refuse every key nobody asked for."""
        for name in self.data:
            if name not in self.used:
                allowed = ", ".join(sorted(self.used)) or "none"
                raise self.error(name, f"unknown key (allowed here: {allowed})")


def refuse_duplicates(t: Table, name: str, values: tuple[Any, ...]) -> None:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            raise t.error(f"{name}[{i}]", f"duplicate of {t.key(name)}[{seen[v]}]")
        seen[v] = i


def http_url(t: Table, name: str, default: object = MISSING) -> Any:
    url = t.string(name, default)
    if url is not default and not url.startswith(("http://", "https://")):
        raise t.error(name, f"expected an http:// or https:// URL, got {url!r}")
    return url



def parse_follow_almanac(t: Table) -> bytes | None:
    value: bytes | None = t.hex("follow_almanac", ID_LEN, None)
    return value



def refuse_duplicate_citizens(rows: tuple[Table, ...], ids: list[bytes]) -> None:
    seen: dict[bytes, str] = {}
    for row, sid in zip(rows, ids, strict=True):
        if sid in seen:
            raise row.error("stable_id", f"duplicate citizen: same stable id as {seen[sid]}")
        seen[sid] = row.prefix



def read_toml(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(where, "", "config file not found") from None
    except OSError as e:
        raise ConfigError(where, "", f"cannot read config file: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(where, "", f"config file larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(where, "", "config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(where, "", f"invalid TOML: {e}") from None

