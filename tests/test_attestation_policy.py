"""Pure policy layer: REPORTDATA binding (golden vectors), ticket codec, measurement and
freshness checks on synthetic verified quotes, and `[attestation]` parsing refusals."""

from __future__ import annotations

import dataclasses

import pytest

from coalitiond.attestation import binding
from coalitiond.attestation.dcap import AttestationRefused, VerifiedQuote
from coalitiond.attestation.policy import AttestationPolicy, check_measurements, check_ticket
from coalitiond.attestation.ticket import MAX_TICKET_SIZE, Ticket, decode_ticket
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import ConfigError, LocalError

PEER, NET, COM = bytes(range(32)), b"\xaa" * 32, b"\xbb" * 32
T0 = 1_800_000_000
MRTD = b"\x11" * 48

# Golden vectors for docs/attestation.md §2 (pinned: changing them breaks every ticket).
PREIMAGE_HEX = (
    "8773636f616c6974696f6e642f7464782d62696e64015820000102030405060708090a0b0c0d0e0f1011121314"
    "15161718191a1b1c1d1e1f5820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "5820bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb071a6b49d200"
)
REPORT_DATA_HEX = (
    "38be59542b7f1494d6a28c86eca167d9f4d9e13ae000bf7a09b644cb5a8d6f57"
    "135e0f0b8548d7575557d936f0bd00e2a360fd23257b08966b4de1a0acbf84ce"
)
TICKET_HEX = (
    "a761760164706565725820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f6565"
    "706f6368076571756f74654151676e6574776f726b5820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaa69636f6d6d69747465655820bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    "bbbbbbbbbbbbbbbbbb696973737565645f61741a6b49d200"
)


def test_binding_golden_vector() -> None:
    assert binding.binding_preimage(PEER, NET, COM, 7, T0).hex() == PREIMAGE_HEX
    assert binding.report_data(PEER, NET, COM, 7, T0).hex() == REPORT_DATA_HEX
    rd = bytes.fromhex(REPORT_DATA_HEX)
    assert binding.matches(rd, PEER, NET, COM, 7, T0)
    for args in ((b"\x01" * 32, NET, COM, 7, T0), (PEER, b"\x01" * 32, COM, 7, T0),
                 (PEER, NET, b"\x01" * 32, 7, T0), (PEER, NET, COM, 8, T0),
                 (PEER, NET, COM, 7, T0 + 1)):
        assert not binding.matches(rd, *args)


def test_binding_refuses_bad_inputs() -> None:
    with pytest.raises(LocalError, match="binding: peer_id must be 32 bytes, got 31"):
        binding.report_data(PEER[:31], NET, COM, 0, 0)
    with pytest.raises(LocalError, match="binding: epoch out of range: -1"):
        binding.report_data(PEER, NET, COM, -1, 0)


def test_ticket_golden_and_roundtrip() -> None:
    t = Ticket(b"Q", PEER, NET, COM, 7, T0)
    assert t.encode().hex() == TICKET_HEX
    assert decode_ticket(t.encode()) == t
    assert t.expected_report_data().hex() == REPORT_DATA_HEX


GOOD = {"v": 1, "quote": b"Q", "peer": PEER, "network": NET, "committee": COM, "epoch": 7,
        "issued_at": T0}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "ticket is not deterministic CBOR: "),
        (encode([1, 2]), "ticket must be a CBOR map"),
        (encode({k: v for k, v in GOOD.items() if k != "epoch"}), "ticket lacks field 'epoch'"),
        (encode({**GOOD, "extra": 1}), "ticket has unknown field 'extra'"),
        (encode({**GOOD, "v": 2}), "unsupported ticket version 2"),
        (encode({**GOOD, "quote": b""}), "ticket field 'quote' must be non-empty bytes"),
        (encode({**GOOD, "peer": b"x"}), "ticket field 'peer' must be 32 bytes"),
        (encode({**GOOD, "epoch": -1}), "ticket field 'epoch' must be an unsigned integer"),
        (encode({**GOOD, "issued_at": True}), "ticket field 'issued_at' must be an unsigned integer"),
        (b"\x00" * (MAX_TICKET_SIZE + 1), f"ticket larger than {MAX_TICKET_SIZE} bytes"),
    ],
    ids=["not-cbor", "not-map", "missing", "unknown", "version", "empty-quote", "short-peer",
         "negative", "bool", "oversize"],
)
def test_ticket_refusals(data: bytes, message: str) -> None:
    with pytest.raises(AttestationRefused) as ei:
        decode_ticket(data)
    assert ei.value.reason == "ticket_malformed"
    assert ei.value.detail.startswith(message)


def test_ticket_noncanonical_refused() -> None:
    # The same map with its keys out of deterministic order: refused, so one ticket has
    # exactly one encoding.
    items = sorted((encode(k), encode(v)) for k, v in GOOD.items())
    reordered = bytes([0xA7]) + b"".join(k + v for k, v in reversed(items))
    with pytest.raises(AttestationRefused, match="ticket_malformed: ticket is not deterministic"):
        decode_ticket(reordered)


def verified(**overrides: object) -> VerifiedQuote:
    base = VerifiedQuote(
        quote_version=4, report_type="TD10", tcb_status="UpToDate", advisory_ids=(),
        tcb_eval_data_number=17, fmspc="B0C06F000000", tee_tcb_svn=bytes(16), mr_seam=bytes(48),
        td_attributes=(0x10000000).to_bytes(8, "little"), xfam=bytes(8), mr_td=MRTD,
        mr_config_id=bytes(48), mr_owner=bytes(48), mr_owner_config=bytes(48),
        rtmrs=(b"\x00" * 48, b"\x01" * 48, b"\x02" * 48, b"\x03" * 48),
        report_data=binding.report_data(PEER, NET, COM, 7, T0), collateral_expires_at=T0 + 10**6,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


POLICY = AttestationPolicy(allowed_mr_td=frozenset({MRTD}),
                           rtmr_pins={1: frozenset({b"\x01" * 48}), 2: frozenset({b"\x02" * 48})})


def test_measurements_accept_and_refuse() -> None:
    check_measurements(POLICY, verified())
    cases = [
        (verified(mr_td=b"\x22" * 48), "mr_td", f"MR_TD {'22' * 48} is not in the allow-list"),
        (verified(rtmrs=(b"\x00" * 48, b"\x09" * 48, b"\x02" * 48, b"\x03" * 48)), "rtmr",
         f"RTMR1 {'09' * 48} is not among the pinned values"),
        (verified(td_attributes=(0x10000001).to_bytes(8, "little")), "debug",
         "TD has the DEBUG attribute set"),
        (verified(mr_owner=b"\x01" * 48), "host_fields", f"MROWNER is not zero: {'01' * 48}"),
    ]
    for v, reason, detail in cases:
        with pytest.raises(AttestationRefused) as ei:
            check_measurements(POLICY, v)
        assert (ei.value.reason, ei.value.detail) == (reason, detail)
    relaxed = dataclasses.replace(POLICY, require_zero_host_fields=False)
    check_measurements(relaxed, verified(mr_config_id=b"\x05" * 48))


def _check(ticket: Ticket, v: VerifiedQuote | None = None, *, now: int = T0 + 10,
           peer: bytes = PEER, epoch: int = 7) -> int:
    return check_ticket(POLICY, ticket, v or verified(), peer_id=peer, network_id=NET,
                        committee_id=COM, epoch=epoch, now=now)


def test_ticket_checks() -> None:
    t = Ticket(b"Q", PEER, NET, COM, 7, T0)
    assert _check(t) == T0 + POLICY.max_ticket_age_seconds
    # The collateral's end bounds the admission too.
    assert _check(t, verified(collateral_expires_at=T0 + 100)) == T0 + 100
    other = bytes(32)
    cases = [
        (dict(peer=other), t, "binding", "ticket names another peer"),
        ({}, dataclasses.replace(t, network_id=other), "binding", "ticket is for another network"),
        ({}, dataclasses.replace(t, committee_id=other), "binding", "ticket is for another committee"),
        (dict(epoch=8), t, "stale_epoch", "ticket is for epoch 7, committee is at 8"),
        ({}, dataclasses.replace(t, issued_at=T0 + 1), "binding",
         "REPORTDATA does not bind this peer's ticket"),
        (dict(now=T0 + 86400), t, "ticket_expired", f"ticket expired at {T0 + 86400}, now is {T0 + 86400}"),
        (dict(now=T0 - 301), t, "ticket_future", f"ticket issued at {T0}, now is {T0 - 301}"),
    ]
    for kw, ticket, reason, detail in cases:
        with pytest.raises(AttestationRefused) as ei:
            _check(ticket, **kw)  # type: ignore[arg-type]
        assert (ei.value.reason, ei.value.detail) == (reason, detail)


# ---------------------------------------------------------------------------------------
# [attestation] table

MRTD_HEX = MRTD.hex()


def test_from_mapping_full() -> None:
    p = AttestationPolicy.from_mapping({
        "mode": "tdx", "mrtd": [MRTD_HEX], "rtmr_pins": {"rtmr1": "01" * 48, "rtmr2": ["02" * 48, "03" * 48]},
        "tcb_statuses": ["UpToDate", "SWHardeningNeeded"], "max_ticket_age_s": 3600,
        "grace_period_s": 60, "rejected_advisories": ["INTEL-SA-00615"],
        "min_tcb_eval_data_number": 17, "allow_smt": False, "require_zero_host_fields": False,
        "max_clock_skew_s": 5, "pccs_url": "https://pccs.example", "collateral_cache": "/var/cache/c",
    })
    assert p.allowed_mr_td == {MRTD}
    assert p.rtmr_pins == {1: {b"\x01" * 48}, 2: {b"\x02" * 48, b"\x03" * 48}}
    assert p.dcap.accepted_statuses == {"UpToDate", "SWHardeningNeeded"}
    assert (p.max_ticket_age_seconds, p.dcap.grace_period_seconds, p.max_clock_skew_seconds) == (3600, 60, 5)
    assert p.dcap.rejected_advisories == {"INTEL-SA-00615"}
    assert not p.require_zero_host_fields
    d = p.dcap_policy()
    assert (d.allow_smt, d.allow_dynamic_platform, d.min_tcb_eval_data_number) == (False, True, 17)
    assert AttestationPolicy.from_mapping({"mode": "none"}).mode == "none"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, 'f.toml: attestation.mode: missing (one of "tdx", "none")'),
        ({"mode": "sgx"}, "f.toml: attestation.mode: must be \"tdx\" or \"none\", got 'sgx'"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "colour": 1}, "f.toml: attestation.colour: unknown key"),
        ({"mode": "tdx"}, 'f.toml: attestation.mrtd: mode = "tdx" needs at least one allowed MR_TD'),
        ({"mode": "none", "mrtd": [MRTD_HEX]},
         'f.toml: attestation.mode: mode = "none" is refused when TDX measurements are declared'),
        ({"mode": "none", "rtmr_pins": {"rtmr1": "01" * 48}},
         'f.toml: attestation.mode: mode = "none" is refused when TDX measurements are declared'),
        ({"mode": "tdx", "mrtd": ["zz"]}, "f.toml: attestation.mrtd[0]: not hex: 'zz'"),
        ({"mode": "tdx", "mrtd": ["00"]}, "f.toml: attestation.mrtd[0]: must be 48 bytes (96 hex digits), got 1"),
        ({"mode": "tdx", "mrtd": 5}, "f.toml: attestation.mrtd: must be a hex string or a list of hex strings"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "rtmr_pins": {"rtmr4": "01" * 48}},
         "f.toml: attestation.rtmr_pins.rtmr4: unknown key (use rtmr0..rtmr3)"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "rtmr_pins": {"rtmr1": []}},
         "f.toml: attestation.rtmr_pins.rtmr1: must not be empty (omit it to leave the RTMR unpinned)"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "tcb_statuses": ["Revoked"]},
         "f.toml: attestation.tcb_statuses: unknown TCB status 'Revoked'"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "tcb_statuses": []},
         "f.toml: attestation.tcb_statuses: must not be empty"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "max_ticket_age_s": 0},
         "f.toml: attestation.max_ticket_age_s: must be >= 1"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "grace_period_s": "1d"},
         "f.toml: attestation.grace_period_s: must be an integer"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "allow_smt": 1},
         "f.toml: attestation.allow_smt: must be true or false"),
        ({"mode": "tdx", "mrtd": [MRTD_HEX], "pccs_url": "ftp://x"},
         "f.toml: attestation.pccs_url: must be an http(s) URL"),
    ],
)
def test_from_mapping_refusals(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        AttestationPolicy.from_mapping(table, "f.toml")
    assert str(ei.value) == message
