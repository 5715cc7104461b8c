"""Full DCAP verification of provider quotes before voting (`coalitiond.compute_quotes`),
with the real Intel-signed quotes and collateral at their fixed verification times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_TESTDATA

from coalitiond.attestation.collateral import CollateralCache
from coalitiond.attestation.dcap import DcapPolicy
from coalitiond.commands import Command, Envelope, InvalidCommand
from coalitiond.components.compute import (
    Capabilities,
    ComputeRequest,
    ProviderCard,
    deregister_provider,
    refresh_provider,
    register_provider,
    submit_request,
)
from coalitiond.compute_quotes import (
    ProviderQuotePolicy,
    ProviderQuoteRefused,
    verify_provider_quote,
    vote_check,
    vote_check_envelopes,
)
from coalitiond.crypto import SigningKey
from coalitiond.errors import LocalError

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


# -- vote_check ------------------------------------------------------------------------------


def test_vote_check_verifies_quotes_in_register_and_refresh(v4_cache: CollateralCache) -> None:
    for make in (register_provider, refresh_provider):
        vote_check(make(card(QUOTE_V4)), v4_cache, NOW_V4)
        with pytest.raises(ProviderQuoteRefused):
            vote_check(make(card(flipped(QUOTE_V4, 48 + 136))), v4_cache, NOW_V4)
        with pytest.raises(ProviderQuoteRefused):
            vote_check(make(card(QUOTE_V4)), v4_cache, NOW_V4 + 2 * 86400)


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


def test_vote_check_envelopes_checks_every_command(v4_cache: CollateralCache) -> None:
    good = Envelope.sign(PROVIDER, COMMITTEE, 1, [register_provider(card(QUOTE_V4))])
    bad = Envelope.sign(PROVIDER, COMMITTEE, 2, [deregister_provider(),
                                                 refresh_provider(card(flipped(QUOTE_V4, 700)))])
    vote_check_envelopes([good], v4_cache, NOW_V4)
    with pytest.raises(ProviderQuoteRefused):
        vote_check_envelopes([good, bad], v4_cache, NOW_V4)


def test_driver_refuses_to_vote_for_a_bad_quote(v4_cache: CollateralCache) -> None:
    from coalitiond.compute_quotes import ProviderQuoteDriver
    from coalitiond.member_commands import MemberCommand

    clock = [float(NOW_V4)]
    driver = ProviderQuoteDriver(v4_cache, wall=lambda: clock[0])
    assert driver.checks_envelopes
    good = Envelope.sign(PROVIDER, COMMITTEE, 1, [register_provider(card(QUOTE_V4))])
    bad = Envelope.sign(PROVIDER, COMMITTEE, 2, [register_provider(card(flipped(QUOTE_V4, 700)))])
    assert driver.vote_check(good) is None
    reason = driver.vote_check(bad)
    assert reason is not None and reason.startswith("provider quote refused: quote_invalid: ")
    assert driver.vote_check(MemberCommand.make(COMMITTEE, "stamp", {})) is None
    clock[0] += 2 * 86400  # the collateral has expired at this member's clock
    reason = driver.vote_check(good)
    assert reason is not None and reason.startswith("provider quote refused: collateral_expired")
