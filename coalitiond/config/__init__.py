"""Member configuration: TOML → frozen, typed objects (SPEC §1).

One file per member, sections `[node]`, `[network]`, `[committee]`, `[attestation]`,
`[component]` and, optionally, `[coalition]`. A standalone coalition file holds only
`[coalition]` (see `load_coalition`). `docs/configuration.md` lists every key.

Every refusal is a `ConfigError(path, key, problem)` whose message is one line naming the
file, the dotted key (`committee.members[2].peer_id`) and the problem. Unknown keys are
refused rather than ignored: a misspelt `fault_bnd` silently falling back to a default is
exactly the kind of mistake that splits a committee.

Parsing (`parse_config`, `parse_coalition`) is pure: it reads no file other than the TOML it
is given. `load_config` adds the one check that needs the disk: the node's key file must load
and its public key must be one of the members.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar, cast

from ..consensus.types import MAX_COMMAND_SIZE, MAX_COMMANDS_PER_BLOCK
from ..primitives.coalition import (
    MODULES,
    CitizenRef,
    Coalition,
    ConfluenceRef,
    confluence_fingerprint,
)
from ..primitives.committee import CommitteeSpec, default_fault_bound, network_id, quorum_size
from ..primitives.crypto import PUBLIC_KEY_LEN
from ..primitives.errors import ConfigError
from ..primitives.identity import ID_LEN, hash_structure
from ..primitives.keys import load_key_file

COMPONENT_KINDS: Final = (
    "atlas", "almanac", "chronicle", "compute", "intents", "ledger", "feed", "tickets"
)
CONFLUENCE_KINDS: Final = ("intents", "ledger")
FAILURE_MODES: Final = ("partial", "stall")
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
ATTESTATION_MODES: Final = ("tdx", "none")
#: Intel's TCB status names as dcap-qvl reports them, in a fixed order for stable messages
#: (a test keeps it equal to `attestation.dcap.TCB_STATUSES`, which this module does not import
#: to keep the verifier binding out of every config load). `Revoked` is absent on purpose: the
#: verifier treats it as a hard error, so accepting it could never take effect.
TCB_STATUSES: Final = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "TDRelaunchAdvised",
    "TDRelaunchAdvisedConfigurationNeeded",
)
ANCHOR_SINK_KINDS: Final = ("file", "http", "evm")

#: Size bounds. Everything read from a file is bounded like everything read from a peer.
MAX_CONFIG_FILE_BYTES: Final = 1024 * 1024
MAX_COMMITTEE_MEMBERS: Final = 64
MAX_CITIZENS: Final = 256
MAX_KEYS_PER_LIST: Final = 1024
MAX_BOOTSTRAP_PEERS: Final = 64
#: Ticket issuer roots one ACL recognises (and issuer configs a node names).
MAX_RECOGNISED_ISSUERS: Final = 16
#: The feed component keeps its publishers in memory and checks each publish against them.
MAX_FEED_PUBLISHERS: Final = 64
#: Longest string value (names, labels, URLs).
MAX_STRING_LEN: Final = 512
MAX_TIMEOUT_MS: Final = 3_600_000
MAX_TICK_INTERVAL_MS: Final = 86_400_000
MIN_TICK_INTERVAL_MS: Final = 10
MAX_ANCHOR_EVERY: Final = 1_000_000
MRTD_LEN: Final = 48
EVM_ADDRESS_LEN: Final = 20
RTMR_COUNT: Final = 4

# Defaults (documented in docs/configuration.md; keep the two in step).
DEFAULT_LEADER_TIMEOUT_MS: Final = 1_000
DEFAULT_VIEW_TIMEOUT_MS: Final = 2_000
DEFAULT_BATCH_MAX_COMMANDS: Final = 1_000
DEFAULT_BATCH_INTERVAL_MS: Final = 500
DEFAULT_MAX_TICKET_AGE_S: Final = 86_400
DEFAULT_TICK_INTERVAL_MS: Final = 1_000
DEFAULT_ANCHOR_EVERY: Final = 1_000
DEFAULT_FEED_MAX_BODY_BYTES: Final = MAX_COMMAND_SIZE // 2
#: The ticket issuer (`tickets`): its issuer keys and per-ticket bounds (kept equal to
#: `components.tickets`' constants by a test).
MAX_TICKET_ISSUERS: Final = 64
DEFAULT_TICKETS_MAX_CLAIMS_BYTES: Final = 4096
MAX_TICKETS_CLAIMS_BYTES: Final = MAX_COMMAND_SIZE // 2
DEFAULT_TICKETS_MAX_LIFETIME_S: Final = 30 * 86_400
MAX_TICKETS_LIFETIME_S: Final = 10 * 366 * 86_400

_HEX_DIGITS: Final = frozenset(string.hexdigits)
T = TypeVar("T")
_MISSING: Final = object()


# ---------------------------------------------------------------------------------------
# A typed reader over one TOML table that remembers which keys it consumed.


def _toml_type(value: object) -> str:
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


def _parse_hex(text: str, nbytes: int) -> bytes | str:
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


def _parse_address(text: str) -> Address | str:
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


class _Table:
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
            if default is _MISSING:
                raise self.error(name, "missing required key")
            return default
        value = self.data[name]
        # bool is an int in Python but not in TOML.
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise self.error(name, f"expected {want_text}, got {_toml_type(value)}")
        return value

    def string(
        self, name: str, default: object = _MISSING, *, choices: tuple[str, ...] = ()
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
        self, name: str, default: object = _MISSING, *, minimum: int = 0, maximum: int = 2**63 - 1
    ) -> Any:
        value = self._get(name, default, int, "an integer")
        if value is default:
            return value
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        if value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return value

    def hex(self, name: str, nbytes: int, default: object = _MISSING) -> Any:
        value = self._get(name, default, str, "a hex string")
        if value is default:
            return value
        parsed = _parse_hex(value, nbytes)
        if isinstance(parsed, str):
            raise self.error(name, parsed)
        return parsed

    def address(self, name: str, default: object = _MISSING) -> Any:
        value = self._get(name, default, str, "a string HOST:PORT")
        if value is default:
            return value
        parsed = _parse_address(value)
        if isinstance(parsed, str):
            raise self.error(name, parsed)
        return parsed

    def path_value(self, name: str, base: Path, default: object = _MISSING) -> Any:
        """A path; relative paths resolve against the config file's directory."""
        value = self._get(name, default, str, "a string (a path)")
        if value is default:
            return value
        if not value:
            raise self.error(name, "must not be empty")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    def array(
        self,
        name: str,
        item: Callable[[str, Any], T],
        default: object = _MISSING,
        *,
        limit: int = MAX_KEYS_PER_LIST,
    ) -> tuple[T, ...]:
        value = self._get(name, default, list, "an array")
        if value is default:
            return cast("tuple[T, ...]", default)
        if len(value) > limit:
            raise self.error(name, f"more than {limit} entries ({len(value)})")
        return tuple(item(f"{name}[{i}]", v) for i, v in enumerate(value))

    def hex_array(self, name: str, nbytes: int, default: object = _MISSING) -> tuple[bytes, ...]:
        def one(key: str, v: Any) -> bytes:
            if not isinstance(v, str):
                raise self.error(key, f"expected a hex string, got {_toml_type(v)}")
            parsed = _parse_hex(v, nbytes)
            if isinstance(parsed, str):
                raise self.error(key, parsed)
            return parsed

        values = self.array(name, one, default)
        if values is not default:
            _refuse_duplicates(self, name, values)
        return values

    def string_array(
        self, name: str, default: object = _MISSING, *, choices: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        def one(key: str, v: Any) -> str:
            if not isinstance(v, str):
                raise self.error(key, f"expected a string, got {_toml_type(v)}")
            if choices and v not in choices:
                raise self.error(key, f"expected one of {', '.join(choices)}; got {v!r}")
            if not v:
                raise self.error(key, "must not be empty")
            return v

        values = self.array(name, one, default)
        if values is not default:
            _refuse_duplicates(self, name, values)
        return values

    def table(self, name: str) -> _Table:
        found = self.optional_table(name)
        if found is None:
            raise self.error(name, "missing required table")
        return found

    def optional_table(self, name: str) -> _Table | None:
        self.used.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table, got {_toml_type(value)}")
        return _Table(self.path, value, self.key(name))

    def tables(
        self, name: str, *, limit: int, default: object = _MISSING
    ) -> tuple[_Table, ...]:
        def one(key: str, v: Any) -> _Table:
            if not isinstance(v, dict):
                raise self.error(key, f"expected a table, got {_toml_type(v)}")
            return _Table(self.path, v, self.key(key))

        return self.array(name, one, default, limit=limit)

    def finish(self) -> None:
        """Refuse every key nobody asked for."""
        for name in self.data:
            if name not in self.used:
                allowed = ", ".join(sorted(self.used)) or "none"
                raise self.error(name, f"unknown key (allowed here: {allowed})")


def _refuse_duplicates(t: _Table, name: str, values: tuple[Any, ...]) -> None:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            raise t.error(f"{name}[{i}]", f"duplicate of {t.key(name)}[{seen[v]}]")
        seen[v] = i


# ---------------------------------------------------------------------------------------
# [node], [network]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    key_file: Path
    data_dir: Path
    listen: Address
    advertise: Address
    metrics: Address | None = None
    log_format: str = "auto"
    log_level: str = "info"
    #: A member config of the Almanac committee this committee's component follows
    #: (`component.follow_almanac`): where its members are and what its id is made of. Local
    #: to this node (not consensus content); read at start.
    almanac_config: Path | None = None
    #: Member configs of the ticket issuers `committee.acl.ticket_issuers` recognises, one
    #: per issuer root (local to this node; read at start).
    ticket_issuer_configs: tuple[Path, ...] = ()


def _path_item(t: _Table, base: Path) -> Callable[[str, Any], Path]:
    def one(key: str, v: Any) -> Path:
        if not isinstance(v, str) or not v:
            raise t.error(key, f"expected a non-empty string (a path), got {_toml_type(v)}")
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p
    return one


def _parse_node(t: _Table, base: Path) -> NodeConfig:
    listen = t.address("listen")
    node = NodeConfig(
        key_file=t.path_value("key_file", base),
        data_dir=t.path_value("data_dir", base),
        listen=listen,
        advertise=t.address("advertise", listen),
        metrics=t.address("metrics", None),
        log_format=t.string("log_format", "auto", choices=LOG_FORMATS),
        log_level=t.string("log_level", "info", choices=LOG_LEVELS),
        almanac_config=t.path_value("almanac_config", base, None),
        ticket_issuer_configs=t.array("ticket_issuer_configs", _path_item(t, base), (),
                                      limit=MAX_RECOGNISED_ISSUERS),
    )
    t.finish()
    return node


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    name: str
    bootstrap: tuple[Address, ...] = ()

    @property
    def network_id(self) -> bytes:
        return network_id(self.name)


def _parse_network(t: _Table) -> NetworkConfig:
    def addr(key: str, v: Any) -> Address:
        if not isinstance(v, str):
            raise t.error(key, f"expected a string HOST:PORT, got {_toml_type(v)}")
        parsed = _parse_address(v)
        if isinstance(parsed, str):
            raise t.error(key, parsed)
        return parsed

    net = NetworkConfig(
        name=t.string("name"),
        bootstrap=t.array("bootstrap", addr, (), limit=MAX_BOOTSTRAP_PEERS),
    )
    t.finish()
    return net


# ---------------------------------------------------------------------------------------
# [committee]


@dataclass(frozen=True, slots=True)
class MemberEntry:
    peer_id: bytes
    address: Address
    operator: str = ""


@dataclass(frozen=True, slots=True)
class TimingConfig:
    leader_timeout_ms: int = DEFAULT_LEADER_TIMEOUT_MS
    view_timeout_ms: int = DEFAULT_VIEW_TIMEOUT_MS
    batch_max_commands: int = DEFAULT_BATCH_MAX_COMMANDS
    batch_interval_ms: int = DEFAULT_BATCH_INTERVAL_MS


@dataclass(frozen=True, slots=True)
class AclConfig:
    """Who may submit client commands: allow-listed client keys and/or ticket issuer roots."""

    clients: tuple[bytes, ...] = ()
    ticket_issuers: tuple[bytes, ...] = ()

    def to_cbor(self) -> dict[str, Any]:
        return {"clients": list(self.clients), "ticket_issuers": list(self.ticket_issuers)}


@dataclass(frozen=True, slots=True)
class CommitteeConfig:
    component: str
    name: str
    members: tuple[MemberEntry, ...]
    #: As configured; None means `default_fault_bound(n)`. See `effective_fault_bound`.
    fault_bound: int | None = None
    epoch: int = 0
    timing: TimingConfig = TimingConfig()
    acl: AclConfig = AclConfig()

    @property
    def effective_fault_bound(self) -> int:
        n = len(self.members)
        return default_fault_bound(n) if self.fault_bound is None else self.fault_bound

    @property
    def peer_ids(self) -> tuple[bytes, ...]:
        return tuple(m.peer_id for m in self.members)


def _parse_timing(t: _Table | None) -> TimingConfig:
    if t is None:
        return TimingConfig()
    timing = TimingConfig(
        leader_timeout_ms=t.integer(
            "leader_timeout_ms", DEFAULT_LEADER_TIMEOUT_MS, minimum=1, maximum=MAX_TIMEOUT_MS
        ),
        view_timeout_ms=t.integer(
            "view_timeout_ms", DEFAULT_VIEW_TIMEOUT_MS, minimum=1, maximum=MAX_TIMEOUT_MS
        ),
        batch_max_commands=t.integer(
            "batch_max_commands",
            DEFAULT_BATCH_MAX_COMMANDS,
            minimum=1,
            maximum=MAX_COMMANDS_PER_BLOCK,
        ),
        batch_interval_ms=t.integer(
            "batch_interval_ms", DEFAULT_BATCH_INTERVAL_MS, minimum=1, maximum=MAX_TIMEOUT_MS
        ),
    )
    # The leader timeout bounds the wait for a proposal inside a view; a view timeout shorter
    # than it would nullify views whose leader is still within its allowance.
    if timing.leader_timeout_ms > timing.view_timeout_ms:
        raise t.error(
            "leader_timeout_ms",
            f"must not exceed view_timeout_ms ({timing.leader_timeout_ms} > "
            f"{timing.view_timeout_ms})",
        )
    t.finish()
    return timing


def _parse_acl(t: _Table | None) -> AclConfig:
    if t is None:
        return AclConfig()
    acl = AclConfig(
        clients=t.hex_array("clients", PUBLIC_KEY_LEN, ()),
        ticket_issuers=t.hex_array("ticket_issuers", ID_LEN, ()),
    )
    if len(acl.ticket_issuers) > MAX_RECOGNISED_ISSUERS:
        raise t.error("ticket_issuers", f"at most {MAX_RECOGNISED_ISSUERS} issuer roots, got "
                      f"{len(acl.ticket_issuers)}")
    _refuse_duplicates(t, "ticket_issuers", acl.ticket_issuers)
    t.finish()
    return acl


def _parse_members(t: _Table) -> tuple[MemberEntry, ...]:
    rows = t.tables("members", limit=MAX_COMMITTEE_MEMBERS)
    if not rows:
        raise t.error("members", "a committee needs at least one member")
    members: list[MemberEntry] = []
    by_peer: dict[bytes, str] = {}
    by_addr: dict[Address, str] = {}
    for row in rows:
        m = MemberEntry(
            peer_id=row.hex("peer_id", PUBLIC_KEY_LEN),
            address=row.address("address"),
            operator=row.string("operator", ""),
        )
        row.finish()
        if m.peer_id in by_peer:
            raise row.error("peer_id", f"duplicate member: same peer id as {by_peer[m.peer_id]}")
        if m.address in by_addr:
            raise row.error("address", f"duplicate address: same as {by_addr[m.address]}")
        by_peer[m.peer_id] = row.prefix
        by_addr[m.address] = row.prefix
        members.append(m)
    return tuple(members)


def _parse_committee(t: _Table) -> CommitteeConfig:
    component = t.string("component", choices=COMPONENT_KINDS)
    name = t.string("name")
    members = _parse_members(t)
    n = len(members)
    fault_bound = t.integer("fault_bound", None, minimum=0)
    f_s = default_fault_bound(n) if fault_bound is None else fault_bound
    q = quorum_size(n, f_s)
    if q > n:
        raise t.error(
            "fault_bound",
            f"q > n: fault bound f_s={f_s} needs quorum q={q} = ceil((n + f_s + 1)/2), "
            f"but the committee has only n={n} members",
        )
    committee = CommitteeConfig(
        component=component,
        name=name,
        members=members,
        fault_bound=fault_bound,
        epoch=t.integer("epoch", 0),
        timing=_parse_timing(t.optional_table("timing")),
        acl=_parse_acl(t.optional_table("acl")),
    )
    t.finish()
    return committee


# ---------------------------------------------------------------------------------------
# [attestation]


#: `[attestation]` keys owned by `coalitiond.attestation.policy` (docs/attestation.md §4):
#: accepted here and validated by `AttestationPolicy.from_mapping`, which also reads the
#: seven keys this module parses, so the two never disagree about what a file means.
ATTESTATION_POLICY_EXTENSIONS: Final = (
    "grace_period_s",
    "rejected_advisories",
    "min_tcb_eval_data_number",
    "allow_dynamic_platform",
    "allow_cached_keys",
    "allow_smt",
    "require_zero_host_fields",
    "max_clock_skew_s",
)


@dataclass(frozen=True, slots=True)
class AttestationConfig:
    mode: str
    mrtd: tuple[bytes, ...] = ()
    #: Allowed values of RTMR0..RTMR3; an empty tuple leaves that RTMR unpinned.
    rtmr_pins: tuple[tuple[bytes, ...], ...] = ((),) * RTMR_COUNT
    tcb_statuses: tuple[str, ...] = ("UpToDate",)
    max_ticket_age_s: int = DEFAULT_MAX_TICKET_AGE_S
    pccs_url: str | None = None
    collateral_cache: Path | None = None
    #: The whole `[attestation]` table as written, for `AttestationPolicy.from_mapping`.
    table: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _http_url(t: _Table, name: str, default: object = _MISSING) -> Any:
    url = t.string(name, default)
    if url is not default and not url.startswith(("http://", "https://")):
        raise t.error(name, f"expected an http:// or https:// URL, got {url!r}")
    return url


def _parse_rtmr_pins(t: _Table | None) -> tuple[tuple[bytes, ...], ...]:
    if t is None:
        return ((),) * RTMR_COUNT
    pins: list[tuple[bytes, ...]] = []
    for i in range(RTMR_COUNT):
        name = f"rtmr{i}"
        value = t.data.get(name)
        if isinstance(value, list):
            values = t.hex_array(name, MRTD_LEN)
            if not values:
                raise t.error(name, "must not be empty (omit it to leave the RTMR unpinned)")
            pins.append(values)
        else:
            one: bytes | None = t.hex(name, MRTD_LEN, None)
            pins.append(() if one is None else (one,))
    t.finish()
    return tuple(pins)


def _parse_attestation(t: _Table, base: Path) -> AttestationConfig:
    mode = t.string("mode", choices=ATTESTATION_MODES)
    pins = _parse_rtmr_pins(t.optional_table("rtmr_pins"))
    att = AttestationConfig(
        mode=mode,
        mrtd=t.hex_array("mrtd", MRTD_LEN, ()),
        rtmr_pins=pins,
        tcb_statuses=t.string_array("tcb_statuses", ("UpToDate",), choices=TCB_STATUSES),
        max_ticket_age_s=t.integer(
            "max_ticket_age_s", DEFAULT_MAX_TICKET_AGE_S, minimum=1, maximum=30 * 86_400
        ),
        pccs_url=_http_url(t, "pccs_url", None),
        collateral_cache=t.path_value("collateral_cache", base, None),
        table=dict(t.data),
    )
    if att.mode == "none" and (att.mrtd or any(att.rtmr_pins)):
        # DESIGN §2.7: "none" is for development and must never silently disable a gate
        # the configuration otherwise declares.
        raise t.error("mode", 'mode = "none" is refused when TDX measurements are declared')
    if att.mode == "tdx":
        if not att.mrtd:
            raise t.error("mrtd", 'mode = "tdx" needs at least one allowed MR_TD')
        if not att.tcb_statuses:
            raise t.error("tcb_statuses", 'mode = "tdx" needs at least one accepted TCB status')
        if att.pccs_url is None and att.collateral_cache is None:
            raise t.error(
                "pccs_url", 'mode = "tdx" needs a collateral source: pccs_url or collateral_cache'
            )
    t.used.update(ATTESTATION_POLICY_EXTENSIONS)
    t.finish()
    if att.mode == "tdx" or any(k in t.data for k in ATTESTATION_POLICY_EXTENSIONS):
        # Imported here: the verifier binding is only needed for a TDX policy.
        from ..attestation.policy import AttestationPolicy

        AttestationPolicy.from_mapping(t.data, t.path)
    return att


# ---------------------------------------------------------------------------------------
# [component], one frozen class per kind


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """`feed`: a certified feed an operator publishes into (SPEC §5)."""

    KIND: ClassVar[str] = "feed"
    #: Client keys allowed to `publish`.
    publishers: tuple[bytes, ...]
    max_body_bytes: int = DEFAULT_FEED_MAX_BODY_BYTES
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "publishers": list(self.publishers),
            "max_body_bytes": self.max_body_bytes,
            "follow_almanac": self.follow_almanac,
        }


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    stable_id: bytes
    operator_key: bytes


@dataclass(frozen=True, slots=True)
class AtlasConfig:
    """`atlas`: the ordered catalogued citizens, each with the key allowed to publish its card."""

    KIND: ClassVar[str] = "atlas"
    citizens: tuple[CatalogEntry, ...]
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "citizens": [[c.stable_id, c.operator_key] for c in self.citizens],
            "follow_almanac": self.follow_almanac,
        }


@dataclass(frozen=True, slots=True)
class AlmanacConfig:
    KIND: ClassVar[str] = "almanac"
    tick_interval_ms: int = DEFAULT_TICK_INTERVAL_MS

    def to_cbor(self) -> dict[str, Any]:
        return {"tick_interval_ms": self.tick_interval_ms}


@dataclass(frozen=True, slots=True)
class AnchorSink:
    """Where Chronicle anchors go. Only `evm`'s chain and contract are consensus content:
    a file path or URL is this member's own business and may differ between members."""

    kind: str
    path: Path | None = None
    url: str | None = None
    chain_id: int | None = None
    contract: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {"kind": self.kind, "chain_id": self.chain_id, "contract": self.contract}


@dataclass(frozen=True, slots=True)
class ChronicleConfig:
    KIND: ClassVar[str] = "chronicle"
    anchor_sink: AnchorSink
    anchor_every: int = DEFAULT_ANCHOR_EVERY
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "anchor_every": self.anchor_every,
            "anchor_sink": self.anchor_sink.to_cbor(),
            "follow_almanac": self.follow_almanac,
        }


@dataclass(frozen=True, slots=True)
class ComputeConfig:
    KIND: ClassVar[str] = "compute"
    #: Committee id of the Almanac whose ticks stamp grants and deadlines.
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {"follow_almanac": self.follow_almanac}


@dataclass(frozen=True, slots=True)
class ConfluenceComponentConfig:
    """Common shape of the two confluences: ordered spanned citizens and a failure mode."""

    KIND: ClassVar[str] = ""
    citizens: tuple[CitizenRef, ...]
    failure_mode: str = "stall"
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "citizens": [c.preimage() for c in self.citizens],
            "failure_mode": self.failure_mode,
            "follow_almanac": self.follow_almanac,
        }


@dataclass(frozen=True, slots=True)
class IntentsConfig(ConfluenceComponentConfig):
    KIND: ClassVar[str] = "intents"


@dataclass(frozen=True, slots=True)
class LedgerConfig(ConfluenceComponentConfig):
    KIND: ClassVar[str] = "ledger"


@dataclass(frozen=True, slots=True)
class TicketsConfig:
    """`tickets`: the coalition's ticket issuer (SPEC §3.5)."""

    KIND: ClassVar[str] = "tickets"
    #: Client keys allowed to `issue` and `revoke` (they must be admitted by the ACL too).
    issuers: tuple[bytes, ...]
    max_claims_bytes: int = DEFAULT_TICKETS_MAX_CLAIMS_BYTES
    max_lifetime_s: int = DEFAULT_TICKETS_MAX_LIFETIME_S

    def to_cbor(self) -> dict[str, Any]:
        return {
            "issuers": list(self.issuers),
            "max_claims_bytes": self.max_claims_bytes,
            "max_lifetime_s": self.max_lifetime_s,
        }


ComponentConfig = (
    FeedConfig | AtlasConfig | AlmanacConfig | ChronicleConfig | ComputeConfig
    | IntentsConfig | LedgerConfig | TicketsConfig
)


def _follow(t: _Table) -> bytes | None:
    value: bytes | None = t.hex("follow_almanac", ID_LEN, None)
    return value


def _parse_citizen_ref(t: _Table, *, default_role: str = "") -> CitizenRef:
    ref = CitizenRef(
        stable_id=t.hex("stable_id", ID_LEN),
        content_hash=t.hex("content_hash", ID_LEN, None),
        role=t.string("role", default_role),
    )
    t.finish()
    return ref


def _refuse_duplicate_citizens(rows: tuple[_Table, ...], ids: list[bytes]) -> None:
    seen: dict[bytes, str] = {}
    for row, sid in zip(rows, ids, strict=True):
        if sid in seen:
            raise row.error("stable_id", f"duplicate citizen: same stable id as {seen[sid]}")
        seen[sid] = row.prefix


def _parse_component(kind: str, t: _Table, base: Path) -> ComponentConfig:
    component: ComponentConfig
    if kind == "feed":
        publishers = t.hex_array("publishers", PUBLIC_KEY_LEN)
        if not 1 <= len(publishers) <= MAX_FEED_PUBLISHERS:
            raise t.error(
                "publishers", f"a feed needs 1 to {MAX_FEED_PUBLISHERS} publishers, got {len(publishers)}"
            )
        component = FeedConfig(
            publishers=publishers,
            max_body_bytes=t.integer(
                "max_body_bytes", DEFAULT_FEED_MAX_BODY_BYTES, minimum=1, maximum=MAX_COMMAND_SIZE
            ),
            follow_almanac=_follow(t),
        )
    elif kind == "atlas":
        rows = t.tables("citizens", limit=MAX_CITIZENS)
        entries = []
        for row in rows:
            entries.append(
                CatalogEntry(
                    stable_id=row.hex("stable_id", ID_LEN),
                    operator_key=row.hex("operator_key", PUBLIC_KEY_LEN),
                )
            )
            row.finish()
        _refuse_duplicate_citizens(rows, [e.stable_id for e in entries])
        component = AtlasConfig(citizens=tuple(entries), follow_almanac=_follow(t))
    elif kind == "almanac":
        component = AlmanacConfig(
            tick_interval_ms=t.integer(
                "tick_interval_ms",
                DEFAULT_TICK_INTERVAL_MS,
                minimum=MIN_TICK_INTERVAL_MS,
                maximum=MAX_TICK_INTERVAL_MS,
            )
        )
    elif kind == "chronicle":
        component = ChronicleConfig(
            anchor_sink=_parse_anchor_sink(t.table("anchor_sink"), base),
            anchor_every=t.integer(
                "anchor_every", DEFAULT_ANCHOR_EVERY, minimum=1, maximum=MAX_ANCHOR_EVERY
            ),
            follow_almanac=_follow(t),
        )
    elif kind == "compute":
        component = ComputeConfig(follow_almanac=_follow(t))
    elif kind == "tickets":
        issuers = t.hex_array("issuers", PUBLIC_KEY_LEN)
        if len(issuers) > MAX_TICKET_ISSUERS:
            raise t.error(
                "issuers", f"at most {MAX_TICKET_ISSUERS} issuer keys, got {len(issuers)}"
            )
        component = TicketsConfig(
            issuers=issuers,
            max_claims_bytes=t.integer(
                "max_claims_bytes",
                DEFAULT_TICKETS_MAX_CLAIMS_BYTES,
                minimum=1,
                maximum=MAX_TICKETS_CLAIMS_BYTES,
            ),
            max_lifetime_s=t.integer(
                "max_lifetime_s",
                DEFAULT_TICKETS_MAX_LIFETIME_S,
                minimum=1,
                maximum=MAX_TICKETS_LIFETIME_S,
            ),
        )
    else:
        rows = t.tables("citizens", limit=MAX_CITIZENS)
        if not rows:
            raise t.error("citizens", "a confluence spans at least one citizen")
        refs = [_parse_citizen_ref(row) for row in rows]
        _refuse_duplicate_citizens(rows, [r.stable_id for r in refs])
        cls = IntentsConfig if kind == "intents" else LedgerConfig
        component = cls(
            citizens=tuple(refs),
            failure_mode=t.string("failure_mode", "stall", choices=FAILURE_MODES),
            follow_almanac=_follow(t),
        )
    t.finish()
    return component


def _parse_anchor_sink(t: _Table, base: Path) -> AnchorSink:
    kind = t.string("kind", choices=ANCHOR_SINK_KINDS)
    if kind == "file":
        sink = AnchorSink(kind, path=t.path_value("path", base))
    elif kind == "http":
        sink = AnchorSink(kind, url=_http_url(t, "url"))
    else:
        contract_text = t.string("contract")
        body = contract_text[2:] if contract_text.startswith("0x") else contract_text
        contract = _parse_hex(body, EVM_ADDRESS_LEN)
        if isinstance(contract, str):
            raise t.error("contract", contract)
        url = t.string("url")
        sink = AnchorSink(
            kind,
            url=url,
            chain_id=t.integer("chain_id", minimum=1),
            contract=contract,
        )
    t.finish()
    return sink


# ---------------------------------------------------------------------------------------
# [coalition]


def _parse_coalition(t: _Table) -> Coalition:
    name = t.string("name")
    lattice_rows = t.tables("lattices", limit=MAX_CITIZENS, default=())
    organism_rows = t.tables("organisms", limit=MAX_CITIZENS, default=())
    lattices = [_parse_citizen_ref(r, default_role="lattice") for r in lattice_rows]
    organisms = [_parse_citizen_ref(r, default_role="organism") for r in organism_rows]
    _refuse_duplicate_citizens(
        (*lattice_rows, *organism_rows), [c.stable_id for c in (*lattices, *organisms)]
    )

    confluences: list[ConfluenceRef] = []
    seen_names: dict[str, str] = {}
    seen_fps: dict[bytes, str] = {}
    for row in t.tables("confluences", limit=MAX_CITIZENS, default=()):
        ref = ConfluenceRef(name=row.string("name"), fingerprint=row.hex("fingerprint", ID_LEN))
        row.finish()
        if ref.name in seen_names:
            raise row.error("name", f"duplicate confluence: same name as {seen_names[ref.name]}")
        if ref.fingerprint in seen_fps:
            raise row.error(
                "fingerprint", f"duplicate confluence: same fingerprint as {seen_fps[ref.fingerprint]}"
            )
        seen_names[ref.name] = row.prefix
        seen_fps[ref.fingerprint] = row.prefix
        confluences.append(ref)

    modules = t.string_array("modules", choices=MODULES)
    not_shipped = t.string_array("not_shipped", (), choices=MODULES)
    for m in not_shipped:
        if m in modules:
            raise t.error("not_shipped", f"module {m!r} is also listed in {t.key('modules')}")
    for m in MODULES:
        if m not in modules and m not in not_shipped:
            raise t.error(
                "modules",
                f"module {m!r} is in neither {t.key('modules')} nor {t.key('not_shipped')}; "
                f"state every module explicitly",
            )
    coalition = Coalition(
        name=name,
        lattices=tuple(lattices),
        organisms=tuple(organisms),
        confluences=tuple(confluences),
        modules=modules,
        not_shipped=not_shipped,
        ticket_issuer=t.hex("ticket_issuer", ID_LEN, None),
    )
    t.finish()
    return coalition


# ---------------------------------------------------------------------------------------
# The whole file


@dataclass(frozen=True, slots=True)
class MemberConfig:
    path: Path
    node: NodeConfig
    network: NetworkConfig
    committee: CommitteeConfig
    attestation: AttestationConfig
    component: ComponentConfig
    coalition: Coalition | None = None

    @property
    def component_config_digest(self) -> bytes:
        """Everything that decides how a block's commands execute, hashed into the committee
        id: the component kind, its (normalised) section and the client ACL. Members whose
        ACLs differed would admit different commands at apply time and split their state,
        so they must never form a quorum together."""
        return hash_structure("component-config", 1, self.committee.component,
                              self.component.to_cbor(), self.committee.acl.to_cbor())

    def committee_spec(self) -> CommitteeSpec:
        """The committee every layer agrees on, byte for byte."""
        return CommitteeSpec(
            network_name=self.network.name,
            component_kind=self.committee.component,
            component_name=self.committee.name,
            members=self.committee.peer_ids,
            fault_bound=self.committee.effective_fault_bound,
            epoch=self.committee.epoch,
            component_config_digest=self.component_config_digest,
        )

    def confluence_fingerprint(self) -> bytes | None:
        """For an intents/ledger member: the fingerprint coalitions reference it by."""
        if not isinstance(self.component, ConfluenceComponentConfig):
            return None
        return confluence_fingerprint(
            self.committee.name,
            self.component.citizens,
            {
                "parameters": self.component.to_cbor(),
                "state_machine": f"{self.component.KIND}/v1",
            },
            self.committee.acl.to_cbor(),
        )


def _read_toml(path: Path) -> dict[str, Any]:
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


def parse_config(data: Mapping[str, Any], path: Path) -> MemberConfig:
    """Validate parsed TOML as a member config. Pure: touches no file."""
    top = _Table(str(path), data, "")
    base = path.parent
    node_t = top.table("node")
    network_t = top.table("network")
    committee_t = top.table("committee")
    attestation_t = top.table("attestation")
    component_t = top.table("component")
    coalition_t = top.optional_table("coalition")
    top.finish()
    node = _parse_node(node_t, base)
    network = _parse_network(network_t)
    committee = _parse_committee(committee_t)
    attestation = _parse_attestation(attestation_t, base)
    component = _parse_component(committee.component, component_t, base)
    coalition = None if coalition_t is None else _parse_coalition(coalition_t)
    if (
        coalition is not None
        and committee.component in MODULES
        and committee.component not in coalition.modules
    ):
        raise ConfigError(
            str(path),
            "committee.component",
            f"this member serves module {committee.component!r}, which coalition.modules "
            f"does not ship",
        )
    return MemberConfig(
        path=path,
        node=node,
        network=network,
        committee=committee,
        attestation=attestation,
        component=component,
        coalition=coalition,
    )


def check_member_key(config: MemberConfig) -> int:
    """Load the node's key file and return its member index; refuse a key not in the list."""
    key = load_key_file(config.node.key_file)
    try:
        return config.committee.peer_ids.index(key.public)
    except ValueError:
        raise ConfigError(
            str(config.path),
            "node.key_file",
            f"this node's public key {key.public.hex()} (from {config.node.key_file}) is not "
            f"among committee.members",
        ) from None


def load_config(path: Path, *, check_key: bool = True) -> MemberConfig:
    """Read, validate and (unless `check_key=False`) check the key file of a member config."""
    config = parse_config(_read_toml(path), path)
    if check_key:
        check_member_key(config)
    return config


def parse_coalition(data: Mapping[str, Any], path: Path) -> Coalition:
    """Validate parsed TOML as a standalone coalition file (only a `[coalition]` table)."""
    top = _Table(str(path), data, "")
    t = top.table("coalition")
    top.finish()
    return _parse_coalition(t)


def load_coalition(path: Path) -> Coalition:
    """The coalition of a standalone coalition file or of a member config's `[coalition]`."""
    data = _read_toml(path)
    if set(data) == {"coalition"}:
        return parse_coalition(data, path)
    config = parse_config(data, path)
    if config.coalition is None:
        raise ConfigError(str(path), "coalition", "missing required table")
    return config.coalition

