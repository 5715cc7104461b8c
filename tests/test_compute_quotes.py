"""Full DCAP verification of provider quotes before voting (`coalitiond.components.compute.quotes`, run by `coalitiond.node.quote_driver`):
the real Intel-signed quotes and collateral at their fixed verification times, and re-signed
quotes (tests/tdx_resign.py, a test root CA) carrying the provider binding in REPORTDATA."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_TESTDATA
from tdx_resign import NOW as RESIGN_NOW
from tdx_resign import ResignPki

from coalitiond.attestation import dcap
from coalitiond.attestation.collateral import CollateralCache
from coalitiond.attestation.dcap import DcapPolicy
from coalitiond.attestation.gate import Verifier
from coalitiond.attestation.quote import quote_mr_td, quote_report_data
from coalitiond.commands.envelope import Command, Envelope, InvalidCommand
from coalitiond.components.compute.component import Compute
from coalitiond.components.compute.quotes import (
    ProviderQuotePolicy,
    ProviderQuoteRefused,
    verify_provider_quote,
    vote_check,
    vote_check_envelopes,
)
from coalitiond.components.compute.records import (
    Capabilities,
    ComputeRequest,
    ProviderCard,
    deregister_provider,
    provider_quote_binding,
    refresh_provider,
    register_provider,
    submit_request,
)
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.errors import LocalError

TDX = SHARED_TESTDATA / "tdx"
QUOTE_V4 = (TDX / "tdx_quote").read_bytes()
QUOTE_V5 = (TDX / "tdx_quote_td15ex").read_bytes()
QUOTE_OUTDATED = (TDX / "tdx_quote_outdated").read_bytes()
EXPECTED = {c["name"]: c for c in json.loads((TDX / "expected.json").read_text())["cases"]}
MRTD_V4 = bytes.fromhex(EXPECTED["tdx_v4_uptodate"]["mr_td"])
MRTD_V5 = bytes.fromhex(EXPECTED["tdx_v5_td15ex_uptodate"]["mr_td"])
NOW_V4 = 1752919234
NOW_V5 = 1794008710
NOW_OUTDATED = 1774003274
FMSPC = "B0C06F000000"

PROVIDER = SigningKey(b"\x05" * 32)
COMMITTEE = b"\x33" * 32


def cache(tmp_path: Path, files: dict[str, str], *, strip_chain: bool = False
          ) -> CollateralCache:
    for fmspc, name in files.items():
        text = (TDX / name).read_text()
        if strip_chain:
            doc = json.loads(text)
            doc.pop("pck_certificate_chain", None)
            text = json.dumps(doc)
        (tmp_path / f"{fmspc}.json").write_text(text)
    return CollateralCache(tmp_path)


@pytest.fixture
def v4_cache(tmp_path: Path) -> CollateralCache:
    return cache(tmp_path, {FMSPC: "tdx_quote_collateral.json"})


def flipped(quote: bytes, offset: int) -> bytes:
    return quote[:offset] + bytes([quote[offset] ^ 0x01]) + quote[offset + 1:]


def card(quote: bytes | None) -> ProviderCard:
    return ProviderCard(PROVIDER.public, Capabilities(1000, 1024, 1, quote is not None, ()),
                        1, quote)


# -- verify_provider_quote ---------------------------------------------------------------


def test_v4_quote_verifies_and_returns_its_mr_td(v4_cache: CollateralCache) -> None:
    assert verify_provider_quote(QUOTE_V4, v4_cache, NOW_V4) == MRTD_V4


def test_v5_quote_verifies_and_returns_its_mr_td(tmp_path: Path) -> None:
    source = cache(tmp_path, {FMSPC: "tdx_quote_td15ex_collateral.json"})
    assert verify_provider_quote(QUOTE_V5, source, NOW_V5) == MRTD_V5


@pytest.mark.parametrize("offset", [48 + 136, 48 + 520, 646, 700, 2005])
def test_bit_flipped_quote_is_refused(v4_cache: CollateralCache, offset: int) -> None:
    # MR_TD, REPORTDATA, the attestation key, the certification data: every byte counts.
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(flipped(QUOTE_V4, offset), v4_cache, NOW_V4)
    assert info.value.reason in {"quote_invalid", "collateral_mismatch"}
    assert str(info.value).startswith(f"provider quote refused: {info.value.reason}: ")


def test_expired_collateral_is_refused(v4_cache: CollateralCache) -> None:
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_V4, v4_cache, NOW_V4 + 2 * 86400)
    assert info.value.reason == "collateral_expired"
    assert "TCBInfo expired" in info.value.detail


def test_missing_collateral_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_V4, CollateralCache(tmp_path), NOW_V4)
    assert (info.value.reason, info.value.detail) == (
        "no_collateral", f"no cached collateral for FMSPC {FMSPC}")


def test_unreadable_collateral_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"{FMSPC}.json").write_text("{not json")
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_V4, CollateralCache(tmp_path), NOW_V4)
    assert info.value.reason == "no_collateral"


def test_malformed_quote_is_refused_before_verification(v4_cache: CollateralCache) -> None:
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_V4[:100], v4_cache, NOW_V4)
    assert (info.value.reason, info.value.detail) == (
        "quote_malformed", "tdx_quote: ends inside the TD report body")


def test_unknown_platform_tcb_is_refused(tmp_path: Path) -> None:
    source = cache(tmp_path, {"90C06F000000": "tdx_quote_outdated_collateral.json"})
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_OUTDATED, source, NOW_OUTDATED)
    assert info.value.reason == "tcb_unknown"


def test_out_of_date_tcb_follows_the_policy(tmp_path: Path) -> None:
    source = cache(tmp_path, {FMSPC: "tdx_quote_td15ex_collateral.json"}, strip_chain=True)
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_V4, source, NOW_V5)
    assert info.value.reason == "tcb_status"
    lenient = ProviderQuotePolicy(dcap=DcapPolicy(
        accepted_statuses=frozenset({"UpToDate", "OutOfDate"}),
        grace_period_seconds=600 * 86400))
    assert verify_provider_quote(QUOTE_V4, source, NOW_V5, lenient) == MRTD_V4


def test_mr_td_allow_list(v4_cache: CollateralCache) -> None:
    allowed = ProviderQuotePolicy(allowed_mr_td=frozenset({MRTD_V4}))
    assert verify_provider_quote(QUOTE_V4, v4_cache, NOW_V4, allowed) == MRTD_V4
    other = ProviderQuotePolicy(allowed_mr_td=frozenset({MRTD_V5}))
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(QUOTE_V4, v4_cache, NOW_V4, other)
    assert (info.value.reason, info.value.detail) == (
        "mr_td", f"MR_TD {MRTD_V4.hex()} is not in the allow-list")


def test_policy_refuses_malformed_allow_list() -> None:
    with pytest.raises(LocalError):
        ProviderQuotePolicy(allowed_mr_td=frozenset({b"\x01" * 32}))


# -- provider binding, with re-signed quotes under a test root ------------------------------
#
# The real quotes in testdata/tdx/ cannot carry our binding, so these quotes are re-signed by
# tests/tdx_resign.py: validly signed under a throwaway root CA, with chosen REPORTDATA.

RESIGNED_MRTD = b"\x42" * 48
OTHER = SigningKey(b"\x06" * 32)


@pytest.fixture(scope="module")
def pki() -> ResignPki:
    return ResignPki()


@pytest.fixture
def test_root(pki: ResignPki) -> Verifier:
    return functools.partial(dcap.verify_under_test_root, root_der=pki.root_der)


@pytest.fixture
def resigned_cache(tmp_path: Path, pki: ResignPki) -> CollateralCache:
    (tmp_path / f"{FMSPC}.json").write_text(pki.collateral())
    return CollateralCache(tmp_path)


def bound_quote(pki: ResignPki, key: SigningKey, tail: bytes = bytes(32)) -> bytes:
    return pki.quote(mr_td=RESIGNED_MRTD,
                     report_data=provider_quote_binding(key.public) + tail)


def card_of(key: SigningKey, quote: bytes) -> ProviderCard:
    return ProviderCard(key.public, Capabilities(1000, 1024, 1, True, ()), 1, quote)


def test_bound_quote_is_accepted_by_the_component_and_verifies(
        pki: ResignPki, test_root: Verifier, resigned_cache: CollateralCache) -> None:
    quote = bound_quote(pki, PROVIDER, tail=b"\x99" * 32)
    assert quote_mr_td(quote) == RESIGNED_MRTD
    assert quote_report_data(quote)[:32] == provider_quote_binding(PROVIDER.public)
    Compute().check(PROVIDER.public, register_provider(card_of(PROVIDER, quote)))
    assert verify_provider_quote(quote, resigned_cache, RESIGN_NOW, provider_id=PROVIDER.public,
                                 verifier=test_root) == RESIGNED_MRTD
    vote_check(register_provider(card_of(PROVIDER, quote)), resigned_cache, RESIGN_NOW,
               verifier=test_root)
    # The harness's root is not Intel's: the production verifier refuses the same quote.
    with pytest.raises(ProviderQuoteRefused):
        verify_provider_quote(quote, resigned_cache, RESIGN_NOW, provider_id=PROVIDER.public)


def test_another_providers_quote_is_refused(pki: ResignPki, test_root: Verifier,
                                            resigned_cache: CollateralCache) -> None:
    quote = bound_quote(pki, PROVIDER)  # genuine and valid, but PROVIDER's
    stolen = card_of(OTHER, quote)
    with pytest.raises(InvalidCommand) as refused:
        Compute().check(OTHER.public, register_provider(stolen))
    assert refused.value.reason == "quote_not_bound"
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(quote, resigned_cache, RESIGN_NOW, provider_id=OTHER.public,
                              verifier=test_root)
    assert (info.value.reason, info.value.detail) == (
        "quote_not_bound", f"REPORTDATA[0..32] is not the binding of provider "
        f"{OTHER.public.hex()}")
    for make in (register_provider, refresh_provider):
        with pytest.raises(ProviderQuoteRefused) as info:
            vote_check(make(stolen), resigned_cache, RESIGN_NOW, verifier=test_root)
        assert info.value.reason == "quote_not_bound"


def test_real_quotes_bind_no_provider(v4_cache: CollateralCache) -> None:
    # Genuine Intel-signed, but its REPORTDATA is not our binding: no provider may use it.
    with pytest.raises(ProviderQuoteRefused) as info:
        vote_check(register_provider(card(QUOTE_V4)), v4_cache, NOW_V4)
    assert info.value.reason == "quote_not_bound"


def test_verified_reportdata_must_be_the_parsed_one(
        pki: ResignPki, test_root: Verifier, resigned_cache: CollateralCache) -> None:
    def lying(*args: Any, **kw: Any) -> Any:
        return dataclasses.replace(test_root(*args, **kw), report_data=bytes(64))

    quote = bound_quote(pki, PROVIDER)
    with pytest.raises(ProviderQuoteRefused) as info:
        verify_provider_quote(quote, resigned_cache, RESIGN_NOW, provider_id=PROVIDER.public,
                              verifier=lying)
    assert info.value.reason == "report_data_mismatch"


# -- vote_check ------------------------------------------------------------------------------


def test_vote_check_verifies_quotes_in_register_and_refresh(
        pki: ResignPki, test_root: Verifier, resigned_cache: CollateralCache) -> None:
    quote = bound_quote(pki, PROVIDER)
    for make in (register_provider, refresh_provider):
        vote_check(make(card_of(PROVIDER, quote)), resigned_cache, RESIGN_NOW,
                   verifier=test_root)
        with pytest.raises(ProviderQuoteRefused) as info:  # MR_TD no longer signed
            vote_check(make(card_of(PROVIDER, flipped(quote, 48 + 136))), resigned_cache,
                       RESIGN_NOW, verifier=test_root)
        assert info.value.reason == "quote_invalid"
        with pytest.raises(ProviderQuoteRefused) as info:
            vote_check(make(card_of(PROVIDER, quote)), resigned_cache, RESIGN_NOW + 31 * 86400,
                       verifier=test_root)
        assert info.value.reason == "collateral_expired"


def test_vote_check_passes_commands_without_quotes(tmp_path: Path) -> None:
    empty = CollateralCache(tmp_path)  # would refuse any quote: nothing must be verified
    request = ComputeRequest(b"\x01" * 32, PROVIDER.public, b"\x02" * 32, None, None, 1, 1, 0,
                             False, 1, 1, b"\x03" * 32)
    for command in (register_provider(card(None)), refresh_provider(card(None)),
                    deregister_provider(), submit_request(request)):
        vote_check(command, empty, NOW_V4)


def test_vote_check_refuses_a_malformed_card(v4_cache: CollateralCache) -> None:
    bad: dict[str, Any] = {"card": {"provider_id": PROVIDER.public}}
    with pytest.raises(InvalidCommand) as info:
        vote_check(Command("register_provider", bad), v4_cache, NOW_V4)
    assert info.value.reason == "bad_args"


def test_vote_check_envelopes_checks_every_command(
        pki: ResignPki, test_root: Verifier, resigned_cache: CollateralCache) -> None:
    quote = bound_quote(pki, PROVIDER)
    good = Envelope.sign(PROVIDER, COMMITTEE, 1, [register_provider(card_of(PROVIDER, quote))])
    bad = Envelope.sign(PROVIDER, COMMITTEE, 2, [
        deregister_provider(), refresh_provider(card_of(PROVIDER, flipped(quote, 700)))])
    vote_check_envelopes([good], resigned_cache, RESIGN_NOW, verifier=test_root)
    with pytest.raises(ProviderQuoteRefused):
        vote_check_envelopes([good, bad], resigned_cache, RESIGN_NOW, verifier=test_root)


def test_driver_refuses_to_vote_for_a_bad_quote(
        pki: ResignPki, test_root: Verifier, resigned_cache: CollateralCache) -> None:
    from coalitiond.commands.member import MemberCommand
    from coalitiond.node.quote_driver import ProviderQuoteDriver

    clock = [float(RESIGN_NOW)]
    driver = ProviderQuoteDriver(resigned_cache, wall=lambda: clock[0], verifier=test_root)
    assert driver.checks_envelopes
    quote = bound_quote(pki, PROVIDER)
    good = Envelope.sign(PROVIDER, COMMITTEE, 1, [register_provider(card_of(PROVIDER, quote))])
    bad = Envelope.sign(PROVIDER, COMMITTEE, 2, [
        register_provider(card_of(PROVIDER, flipped(quote, 700)))])
    assert driver.vote_check(good) is None
    reason = driver.vote_check(bad)
    assert reason is not None and reason.startswith("provider quote refused: quote_invalid: ")
    assert driver.vote_check(MemberCommand.make(COMMITTEE, "stamp", {})) is None
    clock[0] += 31 * 86400  # the collateral has expired at this member's clock
    reason = driver.vote_check(good)
    assert reason is not None and reason.startswith("provider quote refused: collateral_expired")


def test_driver_reuses_a_verdict_for_a_minute(
        pki: ResignPki, test_root: Verifier, resigned_cache: CollateralCache) -> None:
    from coalitiond.node.quote_driver import VERDICT_TTL_S, ProviderQuoteDriver

    calls = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return test_root(*args, **kwargs)

    clock = [float(RESIGN_NOW)]
    driver = ProviderQuoteDriver(resigned_cache, wall=lambda: clock[0], verifier=counting)
    good = Envelope.sign(PROVIDER, COMMITTEE, 1, [
        register_provider(card_of(PROVIDER, bound_quote(pki, PROVIDER)))])
    assert driver.vote_check(good) is None and driver.vote_check(good) is None
    assert len(calls) == 1  # a proposal retried every view verifies once
    clock[0] += VERDICT_TTL_S
    assert driver.vote_check(good) is None and len(calls) == 2
