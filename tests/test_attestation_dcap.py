"""dcap-qvl wrapper: the real Intel vectors at their fixed times, their expiry windows, a
bit-flip sweep over the signed region of the real v4 quote, and the re-signing harness (test
root accepted, production root refusing every re-signed artefact)."""

from __future__ import annotations

import json
import os
import random

import dcap_qvl
import pytest
from conftest import SHARED_TESTDATA
from tdx_resign import NOW, SIGNED_END, ResignPki

from coalitiond.attestation import dcap
from coalitiond.attestation.dcap import AttestationRefused, DcapPolicy
from coalitiond.primitives.errors import LocalError

TDX = SHARED_TESTDATA / "tdx"
EXPECTED = json.loads((TDX / "expected.json").read_text())["cases"]
CASES = {c["name"]: c for c in EXPECTED}
TWO_DAYS = 2 * 86400
#: Accept any status so the typed result of every genuine vector can be compared.
ANY_STATUS = DcapPolicy(accepted_statuses=dcap.TCB_STATUSES, grace_period_seconds=100 * 365 * 86400)


def load_case(case: dict) -> tuple[bytes, str]:
    quote = (TDX / case["quote_file"]).read_bytes()
    col = json.loads((TDX / case["collateral_file"]).read_text())
    if case["strip_pck_certificate_chain"]:
        col.pop("pck_certificate_chain", None)
    return quote, json.dumps(col)


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_vectors_at_fixed_time(name: str) -> None:
    case = CASES[name]
    quote, col = load_case(case)
    if not case["expect_ok"]:
        with pytest.raises(AttestationRefused) as ei:
            dcap.verify(quote, col, case["now_secs"], ANY_STATUS)
        assert case["error_contains"] in ei.value.detail
        assert ei.value.reason == "tcb_unknown"
        return
    v = dcap.verify(quote, col, case["now_secs"], ANY_STATUS)
    assert v.tcb_status == case["status"]
    assert list(v.advisory_ids) == case["advisory_ids"]
    assert v.quote_version == case["quote_version"]
    assert v.fmspc == case["fmspc"]
    assert {"TdReport10": "TD10", "TdReport15": "TD15", "TdReport15Ex": "TD15Ex"}[
        case["report_type"]
    ] == v.report_type
    for field in ("mr_td", "report_data", "td_attributes", "xfam", "tee_tcb_svn",
                  "mr_config_id", "mr_owner", "mr_owner_config", "mr_seam"):
        assert getattr(v, field).hex() == case[field], field
    assert [r.hex() for r in v.rtmrs] == [case[f"rt_mr{i}"] for i in range(4)]
    assert not v.debug


def test_default_policy_accepts_uptodate_and_refuses_outofdate() -> None:
    quote, col = load_case(CASES["tdx_v4_uptodate"])
    assert dcap.verify(quote, col, CASES["tdx_v4_uptodate"]["now_secs"]).tcb_status == "UpToDate"
    case = CASES["tdx_v4_with_newer_collateral_outofdate"]
    quote, col = load_case(case)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, col, case["now_secs"])
    assert ei.value.reason == "tcb_status"
    assert "TCB status OutOfDate is not acceptable by policy" in ei.value.detail


def test_outofdate_needs_grace_and_advisory_deny_list_applies() -> None:
    case = CASES["tdx_v4_with_newer_collateral_outofdate"]
    quote, col = load_case(case)
    now = case["now_secs"]
    no_grace = DcapPolicy(accepted_statuses=frozenset({"UpToDate", "OutOfDate"}))
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, col, now, no_grace)
    assert ei.value.reason == "tcb_status"
    assert "TCB too old" in ei.value.detail
    graced = DcapPolicy(accepted_statuses=frozenset({"UpToDate", "OutOfDate"}),
                        grace_period_seconds=5 * 365 * 86400)
    assert dcap.verify(quote, col, now, graced).tcb_status == "OutOfDate"
    denied = DcapPolicy(accepted_statuses=frozenset({"UpToDate", "OutOfDate"}),
                        grace_period_seconds=5 * 365 * 86400,
                        rejected_advisories=frozenset({"INTEL-SA-01245"}))
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, col, now, denied)
    assert ei.value.reason == "advisory"
    assert "Advisory ID INTEL-SA-01245 is rejected by policy" in ei.value.detail


@pytest.mark.parametrize(
    ("policy", "reason", "detail"),
    [
        (DcapPolicy(allow_dynamic_platform=False), "pck_flags", "Dynamic platform is not allowed by policy"),
        (DcapPolicy(min_tcb_eval_data_number=18), "tcb_eval_number", "TCB eval data number 17 is below minimum 18"),
    ],
    ids=["pck-flags", "min-eval-number"],
)
def test_dcap_policy_knobs(policy: DcapPolicy, reason: str, detail: str) -> None:
    case = CASES["tdx_v4_uptodate"]
    quote, col = load_case(case)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, col, case["now_secs"], policy)
    assert ei.value.reason == reason
    assert detail in ei.value.detail


# Valid windows [first accepted second, last accepted second], as dcap-qvl 0.7.0 decides them.
# The README's table is slightly off: for v4 its upper bound is the first *refused* second (the
# CRL check treats next_update == now as expired); for v5 the TCB info was issued at
# 1791418186 (QE identity later but its check passes), and nextUpdate itself still passes.
WINDOWS = {
    "tdx_v4_uptodate": (1750329147, 1752919234),
    "tdx_v5_td15ex_uptodate": (1791418186, 1794008711),
}


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_expiry_windows(name: str) -> None:
    case = CASES[name]
    quote, col = load_case(case)
    first, last = WINDOWS[name]
    assert dcap.verify(quote, col, first).tcb_status == "UpToDate"
    assert dcap.verify(quote, col, last).tcb_status == "UpToDate"
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, col, first - 1)
    assert ei.value.reason == "collateral_not_yet_valid"
    assert "issue date is in the future" in ei.value.detail
    for late in (last + 1, case["now_secs"] + TWO_DAYS):
        with pytest.raises(AttestationRefused) as ei:
            dcap.verify(quote, col, late)
        assert ei.value.reason == "collateral_expired"
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, col, case["now_secs"] + TWO_DAYS)
    assert "TCBInfo expired" in ei.value.detail


def test_collateral_expiry_is_reported() -> None:
    case = CASES["tdx_v4_uptodate"]
    quote, col = load_case(case)
    assert dcap.verify(quote, col, case["now_secs"]).collateral_expires_at == 1752919235


# ---------------------------------------------------------------------------------------
# Bit flips over the signed region (header ‖ body) of the real v4 quote.

FULL_SWEEP = os.environ.get("COALITIOND_FULL_TDX_SWEEP") == "1"
#: Default run: this many random bits (seeded) plus the first bit of every field boundary.
SAMPLED_BITS = 600


#: Signed region = header ‖ (v5: 6-byte body descriptor ‖) body.
SIGNED_REGIONS = {"tdx_v4_uptodate": SIGNED_END, "tdx_v5_td15ex_uptodate": 48 + 6 + 885}


@pytest.mark.parametrize("name", sorted(SIGNED_REGIONS))
def test_every_single_bit_flip_in_signed_region_is_refused(name: str) -> None:
    case = CASES[name]
    quote, col_text = load_case(case)
    col = dcap.load_collateral(col_text)
    now = case["now_secs"]
    all_bits = range(SIGNED_REGIONS[name] * 8)
    if FULL_SWEEP:
        bits = list(all_bits)
        print(f"full sweep: {len(bits)} bits")
    else:
        seed = int(os.environ.get("COALITIOND_TDX_SWEEP_SEED", random.randrange(1 << 32)))
        print(f"bit-flip sweep seed {seed} (replay: COALITIOND_TDX_SWEEP_SEED={seed}; "
              f"all bits: COALITIOND_FULL_TDX_SWEEP=1)")
        rng = random.Random(seed)
        # Always include the first bit of each header field and of MR_TD / RTMR0 / REPORTDATA.
        boundaries = [0, 2 * 8, 4 * 8, 12 * 8, 28 * 8, 48 * 8, 168 * 8, 184 * 8, 376 * 8,
                      568 * 8, SIGNED_REGIONS[name] * 8 - 1]
        bits = sorted(set(boundaries) | set(rng.sample(all_bits, SAMPLED_BITS)))
    accepted = []
    for bit in bits:
        mutated = bytearray(quote)
        mutated[bit // 8] ^= 1 << (bit % 8)
        try:
            dcap.verify(bytes(mutated), col, now, ANY_STATUS)
        except AttestationRefused:
            continue
        accepted.append(bit)
    assert accepted == [], f"flipped bits accepted: {accepted}"


def _flip_hex(text: str, index: int) -> str:
    return text[:index] + ("0" if text[index] != "0" else "1") + text[index + 1:]


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda c: c.update(tcb_info=c["tcb_info"].replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18')),
         "Signature is invalid for tcb_info"),
        (lambda c: c.update(qe_identity_signature=_flip_hex(c["qe_identity_signature"], 10)),
         "qe_identity"),
        (lambda c: c.update(pck_crl=_flip_hex(c["pck_crl"], len(c["pck_crl"]) - 10)),
         "InvalidCrlSignatureForPublicKey"),
        (lambda c: c.update(pck_crl=c["root_ca_crl"]), "UnknownRevocationStatus"),
        (lambda c: c.update(root_ca_crl=""), "TrailingData"),
    ],
    ids=["tcb-info-edited", "qe-identity-sig", "pck-crl-sig", "root-crl-as-pck-crl", "empty-root-crl"],
)
def test_collateral_mutations_are_refused(mutate, detail: str) -> None:  # type: ignore[no-untyped-def]
    case = CASES["tdx_v4_uptodate"]
    quote, col_text = load_case(case)
    col = json.loads(col_text)
    mutate(col)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, json.dumps(col), case["now_secs"])
    assert detail in ei.value.detail


def test_unsigned_framing_is_lenient_so_raw_bytes_are_no_identity() -> None:
    """research/dcap.md §1.6: trailing bytes are ignored — never key anything on raw bytes."""
    case = CASES["tdx_v4_uptodate"]
    quote, col = load_case(case)
    assert dcap.verify(quote + b"\xff" * 100, col, case["now_secs"]).tcb_status == "UpToDate"


def test_input_limits_and_types() -> None:
    case = CASES["tdx_v4_uptodate"]
    quote, col = load_case(case)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote + bytes(dcap.MAX_QUOTE_SIZE), col, case["now_secs"])
    assert str(ei.value) == f"quote_invalid: quote larger than {dcap.MAX_QUOTE_SIZE} bytes"
    with pytest.raises(LocalError, match="quote must be bytes"):
        dcap.verify(bytearray(quote), col, case["now_secs"])  # type: ignore[arg-type]
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote, "{}", case["now_secs"])
    assert ei.value.reason == "collateral_invalid"
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(quote[:600], col, case["now_secs"])
    assert ei.value.reason == "quote_invalid"
    assert "Failed to decode quote" in ei.value.detail
    with pytest.raises(LocalError, match="unknown TCB status 'Fine'"):
        DcapPolicy(accepted_statuses=frozenset({"Fine"}))


def test_quote_fmspc() -> None:
    assert dcap.quote_fmspc((TDX / "tdx_quote").read_bytes()) == "B0C06F000000"
    with pytest.raises(AttestationRefused) as ei:
        dcap.quote_fmspc(b"junk")
    assert ei.value.reason == "quote_invalid"


# ---------------------------------------------------------------------------------------
# Re-signing harness


@pytest.fixture(scope="module")
def pki() -> ResignPki:
    return ResignPki()


def test_resigned_quote_carries_chosen_fields(pki: ResignPki) -> None:
    mr_td, rd = bytes(range(48)), bytes(range(64))
    q = pki.quote(mr_td=mr_td, report_data=rd, rtmrs={2: b"\x07" * 48},
                  td_attributes=0x10000000 | (1 << 30))  # SEPT_VE_DISABLE + PKS
    v = dcap.verify_under_test_root(q, pki.collateral(), NOW, pki.root_der)
    assert (v.mr_td, v.report_data, v.rtmrs[2], v.tcb_status) == (mr_td, rd, b"\x07" * 48, "UpToDate")


@pytest.mark.parametrize(
    ("build", "reason", "detail"),
    [
        (lambda p: (p.quote(td_attributes=0x10000001), p.collateral()), "debug", "Debug mode is enabled"),
        (lambda p: (p.quote(), p.collateral(revoke_pck=True)), "pck_revoked", "CertRevoked"),
        (lambda p: (p.quote(), p.collateral(tcb_status="Revoked")), "tcb_revoked", "TCB status is invalid: Revoked"),
        (lambda p: (p.quote(), p.collateral(tcb_status="OutOfDate", advisories=("INTEL-SA-99999",))),
         "tcb_status", "TCB status OutOfDate is not acceptable by policy"),
        (lambda p: (p.quote(), p.collateral(valid_for=3600)), "collateral_expired", "CrlExpired"),
        (lambda p: (p.quote(td_attributes=0), p.collateral()), "quote_invalid", "SEPT_VE_DISABLE"),
        (lambda p: (p.quote(td_attributes=0x10000000 | (1 << 29)), p.collateral()), "quote_invalid", "migration"),
    ],
    ids=["debug", "revoked-pck", "revoked-tcb", "outofdate", "expired-crl", "no-sept-ve", "migratable"],
)
def test_resigned_refusals(pki: ResignPki, build, reason: str, detail: str) -> None:  # type: ignore[no-untyped-def]
    quote, col = build(pki)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify_under_test_root(quote, col, NOW, pki.root_der)
    assert ei.value.reason == reason
    assert detail in ei.value.detail


def test_outofdate_accepted_only_when_policy_says_so(pki: ResignPki) -> None:
    col = pki.collateral(tcb_status="OutOfDate", advisories=("INTEL-SA-99999",), tcb_date=NOW - 400 * 86400)
    policy = DcapPolicy(accepted_statuses=frozenset({"UpToDate", "OutOfDate"}),
                        grace_period_seconds=5 * 365 * 86400)
    v = dcap.verify_under_test_root(pki.quote(), col, NOW, pki.root_der, policy)
    assert (v.tcb_status, v.advisory_ids) == ("OutOfDate", ("INTEL-SA-99999",))
    short_grace = DcapPolicy(accepted_statuses=frozenset({"UpToDate", "OutOfDate"}),
                             grace_period_seconds=30 * 86400)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify_under_test_root(pki.quote(), col, NOW, pki.root_der, short_grace)
    assert ei.value.reason == "tcb_status"


def test_production_root_rejects_every_resigned_artefact(pki: ResignPki) -> None:
    artefacts = [
        (pki.quote(), pki.collateral()),
        (pki.quote(mr_td=b"\x01" * 48, report_data=b"\x02" * 64), pki.collateral()),
        (pki.quote(), pki.collateral(tcb_status="OutOfDate")),
        (pki.quote(td_attributes=0x10000000 | (1 << 30)), pki.collateral(valid_for=365 * 86400)),
    ]
    for quote, col in artefacts:
        dcap.verify_under_test_root(quote, col, NOW, pki.root_der, ANY_STATUS)  # test root: ok
        for verify in (lambda q, c: dcap.verify(q, c, NOW, ANY_STATUS),
                       lambda q, c: dcap_qvl.verify(q, dcap_qvl.QuoteCollateralV3.from_json(c), NOW)):
            with pytest.raises((AttestationRefused, ValueError)) as ei:
                verify(quote, col)
            assert "InvalidCrlSignatureForPublicKey" in str(ei.value)
    # Real Intel collateral with a re-signed quote: the PCK chain does not lead to Intel.
    case = CASES["tdx_v4_uptodate"]
    _, real_col = load_case(case)
    with pytest.raises(AttestationRefused) as ei:
        dcap.verify(pki.quote(), real_col, case["now_secs"])
    assert ei.value.reason == "quote_invalid"
    assert "UnknownIssuer" in ei.value.detail or "certificate chain" in ei.value.detail
