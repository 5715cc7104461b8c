"""Typed wrapper around dcap-qvl 0.7.0 (DESIGN §2.7, research/dcap.md §1.2, §1.5).

`verify(quote, collateral, now)` is synchronous, pure given its inputs and CPU-bound (~1 ms):
the daemon runs it off the event loop. It never fetches collateral; `collateral.py` does that
on its own schedule and this module only reads what it is given.

Trust anchor: production code always uses the Intel SGX Root CA compiled into dcap-qvl. There
is deliberately no configuration knob for another root. Tests that need validly signed
artefacts under a throwaway root call `verify_under_test_root`, whose name says what it is
for; nothing in the daemon or the CLI calls it.

The result is read from `QuoteClaims.to_json()` of a quote that dcap-qvl accepted, never from
`parse_quote` (which does no cryptographic checking).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import dcap_qvl

from ..primitives.errors import LocalError, RemoteError

#: The exact dcap-qvl version whose verdicts our golden tests pin (pyproject pins it too).
DCAP_QVL_VERSION: Final = "0.7.0"

#: Every TCB status string dcap-qvl 0.7.0 can return on success. `Revoked` is never returned:
#: it is always an error.
TCB_STATUSES: Final = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "TDRelaunchAdvised",
        "TDRelaunchAdvisedConfigurationNeeded",
    }
)

#: Upper bound on a quote we are willing to hand to the verifier. Real TDX quotes with an
#: embedded PCK chain are ~5 KiB; 64 KiB leaves room for longer chains and refuses junk early.
MAX_QUOTE_SIZE: Final = 64 * 1024
#: Upper bound on one collateral JSON document (real ones are 16–25 KiB).
MAX_COLLATERAL_SIZE: Final = 1024 * 1024

TD_ATTR_DEBUG: Final = 1 << 0


class AttestationRefused(RemoteError):
    """A quote, ticket or its collateral was refused — the peer's or the platform's fault.

    `reason` is a short label from a fixed set (a metric label); `detail` is dcap-qvl's text.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class DcapPolicy:
    """What dcap-qvl itself enforces through `QuotePolicy` (research/dcap.md §1.5, §3.6).

    Defaults: `UpToDate` only, no grace, and the three PCK platform flags allowed — real TDX
    servers set all three (dynamic platform, cached keys, SMT), so refusing them would refuse
    every real host we know of (§1.6).
    """

    accepted_statuses: frozenset[str] = frozenset({"UpToDate"})
    #: For OutOfDate*: accept while `tcbDate + grace >= now` (platform and QE separately).
    grace_period_seconds: int = 0
    rejected_advisories: frozenset[str] = frozenset()
    min_tcb_eval_data_number: int | None = None
    allow_dynamic_platform: bool = True
    allow_cached_keys: bool = True
    allow_smt: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(self.accepted_statuses - TCB_STATUSES)
        if unknown:
            raise LocalError(f"unknown TCB status {unknown[0]!r}")
        if not self.accepted_statuses:
            raise LocalError("accepted TCB statuses must not be empty")
        if self.grace_period_seconds < 0:
            raise LocalError("grace period must be >= 0")

    def to_quote_policy(self, now: int) -> Any:
        p = dcap_qvl.QuotePolicy.strict(now)
        for status in sorted(self.accepted_statuses):
            p = p.allow_status(status)
        if self.grace_period_seconds:
            p = p.platform_grace_period(self.grace_period_seconds)
            p = p.qe_grace_period(self.grace_period_seconds)
        if self.rejected_advisories:
            p = p.reject_advisories(sorted(self.rejected_advisories))
        if self.min_tcb_eval_data_number is not None:
            p = p.min_tcb_eval_data_number(self.min_tcb_eval_data_number)
        p = p.allow_dynamic_platform(self.allow_dynamic_platform)
        p = p.allow_cached_keys(self.allow_cached_keys)
        p = p.allow_smt(self.allow_smt)
        return p


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """The fields of a quote that dcap-qvl fully verified. Byte fields are raw bytes."""

    quote_version: int
    report_type: str  # "TD10" | "TD15" | "TD15Ex"
    tcb_status: str
    advisory_ids: tuple[str, ...]
    tcb_eval_data_number: int
    fmspc: str  # upper-case hex, as Intel writes it
    tee_tcb_svn: bytes
    mr_seam: bytes
    td_attributes: bytes  # 8 bytes, little-endian bit field
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    #: Earliest `nextUpdate` over the collateral used: after this, the verdict lapses.
    collateral_expires_at: int
    pck_flags: dict[str, str] = field(default_factory=dict)

    @property
    def td_attributes_int(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes_int & TD_ATTR_DEBUG)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "quote_version": self.quote_version,
            "report_type": self.report_type,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "tcb_eval_data_number": self.tcb_eval_data_number,
            "fmspc": self.fmspc,
            "tee_tcb_svn": self.tee_tcb_svn.hex(),
            "mr_seam": self.mr_seam.hex(),
            "td_attributes": self.td_attributes.hex(),
            "xfam": self.xfam.hex(),
            "mr_td": self.mr_td.hex(),
            "mr_config_id": self.mr_config_id.hex(),
            "mr_owner": self.mr_owner.hex(),
            "mr_owner_config": self.mr_owner_config.hex(),
            "rtmr0": self.rtmrs[0].hex(),
            "rtmr1": self.rtmrs[1].hex(),
            "rtmr2": self.rtmrs[2].hex(),
            "rtmr3": self.rtmrs[3].hex(),
            "report_data": self.report_data.hex(),
            "collateral_expires_at": self.collateral_expires_at,
            "pck_flags": dict(self.pck_flags),
        }


# Substrings of dcap-qvl error messages → our reason labels. Checked in order; the label set is
# closed so metrics stay bounded. Anything unmatched is "quote_invalid".
_REASONS: Final = (
    ("expired", "collateral_expired"),
    ("in the future", "collateral_not_yet_valid"),
    ("CrlExpired", "collateral_expired"),
    ("Collateral expired", "collateral_expired"),
    ("CertRevoked", "pck_revoked"),
    ("Revoked", "tcb_revoked"),
    ("is not acceptable by policy", "tcb_status"),
    ("TCB too old", "tcb_status"),
    ("Advisory ID", "advisory"),
    ("eval data number", "tcb_eval_number"),
    ("No matching TCB level", "tcb_unknown"),
    ("Debug mode", "debug"),
    ("is not allowed by policy", "pck_flags"),
    ("Fmspc mismatch", "collateral_mismatch"),
)


def classify(detail: str) -> str:
    for needle, reason in _REASONS:
        if needle in detail:
            return reason
    return "quote_invalid"


def load_collateral(data: str | bytes) -> Any:
    """Parse collateral JSON (dcap-qvl's `QuoteCollateralV3` serialisation)."""
    if len(data) > MAX_COLLATERAL_SIZE:
        raise AttestationRefused("collateral_invalid", f"collateral larger than {MAX_COLLATERAL_SIZE} bytes")
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as e:
        raise AttestationRefused("collateral_invalid", str(e)) from None


def _hexbytes(d: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(d[key])


def _td10_fields(report: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if len(report) != 1:
        raise LocalError(f"unexpected claims report shape {sorted(report)}")
    (kind, body), = report.items()
    if kind not in ("TD10", "TD15", "TD15Ex"):
        # An SGX quote passed dcap-qvl; it is not a TD, so it can never be admitted here.
        raise AttestationRefused("not_tdx", f"quote carries a {kind} report, not a TD report")
    base = body
    while "base" in base:  # TD15Ex → TD15 → TD10
        base = base["base"]
    return kind, base


def _from_claims(claims_json: str) -> VerifiedQuote:
    c = json.loads(claims_json)
    kind, td = _td10_fields(c["report"])
    pck = c["platform"]["pck"]
    return VerifiedQuote(
        quote_version=int(c["header"]["version"]),
        report_type=kind,
        tcb_status=str(c["tcb"]["status"]),
        advisory_ids=tuple(c["tcb"]["advisory_ids"]),
        tcb_eval_data_number=int(c["tcb"]["eval_data_number"]),
        fmspc=bytes(pck["fmspc"]).hex().upper(),
        tee_tcb_svn=_hexbytes(td, "tee_tcb_svn"),
        mr_seam=_hexbytes(td, "mr_seam"),
        td_attributes=_hexbytes(td, "td_attributes"),
        xfam=_hexbytes(td, "xfam"),
        mr_td=_hexbytes(td, "mr_td"),
        mr_config_id=_hexbytes(td, "mr_config_id"),
        mr_owner=_hexbytes(td, "mr_owner"),
        mr_owner_config=_hexbytes(td, "mr_owner_config"),
        rtmrs=(
            _hexbytes(td, "rt_mr0"),
            _hexbytes(td, "rt_mr1"),
            _hexbytes(td, "rt_mr2"),
            _hexbytes(td, "rt_mr3"),
        ),
        report_data=_hexbytes(td, "report_data"),
        collateral_expires_at=min(
            int(c["earliest_expiration_date"]), int(c["qe_iden_earliest_expiration_date"])
        ),
        pck_flags={
            k: str(pck[k]) for k in ("dynamic_platform", "cached_keys", "smt_enabled")
        },
    )


def _verify(
    quote: bytes, collateral: Any, now: int, policy: DcapPolicy, root_der: bytes | None
) -> VerifiedQuote:
    if not isinstance(quote, bytes):
        raise LocalError("quote must be bytes")
    if len(quote) > MAX_QUOTE_SIZE:
        raise AttestationRefused("quote_invalid", f"quote larger than {MAX_QUOTE_SIZE} bytes")
    if now < 0:
        raise LocalError("verification time must be >= 0")
    if isinstance(collateral, (str, bytes)):
        collateral = load_collateral(collateral)
    verifier = dcap_qvl.QuoteVerifier(root_der) if root_der is not None else dcap_qvl.QuoteVerifier()
    try:
        claims = verifier.verify_with_policy(quote, collateral, now, policy.to_quote_policy(now))
    except ValueError as e:
        detail = _explain(quote, collateral, now, root_der, str(e))
        raise AttestationRefused(classify(detail), detail) from None
    return _from_claims(claims.to_json())


def _explain(quote: bytes, collateral: Any, now: int, root_der: bytes | None, detail: str) -> str:
    """A fuller message for a refusal: `verify_with_policy` drops the error's cause chain
    ("Failed to verify certificate chain" without "CertRevoked"), the plain `verify` keeps it.
    Runs only on the refusal path; if plain verification passes, the refusal was the policy's.
    """
    try:
        if root_der is None:
            dcap_qvl.verify(quote, collateral, now)
        else:
            dcap_qvl.verify_with_root_ca(quote, collateral, root_der, now)
    except ValueError as e:
        return " ".join(str(e).split())
    return " ".join(detail.split())


def verify(
    quote: bytes, collateral: Any, now: int, policy: DcapPolicy | None = None
) -> VerifiedQuote:
    """Fully verify `quote` against `collateral` at unix time `now` under Intel's root.

    `collateral` is a `dcap_qvl.QuoteCollateralV3` or its JSON text. Raises AttestationRefused.
    """
    return _verify(quote, collateral, now, policy or DcapPolicy(), None)


def verify_under_test_root(
    quote: bytes, collateral: Any, now: int, root_der: bytes, policy: DcapPolicy | None = None
) -> VerifiedQuote:
    """TESTS ONLY: like `verify`, but chains to `root_der` instead of Intel's root."""
    return _verify(quote, collateral, now, policy or DcapPolicy(), root_der)


def quote_fmspc(quote: bytes) -> str:
    """The FMSPC named by the quote's PCK certificate, to pick collateral. Unverified."""
    try:
        q = dcap_qvl.parse_quote(quote)
        return str(q.fmspc()).upper()
    except (ValueError, TypeError) as e:
        raise AttestationRefused("quote_invalid", f"cannot read FMSPC: {e}") from None
