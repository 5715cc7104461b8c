"""The `[attestation]` section: the TDX admission policy of this committee's transport
(measurements, TCB statuses, collateral source); docs/attestation.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .parsing import Table, http_url

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
MRTD_LEN: Final = 48
RTMR_COUNT: Final = 4
DEFAULT_MAX_TICKET_AGE_S: Final = 86_400



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


def _parse_rtmr_pins(t: Table | None) -> tuple[tuple[bytes, ...], ...]:
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


def parse_attestation(t: Table, base: Path) -> AttestationConfig:
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
        pccs_url=http_url(t, "pccs_url", None),
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

