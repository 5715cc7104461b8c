"""The committee's admission policy, in pure Python (DESIGN §2.7, research/dcap.md §3.6).

dcap-qvl answers "is this a genuine, current TDX quote from a platform at an acceptable TCB";
this module answers "is it *our* software, bound to *this* member key, and fresh enough". It
works only on `VerifiedQuote` values (fields dcap-qvl accepted) and plain values, so it is
unit-testable without any quote at all.

`AttestationPolicy` is built from plain values; `from_mapping` reads the `[attestation]` table
of a member config (keys in docs/attestation.md §4). There is no key for a trust root: the
production verifier always chains to Intel's root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..primitives.errors import ConfigError
from .binding import matches
from .dcap import TCB_STATUSES, AttestationRefused, DcapPolicy, VerifiedQuote
from .ticket import Ticket

Mode = Literal["tdx", "none"]
MEASUREMENT_LEN: Final = 48
RTMR_COUNT: Final = 4
_ZERO48: Final = bytes(MEASUREMENT_LEN)

DEFAULT_MAX_TICKET_AGE: Final = 24 * 3600
#: How far in the future a ticket's issue time may be (clock skew between TD and verifier).
DEFAULT_MAX_CLOCK_SKEW: Final = 300


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    mode: Mode = "tdx"
    allowed_mr_td: frozenset[bytes] = frozenset()
    #: Index 0..3 → allowed values; an index absent from the mapping is not pinned.
    rtmr_pins: Mapping[int, frozenset[bytes]] = field(default_factory=dict)
    #: MRCONFIGID, MROWNER and MROWNERCONFIG are host-chosen and unmeasured: by default they
    #: must be all-zero so a host cannot slip configuration meaning past the measurements.
    require_zero_host_fields: bool = True
    #: What dcap-qvl enforces: TCB statuses, grace, advisory deny-list, PCK flags.
    dcap: DcapPolicy = field(default_factory=DcapPolicy)
    max_ticket_age_seconds: int = DEFAULT_MAX_TICKET_AGE
    max_clock_skew_seconds: int = DEFAULT_MAX_CLOCK_SKEW
    pccs_url: str | None = None
    collateral_cache_dir: str | None = None

    @property
    def pins_measurements(self) -> bool:
        return bool(self.allowed_mr_td) or any(self.rtmr_pins.values())

    def dcap_policy(self) -> DcapPolicy:
        return self.dcap

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], source: str = "<config>") -> AttestationPolicy:
        """Build from an `[attestation]` TOML table. Raises ConfigError naming the key."""
        return _from_mapping(table, source)


# --------------------------------------------------------------------------------------
# Checks on verified quotes and tickets


def check_measurements(policy: AttestationPolicy, v: VerifiedQuote) -> None:
    """MR_TD allow-list, RTMR pins, debug bit, host fields. Raises AttestationRefused."""
    if v.debug:
        # dcap-qvl already refuses debug TDs; checked again because a debug TD's memory is
        # readable by the host and admitting one would void every other check.
        raise AttestationRefused("debug", "TD has the DEBUG attribute set")
    if v.mr_td not in policy.allowed_mr_td:
        raise AttestationRefused("mr_td", f"MR_TD {v.mr_td.hex()} is not in the allow-list")
    for index in sorted(policy.rtmr_pins):
        allowed = policy.rtmr_pins[index]
        if allowed and v.rtmrs[index] not in allowed:
            raise AttestationRefused(
                "rtmr", f"RTMR{index} {v.rtmrs[index].hex()} is not among the pinned values"
            )
    if policy.require_zero_host_fields:
        for name, value in (("MRCONFIGID", v.mr_config_id), ("MROWNER", v.mr_owner),
                            ("MROWNERCONFIG", v.mr_owner_config)):
            if value != _ZERO48:
                raise AttestationRefused("host_fields", f"{name} is not zero: {value.hex()}")


def ticket_expires_at(policy: AttestationPolicy, ticket: Ticket, v: VerifiedQuote) -> int:
    """When this admission lapses: the ticket's age limit or the collateral's end, if sooner."""
    return min(ticket.issued_at + policy.max_ticket_age_seconds, v.collateral_expires_at)


def check_ticket(
    policy: AttestationPolicy,
    ticket: Ticket,
    v: VerifiedQuote,
    *,
    peer_id: bytes,
    network_id: bytes,
    committee_id: bytes,
    epoch: int,
    now: int,
) -> int:
    """Binding and freshness of a ticket whose quote verified as `v`. Returns its expiry."""
    if ticket.peer_id != peer_id:
        raise AttestationRefused("binding", "ticket names another peer")
    if ticket.network_id != network_id:
        raise AttestationRefused("binding", "ticket is for another network")
    if ticket.committee_id != committee_id:
        raise AttestationRefused("binding", "ticket is for another committee")
    if ticket.epoch != epoch:
        raise AttestationRefused(
            "stale_epoch", f"ticket is for epoch {ticket.epoch}, committee is at {epoch}"
        )
    if not matches(v.report_data, peer_id, network_id, committee_id, epoch, ticket.issued_at):
        raise AttestationRefused("binding", "REPORTDATA does not bind this peer's ticket")
    if ticket.issued_at > now + policy.max_clock_skew_seconds:
        raise AttestationRefused(
            "ticket_future", f"ticket issued at {ticket.issued_at}, now is {now}"
        )
    expires = ticket_expires_at(policy, ticket, v)
    if now >= expires:
        raise AttestationRefused("ticket_expired", f"ticket expired at {expires}, now is {now}")
    return expires


# --------------------------------------------------------------------------------------
# from_mapping

#: Keys of the `[attestation]` table. The first seven are the ones `coalitiond.config` parses
#: (same names, same meaning); the rest are this module's extensions (docs/attestation.md §4).
_KEYS: Final = frozenset(
    {
        "mode", "mrtd", "rtmr_pins", "tcb_statuses", "max_ticket_age_s", "pccs_url",
        "collateral_cache",
        "grace_period_s", "rejected_advisories", "min_tcb_eval_data_number",
        "allow_dynamic_platform", "allow_cached_keys", "allow_smt", "require_zero_host_fields",
        "max_clock_skew_s",
    }
)
_RTMR_KEYS: Final = {f"rtmr{i}": i for i in range(RTMR_COUNT)}


def _key(name: str) -> str:
    return f"attestation.{name}"


def _measurement(source: str, key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(source, key, "must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(source, key, f"not hex: {value!r}") from None
    if len(raw) != MEASUREMENT_LEN:
        raise ConfigError(
            source, key, f"must be {MEASUREMENT_LEN} bytes (96 hex digits), got {len(raw)}"
        )
    return raw


def _measurements(source: str, key: str, value: Any) -> frozenset[bytes]:
    if isinstance(value, str):  # one pinned value (the form coalitiond.config reads)
        return frozenset({_measurement(source, key, value)})
    if not isinstance(value, list):
        raise ConfigError(source, key, "must be a hex string or a list of hex strings")
    return frozenset(_measurement(source, f"{key}[{i}]", v) for i, v in enumerate(value))


def _str_list(source: str, key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(source, key, "must be a list of strings")
    return frozenset(value)


def _int(source: str, key: str, value: Any, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(source, key, "must be an integer")
    if value < minimum:
        raise ConfigError(source, key, f"must be >= {minimum}")
    return value


def _bool(source: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(source, key, "must be true or false")
    return value


def _nonempty_str(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, key, "must be a non-empty string")
    return value


def _rtmr_pins(source: str, pins_table: Any) -> dict[int, frozenset[bytes]]:
    if not isinstance(pins_table, Mapping):
        raise ConfigError(source, _key("rtmr_pins"), "must be a table with keys rtmr0..rtmr3")
    pins: dict[int, frozenset[bytes]] = {}
    for name in sorted(pins_table):
        key = _key(f"rtmr_pins.{name}")
        if name not in _RTMR_KEYS:
            raise ConfigError(source, key, "unknown key (use rtmr0..rtmr3)")
        values = _measurements(source, key, pins_table[name])
        if not values:
            raise ConfigError(source, key, "must not be empty (omit it to leave the RTMR unpinned)")
        pins[_RTMR_KEYS[name]] = values
    return pins


def _from_mapping(table: Mapping[str, Any], source: str) -> AttestationPolicy:
    if not isinstance(table, Mapping):
        raise ConfigError(source, "attestation", "must be a table")
    for k in sorted(table):
        if k not in _KEYS:
            raise ConfigError(source, _key(k), "unknown key")
    if "mode" not in table:
        raise ConfigError(source, _key("mode"), 'missing (one of "tdx", "none")')
    t = table
    mode = t["mode"]
    if mode not in ("tdx", "none"):
        raise ConfigError(source, _key("mode"), f'must be "tdx" or "none", got {mode!r}')
    kw: dict[str, Any] = {"mode": mode}
    dkw: dict[str, Any] = {}
    if "mrtd" in t:
        kw["allowed_mr_td"] = _measurements(source, _key("mrtd"), t["mrtd"])
    if "rtmr_pins" in t:
        kw["rtmr_pins"] = _rtmr_pins(source, t["rtmr_pins"])
    if "tcb_statuses" in t:
        statuses = _str_list(source, _key("tcb_statuses"), t["tcb_statuses"])
        if not statuses:
            raise ConfigError(source, _key("tcb_statuses"), "must not be empty")
        for st in sorted(statuses):
            if st not in TCB_STATUSES:
                raise ConfigError(source, _key("tcb_statuses"), f"unknown TCB status {st!r}")
        dkw["accepted_statuses"] = statuses
    if "max_ticket_age_s" in t:
        kw["max_ticket_age_seconds"] = _int(source, _key("max_ticket_age_s"), t["max_ticket_age_s"], 1)
    if "grace_period_s" in t:
        dkw["grace_period_seconds"] = _int(source, _key("grace_period_s"), t["grace_period_s"])
    if "max_clock_skew_s" in t:
        kw["max_clock_skew_seconds"] = _int(source, _key("max_clock_skew_s"), t["max_clock_skew_s"])
    if "min_tcb_eval_data_number" in t:
        dkw["min_tcb_eval_data_number"] = _int(
            source, _key("min_tcb_eval_data_number"), t["min_tcb_eval_data_number"]
        )
    if "rejected_advisories" in t:
        dkw["rejected_advisories"] = _str_list(source, _key("rejected_advisories"), t["rejected_advisories"])
    for name in ("allow_dynamic_platform", "allow_cached_keys", "allow_smt"):
        if name in t:
            dkw[name] = _bool(source, _key(name), t[name])
    if "require_zero_host_fields" in t:
        kw["require_zero_host_fields"] = _bool(
            source, _key("require_zero_host_fields"), t["require_zero_host_fields"]
        )
    if "pccs_url" in t:
        url = _nonempty_str(source, _key("pccs_url"), t["pccs_url"])
        if not url.startswith(("https://", "http://")):
            raise ConfigError(source, _key("pccs_url"), "must be an http(s) URL")
        kw["pccs_url"] = url
    if "collateral_cache" in t:
        kw["collateral_cache_dir"] = _nonempty_str(source, _key("collateral_cache"), t["collateral_cache"])
    policy = AttestationPolicy(dcap=DcapPolicy(**dkw), **kw)
    if mode == "none" and policy.pins_measurements:
        # DESIGN §2.7: a committee that declares measurements must not silently run unattested.
        raise ConfigError(
            source, _key("mode"), 'mode = "none" is refused when TDX measurements are declared'
        )
    if mode == "tdx" and not policy.allowed_mr_td:
        raise ConfigError(source, _key("mrtd"), 'mode = "tdx" needs at least one allowed MR_TD')
    return policy
