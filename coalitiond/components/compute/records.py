"""Compute's records and their wire shapes (docs/compute.md §2): provider cards, requests,
grants, usage logs and the state records, each read field by field from untrusted CBOR
(`BadField` names the field); the provider binding a card's TDX quote must carry; and the
command builders clients, the devnet and tests use. Everything here is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ...attestation.quote import MRTD_LEN, quote_mr_td, quote_report_data
from ...commands.envelope import Command, InvalidCommand
from ...primitives.crypto import PUBLIC_KEY_LEN, SIGNATURE_LEN, SigningKey, is_valid
from ...primitives.encoding import encode
from ...primitives.identity import ID_LEN, hash_structure

# -- bounds of single records (each one a refusal with a reason when exceeded) ----------------

MAX_REGIONS: Final = 16
MAX_REGION_LEN: Final = 32
_REGION_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
MAX_CPU_MILLICORES: Final = 1 << 32
MAX_RAM_MIB: Final = 1 << 32
MAX_STORAGE_GIB: Final = 1 << 32
MAX_RATE_PER_HOUR: Final = (1 << 63) - 1
MAX_TICK: Final = (1 << 63) - 1
#: One year and a day.
MAX_DURATION_SEC: Final = 366 * 24 * 3600
MAX_CPU_SECONDS: Final = (1 << 63) - 1
MIN_EXIT_CODE: Final = -(1 << 31)
MAX_EXIT_CODE: Final = (1 << 31) - 1

LOG_TAG: Final = b"coalitiond/compute-log/v1"
LOG_TYPE: Final = "compute-log"
SCHEMA: Final = 1

OPEN: Final = "open"
GRANTED: Final = "granted"
LAPSED: Final = "lapsed"
CANCELLED: Final = "cancelled"
LIVE: Final = "live"
EXPIRED: Final = "expired"
_REQUEST_STATUSES: Final = frozenset({OPEN, GRANTED, LAPSED, CANCELLED})
_GRANT_STATUSES: Final = frozenset({LIVE, EXPIRED})

#: Type name of the provider binding in REPORTDATA[0..32] (docs/compute.md §9).
QUOTE_BINDING_TYPE: Final = "compute-provider-quote"
QUOTE_BINDING_LEN: Final = 32


class BadField(Exception):
    """A field of a record from outside is wrong; the message names the field."""


def provider_quote_binding(provider_id: bytes) -> bytes:
    """What a provider's quote must carry in REPORTDATA[0..32]:
    `blake3(cbor(["compute-provider-quote", 1, provider_id]))`. It ties the quote to the
    provider key, so nobody can register someone else's (public) quote as theirs."""
    return hash_structure(QUOTE_BINDING_TYPE, SCHEMA, provider_id)


def quote_is_bound(quote: bytes, provider_id: bytes) -> bool:
    """REPORTDATA starts with `provider_quote_binding(provider_id)` (MalformedQuote for a
    bad layout). REPORTDATA[32..64] is the provider's to use and is not read."""
    return (quote_report_data(quote)[:QUOTE_BINDING_LEN]
            == provider_quote_binding(provider_id))


# ---------------------------------------------------------------------------------------
# Field readers for records from outside (commands and snapshots)


def field_map(obj: Any, keys: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise BadField(f"{where} must be a map")
    if set(obj) != keys:
        raise BadField(f"{where} must have exactly the keys {sorted(keys)}, got {sorted(obj)}")
    return obj


def _int(obj: Mapping[str, Any], key: str, where: str, lo: int, hi: int) -> int:
    value = obj[key]
    if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
        raise BadField(f"{where}.{key} must be an integer {lo}..{hi}")
    return value


def field_bytes(obj: Mapping[str, Any], key: str, where: str, length: int) -> bytes:
    value = obj[key]
    if not (isinstance(value, bytes) and len(value) == length):
        raise BadField(f"{where}.{key} must be {length} bytes")
    return value


def _opt_bytes(obj: Mapping[str, Any], key: str, where: str, length: int) -> bytes | None:
    return None if obj[key] is None else field_bytes(obj, key, where, length)


def _bool(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = obj[key]
    if not isinstance(value, bool):
        raise BadField(f"{where}.{key} must be a boolean")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, allowed: frozenset[str]) -> str:
    value = obj[key]
    if not (isinstance(value, str) and value in allowed):
        raise BadField(f"{where}.{key} must be one of {sorted(allowed)}")
    return value


def _opt_uint(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if obj[key] is None else _int(obj, key, where, 0, MAX_TICK)


# ---------------------------------------------------------------------------------------
# Records (SPEC §3.4). Wire shapes are CBOR maps with text keys; docs/compute.md §2.


@dataclass(frozen=True, slots=True)
class Capabilities:
    cpu_millicores: int
    ram_mib: int
    storage_gib: int
    tdx: bool
    regions: tuple[str, ...]

    KEYS: ClassVar[frozenset[str]] = frozenset({
        "cpu_millicores", "ram_mib", "storage_gib", "tdx", "regions"})

    def to_wire(self) -> dict[str, Any]:
        return {"cpu_millicores": self.cpu_millicores, "ram_mib": self.ram_mib,
                "storage_gib": self.storage_gib, "tdx": self.tdx, "regions": list(self.regions)}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> Capabilities:
        m = field_map(obj, cls.KEYS, where)
        regions = m["regions"]
        if not (isinstance(regions, list) and len(regions) <= MAX_REGIONS):
            raise BadField(f"{where}.regions must be a list of at most {MAX_REGIONS} labels")
        for region in regions:
            if not (isinstance(region, str) and len(region) <= MAX_REGION_LEN
                    and _REGION_RE.fullmatch(region)):
                raise BadField(f"{where}.regions: each must match [a-z0-9][a-z0-9-]* and be at "
                           f"most {MAX_REGION_LEN} chars")
        if len(set(regions)) != len(regions):
            raise BadField(f"{where}.regions lists a region twice")
        return cls(_int(m, "cpu_millicores", where, 0, MAX_CPU_MILLICORES),
                   _int(m, "ram_mib", where, 0, MAX_RAM_MIB),
                   _int(m, "storage_gib", where, 0, MAX_STORAGE_GIB),
                   _bool(m, "tdx", where), tuple(regions))


@dataclass(frozen=True, slots=True)
class ProviderCard:
    """`refreshed_tick` is set by the committee when it applies a register or refresh; the
    card a provider submits omits it (`to_command_wire`)."""

    provider_id: bytes
    capabilities: Capabilities
    rate_per_hour: int
    tdx_quote: bytes | None
    refreshed_tick: int = 0

    COMMAND_KEYS: ClassVar[frozenset[str]] = frozenset({
        "provider_id", "capabilities", "rate_per_hour", "tdx_quote"})
    KEYS: ClassVar[frozenset[str]] = COMMAND_KEYS | {"refreshed_tick"}

    def to_command_wire(self) -> dict[str, Any]:
        return {"provider_id": self.provider_id, "capabilities": self.capabilities.to_wire(),
                "rate_per_hour": self.rate_per_hour, "tdx_quote": self.tdx_quote}

    def to_wire(self) -> dict[str, Any]:
        return {**self.to_command_wire(), "refreshed_tick": self.refreshed_tick}

    @classmethod
    def from_wire(cls, obj: Any, where: str, *, stored: bool) -> ProviderCard:
        m = field_map(obj, cls.KEYS if stored else cls.COMMAND_KEYS, where)
        quote = m["tdx_quote"]
        if quote is not None and not isinstance(quote, bytes):
            raise BadField(f"{where}.tdx_quote must be bytes or null")
        caps = Capabilities.from_wire(m["capabilities"], f"{where}.capabilities")
        card = cls(field_bytes(m, "provider_id", where, ID_LEN), caps,
                   _int(m, "rate_per_hour", where, 0, MAX_RATE_PER_HOUR), quote,
                   _int(m, "refreshed_tick", where, 0, MAX_TICK) if stored else 0)
        if quote is not None and not caps.tdx:
            raise BadField(f"{where}.tdx_quote given but capabilities.tdx is false")
        return card

    def mr_td(self) -> bytes | None:
        return None if self.tdx_quote is None else quote_mr_td(self.tdx_quote)

    def quote_bound(self) -> bool:
        """No quote, or a quote whose REPORTDATA binds this card's provider_id."""
        return self.tdx_quote is None or quote_is_bound(self.tdx_quote, self.provider_id)


@dataclass(frozen=True, slots=True)
class ComputeRequest:
    request_id: bytes
    requester: bytes
    image_prehash: bytes
    pin_posthash: bytes | None
    expected_mrtd: bytes | None
    min_cpu_millicores: int
    min_ram_mib: int
    min_storage_gib: int
    tdx_required: bool
    duration_sec: int
    deadline_tick: int
    settlement: bytes

    KEYS: ClassVar[frozenset[str]] = frozenset({
        "request_id", "requester", "image_prehash", "pin_posthash",
                             "expected_mrtd", "min_cpu_millicores", "min_ram_mib",
                             "min_storage_gib", "tdx_required", "duration_sec", "deadline_tick",
                             "settlement"})

    def to_wire(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "requester": self.requester,
                "image_prehash": self.image_prehash, "pin_posthash": self.pin_posthash,
                "expected_mrtd": self.expected_mrtd,
                "min_cpu_millicores": self.min_cpu_millicores, "min_ram_mib": self.min_ram_mib,
                "min_storage_gib": self.min_storage_gib, "tdx_required": self.tdx_required,
                "duration_sec": self.duration_sec, "deadline_tick": self.deadline_tick,
                "settlement": self.settlement}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> ComputeRequest:
        m = field_map(obj, cls.KEYS, where)
        return cls(field_bytes(m, "request_id", where, ID_LEN),
                   field_bytes(m, "requester", where, ID_LEN),
                   field_bytes(m, "image_prehash", where, ID_LEN),
                   _opt_bytes(m, "pin_posthash", where, ID_LEN),
                   _opt_bytes(m, "expected_mrtd", where, MRTD_LEN),
                   # A request for nothing would hold no capacity and could be granted
                   # without bound: every request asks for some CPU and some memory.
                   _int(m, "min_cpu_millicores", where, 1, MAX_CPU_MILLICORES),
                   _int(m, "min_ram_mib", where, 1, MAX_RAM_MIB),
                   _int(m, "min_storage_gib", where, 0, MAX_STORAGE_GIB),
                   _bool(m, "tdx_required", where),
                   _int(m, "duration_sec", where, 1, MAX_DURATION_SEC),
                   _int(m, "deadline_tick", where, 0, MAX_TICK),
                   field_bytes(m, "settlement", where, ID_LEN))

    @property
    def resources(self) -> tuple[int, int, int]:
        return (self.min_cpu_millicores, self.min_ram_mib, self.min_storage_gib)


@dataclass(frozen=True, slots=True)
class ComputeGrant:
    request_id: bytes
    provider_id: bytes
    image_hash: bytes
    expected_mrtd: bytes | None
    valid_to_tick: int
    bearer_pointer: bytes

    KEYS: ClassVar[frozenset[str]] = frozenset({
        "request_id", "provider_id", "image_hash", "expected_mrtd",
                             "valid_to_tick", "bearer_pointer"})

    def to_wire(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "provider_id": self.provider_id,
                "image_hash": self.image_hash, "expected_mrtd": self.expected_mrtd,
                "valid_to_tick": self.valid_to_tick, "bearer_pointer": self.bearer_pointer}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> ComputeGrant:
        m = field_map(obj, cls.KEYS, where)
        return cls(field_bytes(m, "request_id", where, ID_LEN), field_bytes(m, "provider_id", where, ID_LEN),
                   field_bytes(m, "image_hash", where, ID_LEN),
                   _opt_bytes(m, "expected_mrtd", where, MRTD_LEN),
                   _int(m, "valid_to_tick", where, 0, MAX_TICK),
                   field_bytes(m, "bearer_pointer", where, ID_LEN))

    @property
    def grant_id(self) -> bytes:
        """What logs name the grant by: the digest of the whole grant (its bearer pointer
        folds in the granting block's digest, so the id is unique to this committee)."""
        return hash_structure("compute-grant", SCHEMA, self.to_wire())


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: int
    ram_mib_peak: int
    exit_code: int

    KEYS: ClassVar[frozenset[str]] = frozenset({"cpu_seconds", "ram_mib_peak", "exit_code"})

    def to_wire(self) -> dict[str, Any]:
        return {"cpu_seconds": self.cpu_seconds, "ram_mib_peak": self.ram_mib_peak,
                "exit_code": self.exit_code}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> Usage:
        m = field_map(obj, cls.KEYS, where)
        return cls(_int(m, "cpu_seconds", where, 0, MAX_CPU_SECONDS),
                   _int(m, "ram_mib_peak", where, 0, MAX_RAM_MIB),
                   _int(m, "exit_code", where, MIN_EXIT_CODE, MAX_EXIT_CODE))


@dataclass(frozen=True, slots=True)
class ComputeLog:
    """Provider-signed usage: ed25519(provider, LOG_TAG ‖ 0x00 ‖ signed_payload)."""

    grant_id: bytes
    provider_id: bytes
    usage: Usage
    signature: bytes

    KEYS: ClassVar[frozenset[str]] = frozenset({"grant_id", "provider_id", "usage", "signature"})

    @staticmethod
    def signed_payload(grant_id: bytes, provider_id: bytes, usage: Usage) -> bytes:
        return encode([LOG_TYPE, SCHEMA, grant_id, provider_id, usage.to_wire()])

    @classmethod
    def sign(cls, key: SigningKey, grant_id: bytes, usage: Usage) -> ComputeLog:
        payload = cls.signed_payload(grant_id, key.public, usage)
        return cls(grant_id, key.public, usage, key.sign(LOG_TAG, payload))

    def signature_valid(self) -> bool:
        return is_valid(self.provider_id, LOG_TAG,
                        self.signed_payload(self.grant_id, self.provider_id, self.usage),
                        self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {"grant_id": self.grant_id, "provider_id": self.provider_id,
                "usage": self.usage.to_wire(), "signature": self.signature}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> ComputeLog:
        m = field_map(obj, cls.KEYS, where)
        return cls(field_bytes(m, "grant_id", where, ID_LEN),
                   field_bytes(m, "provider_id", where, PUBLIC_KEY_LEN),
                   Usage.from_wire(m["usage"], f"{where}.usage"),
                   field_bytes(m, "signature", where, SIGNATURE_LEN))


# -- state records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request: ComputeRequest
    seq: int
    status: str
    submitted_height: int
    #: Height at which the request left `open` (granted, lapsed or cancelled).
    closed_height: int | None = None

    KEYS: ClassVar[frozenset[str]] = frozenset({
        "request", "seq", "status", "submitted_height", "closed_height"})

    def to_wire(self) -> dict[str, Any]:
        return {"request": self.request.to_wire(), "seq": self.seq, "status": self.status,
                "submitted_height": self.submitted_height, "closed_height": self.closed_height}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> RequestRecord:
        m = field_map(obj, cls.KEYS, where)
        record = cls(ComputeRequest.from_wire(m["request"], f"{where}.request"),
                     _int(m, "seq", where, 0, MAX_TICK), _str(m, "status", where,
                                                             _REQUEST_STATUSES),
                     _int(m, "submitted_height", where, 1, MAX_TICK),
                     _opt_uint(m, "closed_height", where))
        if (record.closed_height is None) != (record.status == OPEN):
            raise BadField(f"{where}.closed_height must be null exactly while the request is open")
        if record.closed_height is not None and record.closed_height < record.submitted_height:
            raise BadField(f"{where}.closed_height is before submitted_height")
        return record


@dataclass(frozen=True, slots=True)
class GrantRecord:
    grant: ComputeGrant
    seq: int
    granted_height: int
    granted_tick: int
    status: str
    log: ComputeLog | None = None

    KEYS: ClassVar[frozenset[str]] = frozenset({
        "grant", "grant_id", "seq", "granted_height", "granted_tick",
                             "status", "log"})

    def to_wire(self) -> dict[str, Any]:
        return {"grant": self.grant.to_wire(), "grant_id": self.grant.grant_id, "seq": self.seq,
                "granted_height": self.granted_height, "granted_tick": self.granted_tick,
                "status": self.status,
                "log": None if self.log is None else self.log.to_wire()}

    @classmethod
    def from_wire(cls, obj: Any, where: str) -> GrantRecord:
        m = field_map(obj, cls.KEYS, where)
        grant = ComputeGrant.from_wire(m["grant"], f"{where}.grant")
        if m["grant_id"] != grant.grant_id:
            raise BadField(f"{where}.grant_id is not the digest of the grant")
        log = None if m["log"] is None else ComputeLog.from_wire(m["log"], f"{where}.log")
        record = cls(grant, _int(m, "seq", where, 0, MAX_TICK),
                     _int(m, "granted_height", where, 1, MAX_TICK),
                     _int(m, "granted_tick", where, 0, MAX_TICK),
                     _str(m, "status", where, _GRANT_STATUSES), log)
        if log is not None:
            if log.grant_id != grant.grant_id or log.provider_id != grant.provider_id:
                raise BadField(f"{where}.log names another grant or provider")
            if not log.signature_valid():
                raise BadField(f"{where}.log signature does not verify")
        return record


# ---------------------------------------------------------------------------------------
# Commands (helpers for clients, the devnet and tests)


def register_provider(card: ProviderCard) -> Command:
    return Command("register_provider", {"card": card.to_command_wire()})


def refresh_provider(card: ProviderCard) -> Command:
    return Command("refresh_provider", {"card": card.to_command_wire()})


def deregister_provider() -> Command:
    return Command("deregister_provider", {})


def submit_request(request: ComputeRequest) -> Command:
    return Command("submit_request", {"request": request.to_wire()})


def cancel_request(request_id: bytes) -> Command:
    return Command("cancel_request", {"request_id": request_id})


def submit_log(log: ComputeLog) -> Command:
    return Command("submit_log", {"log": log.to_wire()})


def card_from_command(command: Command) -> ProviderCard:
    """The card of a register/refresh command, checked field by field (InvalidCommand)."""
    args = command.args
    if set(args) != {"card"}:
        raise InvalidCommand(f"{command.op}: args must be exactly {{card}}", reason="bad_args")
    try:
        return ProviderCard.from_wire(args["card"], "card", stored=False)
    except BadField as exc:
        raise InvalidCommand(f"{command.op}: {exc}", reason="bad_args") from None
