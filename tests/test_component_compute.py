"""The `compute` component: parameters, quote parsing, every refusal, the clearing rule,
reads with proofs, snapshots, and (Hypothesis) replay determinism and the grant invariants."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Final

import pytest
from conftest import SHARED_TESTDATA
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.attestation.quote import (
    MAX_QUOTE_SIZE,
    MalformedQuote,
    quote_mr_td,
    quote_report_data,
)
from coalitiond.commands.envelope import Command, Envelope, InvalidCommand
from coalitiond.components.base import (
    Applied,
    BlockContext,
    CommandResult,
    MalformedSnapshot,
    QueryError,
    QueryNotFound,
    Refused,
    check_state_proof,
)
from coalitiond.components.compute import component as compute_module
from coalitiond.components.compute.component import Compute, demo_commands
from coalitiond.components.compute.records import (
    MAX_TICK,
    Capabilities,
    ComputeLog,
    ComputeRequest,
    ProviderCard,
    Usage,
    cancel_request,
    deregister_provider,
    provider_quote_binding,
    quote_is_bound,
    refresh_provider,
    register_provider,
    submit_log,
    submit_request,
)
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import OperatorError
from coalitiond.primitives.identity import digest, hash_structure

TDX = SHARED_TESTDATA / "tdx"
QUOTE_V4 = (TDX / "tdx_quote").read_bytes()
QUOTE_V5 = (TDX / "tdx_quote_td15ex").read_bytes()
QUOTE_V5_TD15 = (TDX / "tdx_quote_outdated").read_bytes()
EXPECTED = {c["quote_file"]: bytes.fromhex(c["mr_td"])
            for c in json.loads((TDX / "expected.json").read_text())["cases"]}
MRTD_V4 = EXPECTED["tdx_quote"]
MRTD_V5 = EXPECTED["tdx_quote_td15ex"]

P1, P2, P3 = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))
R1, R2 = SigningKey(b"\x11" * 32), SigningKey(b"\x12" * 32)
COMMITTEE = b"\x33" * 32
ALMANAC = b"\xa1" * 32


def caps(cpu: int = 4000, ram: int = 8192, storage: int = 100, tdx: bool = False
         ) -> Capabilities:
    return Capabilities(cpu, ram, storage, tdx, ("eu-west",))


def bound(quote: bytes, key: SigningKey, tail: bytes = bytes(32)) -> bytes:
    """`quote` with REPORTDATA = the binding of `key` ‖ `tail`. Not re-signed: the component
    only parses quotes (tests/test_compute_quotes.py verifies re-signed bound quotes)."""
    at = 520 + (48 if quote[0] == 4 else 54)
    return quote[:at] + provider_quote_binding(key.public) + tail + quote[at + 64:]


def card(key: SigningKey, rate: int = 100, quote: bytes | None = None, bind: bool = True,
         **kw: Any) -> ProviderCard:
    """A card of `key`; a quote is bound to `key` unless `bind` is false."""
    if quote is not None and bind:
        quote = bound(quote, key)
    return ProviderCard(key.public, caps(tdx=quote is not None or kw.pop("tdx", False), **kw),
                        rate, quote)


def rid(n: int) -> bytes:
    return hash_structure("test-request", 1, n)


def request(key: SigningKey, n: int, cpu: int = 1000, ram: int = 1024, storage: int = 0,
            tdx: bool = False, mrtd: bytes | None = None, duration: int = 10,
            deadline: int = 1000, pin: bytes | None = None) -> ComputeRequest:
    return ComputeRequest(rid(n), key.public, b"\x0e" * 32, pin, mrtd, cpu, ram, storage, tdx,
                          duration, deadline, b"\x5e" * 32)


class Chain:
    """Drives a component block by block as the executor would: commands, then end_block.
    The followed Almanac has stamped `tick` (default 0; None: no stamp yet)."""

    def __init__(self, component: Compute | None = None, tick: int | None = 0) -> None:
        self.c = component if component is not None else Compute(ALMANAC)
        self.height = 0
        self.nonce = 0
        self.tick = tick

    def block(self, *pairs: tuple[SigningKey, list[Command]], tick: int | None = None
              ) -> tuple[list[CommandResult], Applied | None]:
        self.height += 1
        if tick is not None:
            self.tick = tick
        ctx = BlockContext(self.height, self.height.to_bytes(32, "big"), self.tick)
        envelopes = []
        for key, commands in pairs:
            self.nonce += 1
            envelopes.append(Envelope.sign(key, COMMITTEE, self.nonce, commands))
        results = self.c.apply(ctx, envelopes)
        return results, self.c.end_block(ctx)

    def one(self, key: SigningKey, command: Command, tick: int | None = None) -> CommandResult:
        results, _ = self.block((key, [command]), tick=tick)
        return results[0]

    def events(self, produced: Applied | None) -> list[list[Any]]:
        return [] if produced is None else [decode(e) for e in produced.entries]


def grant_of(chain: Chain, n: int) -> dict[str, Any]:
    read: dict[str, Any] = chain.c.query("grant", {"request_id": rid(n)})["grant"]
    return read


def status(chain: Chain, n: int) -> str:
    value: str = chain.c.query("request", {"request_id": rid(n)})["request"]["status"]
    return value


# -- parameters ---------------------------------------------------------------------------


def test_params_from_config_table() -> None:
    c = Compute.from_params({"follow_almanac": ALMANAC})
    assert (c.follow_almanac, c.tick_interval_ms) == (ALMANAC, 1000)
    assert Compute.from_params({"follow_almanac": None, "tick_interval_ms": 500}
                               ).tick_interval_ms == 500
    assert Compute.from_params({}).follow_almanac is None


@pytest.mark.parametrize(("params", "message"), [
    ({"colour": 1}, "component.colour: unknown key for compute"),
    ({"follow_almanac": b"\x01" * 31}, "component.follow_almanac: must be a 32-byte committee id"),
    ({"tick_interval_ms": 5}, "component.tick_interval_ms: must be 10..86400000"),
    ({"tick_interval_ms": True}, "component.tick_interval_ms: must be 10..86400000"),
])
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError) as info:
        Compute.from_params(params)
    assert str(info.value) == message


def test_config_digest_commits_to_every_parameter() -> None:
    digests = {Compute().config_digest(), Compute(ALMANAC).config_digest(),
               Compute(ALMANAC, 500).config_digest()}
    assert len(digests) == 3


def test_registered_kind() -> None:
    from coalitiond.components import build
    assert isinstance(build("compute", {"follow_almanac": None}), Compute)


# -- quote parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tdx_quote", "tdx_quote_td15ex", "tdx_quote_outdated"])
def test_quote_mr_td_matches_the_real_quotes(name: str) -> None:
    assert quote_mr_td((TDX / name).read_bytes()) == EXPECTED[name]


def test_quote_mr_td_matches_dcap_verification() -> None:
    from coalitiond.attestation import dcap
    for quote, collateral, now in ((QUOTE_V4, "tdx_quote_collateral.json", 1752919234),
                                   (QUOTE_V5, "tdx_quote_td15ex_collateral.json", 1794008710)):
        verified = dcap.verify(quote, (TDX / collateral).read_text(), now)
        assert quote_mr_td(quote) == verified.mr_td
        assert quote_report_data(quote) == verified.report_data


def _patched(quote: bytes, offset: int, data: bytes) -> bytes:
    return quote[:offset] + data + quote[offset + len(data):]


@pytest.mark.parametrize(("quote", "message"), [
    (QUOTE_V4[:47], "tdx_quote: shorter than its 48-byte header"),
    (_patched(QUOTE_V4, 4, b"\x00\x00\x00\x00"), "tdx_quote: TEE type 0x0 is not TDX (0x81)"),
    (_patched(QUOTE_V4, 2, b"\x03\x00"),
     "tdx_quote: attestation key type 3 is not ECDSA-P256 (2)"),
    (_patched(QUOTE_V4, 0, b"\x03\x00"), "tdx_quote: version 3 (expected 4 or 5)"),
    (QUOTE_V5[:50], "tdx_quote: v5 quote ends before its body descriptor"),
    (_patched(QUOTE_V5, 48, b"\x01\x00"),
     "tdx_quote: v5 body type 1 of 885 bytes is not a TD report (2: 584, 3: 648, 4: 885)"),
    (_patched(QUOTE_V5, 50, b"\x00\x01\x00\x00"),
     "tdx_quote: v5 body type 4 of 256 bytes is not a TD report (2: 584, 3: 648, 4: 885)"),
    (QUOTE_V4[:600], "tdx_quote: ends inside the TD report body"),
    (QUOTE_V4[:1000], "tdx_quote: signature data of 4300 bytes runs past the end"),
    (QUOTE_V4 + bytes(MAX_QUOTE_SIZE), f"tdx_quote: {len(QUOTE_V4) + MAX_QUOTE_SIZE} bytes "
     f"exceeds {MAX_QUOTE_SIZE}"),
])
def test_malformed_quotes(quote: bytes, message: str) -> None:
    with pytest.raises(MalformedQuote) as info:
        quote_mr_td(quote)
    assert str(info.value) == message


def test_quote_trailing_padding_is_allowed() -> None:
    assert quote_mr_td(QUOTE_V4 + bytes(10)) == MRTD_V4


# -- stateless check -------------------------------------------------------------------------


def _card_wire(**changes: Any) -> dict[str, Any]:
    wire = card(P1).to_command_wire()
    wire.update(changes)
    return wire


def _req_wire(**changes: Any) -> dict[str, Any]:
    wire = request(R1, 1).to_wire()
    wire.update(changes)
    return wire


_LOG = ComputeLog.sign(P1, b"\x77" * 32, Usage(10, 512, 0))


@pytest.mark.parametrize(("client", "command", "reason", "message"), [
    (P1, Command("publish", {}), "unknown_op",
     "unknown op 'publish' (compute accepts: register_provider, refresh_provider, "
     "deregister_provider, submit_request, cancel_request, submit_log)"),
    (P1, Command("register_provider", {}), "bad_args",
     "register_provider: args must be exactly {card}"),
    (P1, Command("deregister_provider", {"x": 1}), "bad_args",
     "deregister_provider: args must be exactly {}"),
    (P1, Command("register_provider", {"card": [1]}), "bad_args",
     "register_provider: card must be a map"),
    (P1, Command("register_provider", {"card": card(P1).to_wire()}), "bad_args",
     "register_provider: card must have exactly the keys ['capabilities', 'provider_id', "
     "'rate_per_hour', 'tdx_quote'], got ['capabilities', 'provider_id', 'rate_per_hour', "
     "'refreshed_tick', 'tdx_quote']"),
    (P1, Command("register_provider", {"card": _card_wire(rate_per_hour=-1)}), "bad_args",
     "register_provider: card.rate_per_hour must be an integer 0..9223372036854775807"),
    (P1, Command("register_provider", {"card": _card_wire(tdx_quote="q")}), "bad_args",
     "register_provider: card.tdx_quote must be bytes or null"),
    (P1, Command("register_provider", {"card": _card_wire(tdx_quote=QUOTE_V4)}), "bad_args",
     "register_provider: card.tdx_quote given but capabilities.tdx is false"),
    (P1, Command("refresh_provider", {"card": _card_wire(
        capabilities={**caps().to_wire(), "regions": ["EU"]})}), "bad_args",
     "refresh_provider: card.capabilities.regions: each must match [a-z0-9][a-z0-9-]* and be "
     "at most 32 chars"),
    (P1, Command("register_provider", {"card": _card_wire(
        capabilities={**caps().to_wire(), "regions": ["eu", "eu"]})}), "bad_args",
     "register_provider: card.capabilities.regions lists a region twice"),
    (P1, Command("register_provider", {"card": _card_wire(
        capabilities={**caps().to_wire(), "tdx": 1})}), "bad_args",
     "register_provider: card.capabilities.tdx must be a boolean"),
    (P2, register_provider(card(P1)), "not_provider",
     f"register_provider: card.provider_id must be the signing client key {P2.public.hex()}"),
    (P1, register_provider(card(P1, quote=QUOTE_V4[:100], bind=False)), "bad_quote",
     "register_provider: card.tdx_quote: ends inside the TD report body"),
    (R1, Command("submit_request", {"request": _req_wire(min_cpu_millicores=0)}), "bad_args",
     "submit_request: request.min_cpu_millicores must be an integer 1..4294967296"),
    (R1, Command("submit_request", {"request": _req_wire(duration_sec=0)}), "bad_args",
     "submit_request: request.duration_sec must be an integer 1..31622400"),
    (R1, Command("submit_request", {"request": _req_wire(expected_mrtd=b"\x01" * 32)}),
     "bad_args", "submit_request: request.expected_mrtd must be 48 bytes"),
    (R1, Command("submit_request", {"request": _req_wire(tdx_required=None)}), "bad_args",
     "submit_request: request.tdx_required must be a boolean"),
    (R2, submit_request(request(R1, 1)), "not_requester",
     f"submit_request: request.requester must be the signing client key {R2.public.hex()}"),
    (R1, Command("cancel_request", {"request_id": b"x"}), "bad_args",
     "cancel_request: args.request_id must be 32 bytes"),
    (P1, Command("submit_log", {"log": {**_LOG.to_wire(), "usage": {
        "cpu_seconds": 1, "ram_mib_peak": 1, "exit_code": 1 << 40}}}), "bad_args",
     "submit_log: log.usage.exit_code must be an integer -2147483648..2147483647"),
    (P1, submit_log(replace(_LOG, usage=Usage(11, 512, 0))), "bad_log_signature",
     f"submit_log: log.signature does not verify for provider {P1.public.hex()}"),
    (P1, submit_log(replace(_LOG, provider_id=P2.public)), "bad_log_signature",
     f"submit_log: log.signature does not verify for provider {P2.public.hex()}"),
])
def test_check_refusals(client: SigningKey, command: Command, reason: str, message: str
                        ) -> None:
    with pytest.raises(InvalidCommand) as info:
        Compute().check(client.public, command)
    assert info.value.reason == reason
    assert str(info.value) == message


def test_check_accepts_well_formed_commands() -> None:
    c = Compute()
    c.check(P1.public, register_provider(card(P1, quote=QUOTE_V4)))
    c.check(P1.public, refresh_provider(card(P1, quote=QUOTE_V5)))
    c.check(P1.public, deregister_provider())
    c.check(R1.public, submit_request(request(R1, 1, mrtd=MRTD_V4, pin=b"\x01" * 32)))
    c.check(R1.public, cancel_request(rid(1)))
    # A log is the provider's signature; any admitted client may relay it.
    c.check(R2.public, submit_log(_LOG))


# -- stateful refusals ----------------------------------------------------------------------


def _refused(chain: Chain, key: SigningKey, command: Command, reason: str, detail: str,
             tick: int | None = None) -> None:
    root = chain.c.state_root()
    result = chain.one(key, command, tick)
    assert result == Refused(reason, detail)
    assert chain.c.state_root() == root


def test_register_refusals() -> None:
    chain = Chain()
    assert isinstance(chain.one(P1, register_provider(card(P1))), Applied)
    _refused(chain, P1, register_provider(card(P1)), "already_registered",
             f"register_provider: provider {P1.public.hex()} is registered (use "
             "refresh_provider)")
    _refused(chain, P2, refresh_provider(card(P2)), "unknown_provider",
             f"refresh_provider: provider {P2.public.hex()} is not registered")
    _refused(chain, P2, deregister_provider(), "unknown_provider",
             f"deregister_provider: provider {P2.public.hex()} is not registered")


def test_registry_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_module, "MAX_PROVIDERS", 1)
    chain = Chain()
    assert isinstance(chain.one(P1, register_provider(card(P1))), Applied)
    _refused(chain, P2, register_provider(card(P2)), "registry_full",
             "register_provider: the registry holds its maximum of 1 providers")


def test_provider_with_live_grants_cannot_leave_or_shrink_or_change_mrtd() -> None:
    chain = Chain()
    chain.one(P1, register_provider(card(P1, quote=QUOTE_V4)))
    chain.one(R1, submit_request(request(R1, 1, cpu=3000, mrtd=MRTD_V4)))
    assert status(chain, 1) == "granted"
    _refused(chain, P1, deregister_provider(), "grants_live",
             "deregister_provider: provider holds 1 live grants; deregister after they expire")
    _refused(chain, P1, refresh_provider(card(P1, quote=QUOTE_V4, cpu=2000)), "capacity_in_use",
             "refresh_provider: live grants use 3000 millicores, 1024 MiB, 0 GiB; the new "
             "capabilities must cover them")
    _refused(chain, P1, refresh_provider(card(P1, quote=QUOTE_V5)), "grants_live",
             f"refresh_provider: live grant {rid(1).hex()} needs the current TDX capability or "
             "MR_TD")
    # A refresh that keeps every live grant valid is fine and stamps the tick.
    result = chain.one(P1, refresh_provider(card(P1, quote=QUOTE_V4, rate=7)), tick=3)
    assert isinstance(result, Applied)
    read = chain.c.query("provider", {"provider_id": P1.public})
    assert read["provider"]["card"]["refreshed_tick"] == 3
    assert read["provider"]["card"]["rate_per_hour"] == 7


def test_request_refusals() -> None:
    chain = Chain()
    chain.one(R1, submit_request(request(R1, 1)), tick=5)
    _refused(chain, R1, submit_request(request(R1, 1)), "duplicate_request",
             f"submit_request: request id {rid(1).hex()} is taken")
    _refused(chain, R1, submit_request(request(R1, 2, deadline=4)), "deadline_passed",
             "submit_request: request.deadline_tick 4 is before the current tick 5")
    _refused(chain, R2, cancel_request(rid(1)), "unknown_request",
             f"cancel_request: no request {rid(1).hex()} of this requester")
    _refused(chain, R1, cancel_request(rid(9)), "unknown_request",
             f"cancel_request: no request {rid(9).hex()} of this requester")
    assert isinstance(chain.one(R1, cancel_request(rid(1))), Applied)
    assert status(chain, 1) == "cancelled"
    _refused(chain, R1, cancel_request(rid(1)), "not_open",
             f"cancel_request: request {rid(1).hex()} is cancelled")


def test_open_request_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_module, "MAX_OPEN_REQUESTS", 3)
    monkeypatch.setattr(compute_module, "MAX_OPEN_PER_REQUESTER", 2)
    chain = Chain()
    chain.block((R1, [submit_request(request(R1, 1)), submit_request(request(R1, 2))]))
    _refused(chain, R1, submit_request(request(R1, 3)), "requester_limit",
             "submit_request: this requester has 2 open requests")
    chain.one(R2, submit_request(request(R2, 4)))
    _refused(chain, R2, submit_request(request(R2, 5)), "too_many_open",
             "submit_request: 3 requests are open")


def test_request_records_are_pruned_oldest_closed_first(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(compute_module, "MAX_REQUEST_RECORDS", 2)
    chain = Chain()
    chain.block((R1, [submit_request(request(R1, 1)), submit_request(request(R1, 2))]))
    _refused(chain, R1, submit_request(request(R1, 3)), "compute_full",
             "submit_request: 2 request records are kept and none is closed")
    chain.block((R1, [cancel_request(rid(2)), cancel_request(rid(1))]))
    assert isinstance(chain.one(R1, submit_request(request(R1, 3))), Applied)
    # Request 1 has the lower seq, so it went first even though it closed second.
    with pytest.raises(QueryNotFound):
        chain.c.query("request", {"request_id": rid(1)})
    assert status(chain, 2) == "cancelled"


def test_a_pruned_request_id_submitted_again_keeps_its_own_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_module, "MAX_REQUEST_RECORDS", 1)
    chain = Chain()
    chain.block((R1, [submit_request(request(R1, 1, deadline=5)), cancel_request(rid(1))]))
    # Request 2 prunes the cancelled request 1; its id is then submitted again (pruning 2),
    # with a later deadline, while the first one's deadline entry is still queued.
    chain.block((R1, [submit_request(request(R1, 2, deadline=5)), cancel_request(rid(2))]))
    assert isinstance(chain.one(R1, submit_request(request(R1, 1, deadline=100))), Applied)
    chain.block(tick=6)  # past the first request's deadline, not the second's
    assert status(chain, 1) == "open"
    chain.block(tick=101)
    assert status(chain, 1) == "lapsed"


def test_log_refusals_and_acceptance() -> None:
    chain = Chain()
    chain.one(P1, register_provider(card(P1)))
    chain.one(R1, submit_request(request(R1, 1)))
    grant_id = chain.c.query("grant", {"request_id": rid(1)})["grant"]["grant_id"]
    usage = Usage(3600, 900, 0)
    _refused(chain, P1, submit_log(ComputeLog.sign(P1, b"\x01" * 32, usage)), "unknown_grant",
             f"submit_log: no grant {'01' * 32}")
    _refused(chain, P2, submit_log(ComputeLog.sign(P2, grant_id, usage)), "wrong_provider",
             f"submit_log: grant {grant_id.hex()} names provider {P1.public.hex()}")
    log = ComputeLog.sign(P1, grant_id, usage)
    assert isinstance(chain.one(R2, submit_log(log)), Applied)
    assert grant_of(chain, 1)["log"] == log.to_wire()
    _refused(chain, P1, submit_log(ComputeLog.sign(P1, grant_id, Usage(1, 1, 1))), "log_exists",
             f"submit_log: grant {grant_id.hex()} has its usage log")


def test_log_signature_is_domain_separated() -> None:
    payload = ComputeLog.signed_payload(b"\x01" * 32, P1.public, Usage(1, 2, -3))
    assert decode(payload) == ["compute-log", 1, b"\x01" * 32, P1.public,
                               {"cpu_seconds": 1, "ram_mib_peak": 2, "exit_code": -3}]
    from coalitiond.primitives.crypto import is_valid
    log = ComputeLog.sign(P1, b"\x01" * 32, Usage(1, 2, -3))
    assert is_valid(P1.public, b"coalitiond/compute-log/v1", payload, log.signature)
    assert not is_valid(P1.public, b"coalitiond/client-envelope/v1", payload, log.signature)


# -- a quote is bound to its provider ------------------------------------------------------


def test_provider_quote_binding_bytes() -> None:
    # blake3(cbor(["compute-provider-quote", 1, provider_id])), byte by byte:
    # 83 (array of 3), 76 + 22 text bytes, 01, 58 20 + the 32-byte id.
    preimage = (bytes.fromhex("8376") + b"compute-provider-quote" + bytes.fromhex("015820")
                + P1.public)
    assert provider_quote_binding(P1.public) == digest(preimage)


@pytest.mark.parametrize("quote", [QUOTE_V4, QUOTE_V5, QUOTE_V5_TD15])
def test_binding_is_the_first_half_of_reportdata(quote: bytes) -> None:
    mine = bound(quote, P1, tail=b"\xee" * 32)
    assert quote_report_data(mine) == provider_quote_binding(P1.public) + b"\xee" * 32
    assert quote_mr_td(mine) == quote_mr_td(quote)
    # The second half is the provider's to use: only the first 32 bytes are read.
    assert quote_is_bound(mine, P1.public) and quote_is_bound(bound(quote, P1), P1.public)
    assert not quote_is_bound(mine, P2.public)
    assert not quote_is_bound(quote, P1.public)  # the real quotes carry other REPORTDATA


def test_another_providers_quote_is_refused() -> None:
    theirs = card(P1, quote=QUOTE_V4)  # P1's quote, bound to P1
    stolen = replace(theirs, provider_id=P2.public)  # P2 presents it as its own
    for make in (register_provider, refresh_provider):
        with pytest.raises(InvalidCommand) as info:
            Compute().check(P2.public, make(stolen))
        assert info.value.reason == "quote_not_bound"
        assert str(info.value) == (f"{make(stolen).op}: card.tdx_quote: REPORTDATA[0..32] is "
                                   f"not the binding of provider {P2.public.hex()}")
    # A genuine quote that binds no provider (the real one, as published) is refused too.
    with pytest.raises(InvalidCommand) as info:
        Compute().check(P1.public, register_provider(card(P1, quote=QUOTE_V4, bind=False)))
    assert info.value.reason == "quote_not_bound"
    chain = Chain()
    _refused(chain, P2, register_provider(stolen), "quote_not_bound",
             "register_provider: card.tdx_quote: REPORTDATA[0..32] is not the binding of "
             f"provider {P2.public.hex()}")
    assert isinstance(chain.one(P1, register_provider(theirs)), Applied)
    chain.one(R1, submit_request(request(R1, 1, mrtd=MRTD_V4)))
    assert grant_of(chain, 1)["grant"]["provider_id"] == P1.public


# -- the clearing rule ----------------------------------------------------------------------


def test_cheapest_covering_provider_wins() -> None:
    chain = Chain()
    chain.block((P1, [register_provider(card(P1, rate=300))]),
                (P2, [register_provider(card(P2, rate=100, cpu=500))]),
                (P3, [register_provider(card(P3, rate=200))]))
    results, produced = chain.block((R1, [submit_request(request(R1, 1, cpu=1000))]))
    # P2 is cheapest but has 500 millicores: P3 is the cheapest that covers the request.
    assert grant_of(chain, 1)["grant"]["provider_id"] == P3.public
    events = chain.events(produced)
    assert [e[4] for e in events] == ["grant"]
    assert produced is not None and produced.entry_index == results[0].entry_index + 1


def test_ties_go_to_the_lowest_provider_id() -> None:
    chain = Chain()
    keys = sorted((P1, P2, P3), key=lambda k: k.public, reverse=True)
    chain.block(*((k, [register_provider(card(k, rate=5))]) for k in keys))
    chain.one(R1, submit_request(request(R1, 1)))
    assert grant_of(chain, 1)["grant"]["provider_id"] == min(k.public for k in keys)


def test_requests_clear_in_request_order_until_capacity_runs_out() -> None:
    chain = Chain()
    chain.one(P1, register_provider(card(P1, rate=1, cpu=2500)))
    chain.one(P2, register_provider(card(P2, rate=2, cpu=1000)))
    chain.block((R1, [submit_request(request(R1, n, cpu=1000)) for n in (1, 2, 3, 4)]))
    assert [grant_of(chain, n)["grant"]["provider_id"] for n in (1, 2, 3)] == [
        P1.public, P1.public, P2.public]
    assert status(chain, 4) == "open"
    remaining = chain.c.query("provider", {"provider_id": P1.public})["remaining"]
    assert remaining == {"cpu_millicores": 500, "ram_mib": 8192 - 2048, "storage_gib": 100}


def test_expiry_returns_capacity_and_lapse_closes_requests() -> None:
    chain = Chain()
    chain.one(P1, register_provider(card(P1, cpu=1000)), tick=10)
    chain.block((R1, [submit_request(request(R1, 1, duration=3)),
                      submit_request(request(R1, 2, deadline=14))]))
    grant = grant_of(chain, 1)
    assert grant["grant"]["valid_to_tick"] == 13 and grant["granted_tick"] == 10
    _, produced = chain.block(tick=13)  # valid through tick 13: nothing expires yet
    assert produced is None and status(chain, 2) == "open"
    _, produced = chain.block(tick=14)
    # Grant 1 expires, its capacity returns and request 2 (deadline 14) takes it at once.
    assert [e[4] for e in chain.events(produced)] == ["expiry", "grant"]
    assert grant_of(chain, 1)["status"] == "expired"
    assert grant_of(chain, 2)["grant"]["valid_to_tick"] == 14 + 10
    chain.one(R1, submit_request(request(R1, 3, deadline=20)))
    _, produced = chain.block(tick=21)
    assert [(e[4], e[5]) for e in chain.events(produced)] == [("lapse", {"request_id": rid(3)})]
    assert status(chain, 3) == "lapsed"


def test_duration_is_rounded_up_to_whole_ticks() -> None:
    c = Compute(ALMANAC, tick_interval_ms=4000)
    assert [c.duration_ticks(s) for s in (1, 4, 5, 8)] == [1, 1, 2, 2]
    assert Compute(ALMANAC, tick_interval_ms=250).duration_ticks(3) == 12


def test_mrtd_mismatch_is_never_granted() -> None:
    chain = Chain()
    chain.block((P1, [register_provider(card(P1, rate=1, quote=QUOTE_V4))]),
                (P2, [register_provider(card(P2, rate=2, tdx=True))]),
                (P3, [register_provider(card(P3, rate=3))]))
    chain.block((R1, [submit_request(request(R1, 1, mrtd=MRTD_V5)),
                      submit_request(request(R1, 2, tdx=True)),
                      submit_request(request(R1, 3, mrtd=MRTD_V4))]))
    assert status(chain, 1) == "open"  # nobody runs MR_TD v5
    # tdx_required needs a quote: P2 claims tdx but has none.
    assert grant_of(chain, 2)["grant"]["provider_id"] == P1.public
    assert grant_of(chain, 3)["grant"]["expected_mrtd"] == MRTD_V4
    chain.one(P3, refresh_provider(card(P3, rate=3, quote=QUOTE_V5)))
    assert grant_of(chain, 1)["grant"]["provider_id"] == P3.public


def test_grant_fields() -> None:
    chain = Chain()
    chain.one(P1, register_provider(card(P1, quote=QUOTE_V4)), tick=2)
    chain.block((R1, [submit_request(request(R1, 1, pin=b"\x0f" * 32, duration=7)),
                      submit_request(request(R1, 2))]))
    height = chain.height
    g1, g2 = grant_of(chain, 1), grant_of(chain, 2)
    assert g1["grant"] == {
        "request_id": rid(1), "provider_id": P1.public, "image_hash": b"\x0f" * 32,
        # The request named no MR_TD: the grant carries the provider's, to check against.
        "expected_mrtd": MRTD_V4, "valid_to_tick": 9,
        "bearer_pointer": hash_structure("compute-bearer", 1, height.to_bytes(32, "big"),
                                         rid(1))}
    assert g2["grant"]["image_hash"] == b"\x0e" * 32
    assert g1["grant_id"] == hash_structure("compute-grant", 1, g1["grant"])
    assert (g1["seq"], g2["seq"], g1["granted_height"]) == (0, 1, height)


def test_no_almanac_tick_counts_blocks_and_unstamped_almanac_is_tick_zero() -> None:
    chain = Chain(Compute())
    chain.one(P1, register_provider(card(P1)))  # height 1
    chain.one(R1, submit_request(request(R1, 1, duration=2)))  # height 2: valid to tick 4
    assert grant_of(chain, 1)["grant"]["valid_to_tick"] == 4
    _refused(chain, R1, submit_request(request(R1, 2, deadline=2)), "deadline_passed",
             "submit_request: request.deadline_tick 2 is before the current tick 3")
    stamped = Chain(Compute(ALMANAC), tick=None)
    assert isinstance(stamped.one(R1, submit_request(request(R1, 1, deadline=0))), Applied)
    stamped.block()
    stamped.block()
    assert status(stamped, 1) == "open"  # nothing lapses until the first stamp
    stamped.block(tick=1)
    assert status(stamped, 1) == "lapsed"


def test_nothing_clears_before_the_first_stamp() -> None:
    chain = Chain(Compute(ALMANAC), tick=None)
    chain.one(P1, register_provider(card(P1)))
    results, produced = chain.block((R1, [submit_request(request(R1, 1, duration=5)),
                                          submit_request(request(R1, 2, deadline=0))]))
    assert all(isinstance(r, Applied) for r in results)
    # Tick 0 is no time: a grant now would be valid to tick 5 and expire at the first stamp.
    assert produced is None
    assert (status(chain, 1), status(chain, 2)) == ("open", "open")
    assert chain.c.query("head", {})["live_grants"] == 0
    _, produced = chain.block(tick=50)
    # At the first stamp request 2 lapses (deadline 0) and request 1 gets 5 ticks from 50.
    assert [e[4] for e in chain.events(produced)] == ["lapse", "grant"]
    assert (grant_of(chain, 1)["granted_tick"], grant_of(chain, 1)["grant"]["valid_to_tick"]
            ) == (50, 55)


def test_executor_clears_only_after_the_first_stamp() -> None:
    from coalitiond.commands.envelope import Acl
    from coalitiond.commands.member import MemberCommand
    from coalitiond.components.executor import Executor, Stamp

    component = Compute.from_params({"follow_almanac": ALMANAC})
    executor = Executor(COMMITTEE, Acl.allow([P1.public, R1.public]), component,
                        follow_almanac=ALMANAC)
    register = Envelope.sign(P1, COMMITTEE, 1, [register_provider(card(P1))]).raw
    submit = Envelope.sign(R1, COMMITTEE, 1, [submit_request(request(R1, 1, duration=3))]).raw
    result = executor.apply_block(1, b"\x01" * 32, [register, submit])
    assert [o.status for o in result.outcomes] == ["applied"] * 2
    assert [decode(e.data)[4] for e in result.entries] == ["register_provider",
                                                           "submit_request"]
    stamp = MemberCommand.make(COMMITTEE, "stamp",
                               Stamp(ALMANAC, 20, 21, b"\x0b" * 32).to_args()).raw
    result = executor.apply_block(2, b"\x02" * 32, [stamp])
    assert [(decode(e.data)[4], decode(e.data)[5]["grant"]["valid_to_tick"])
            for e in result.entries] == [("grant", 23)]


def test_entries_are_numbered_across_commands_and_blocks() -> None:
    chain = Chain()
    results, produced = chain.block((P1, [register_provider(card(P1))]),
                                    (R1, [submit_request(request(R1, 1)),
                                          submit_request(request(R1, 1))]))
    assert isinstance(results[0], Applied) and isinstance(results[1], Applied)
    assert isinstance(results[2], Refused)
    assert (results[0].entry_index, results[1].entry_index) == (0, 1)
    assert produced is not None and produced.entry_index == 2
    event = decode(produced.entries[0])
    assert event[:5] == ["compute-event", 1, 2, chain.height, "grant"]
    assert chain.c.query("head", {})["entry_count"] == 3


# -- reads ------------------------------------------------------------------------------------


def _populated() -> Chain:
    chain = Chain()
    chain.block((P1, [register_provider(card(P1, quote=QUOTE_V4))]),
                (P2, [register_provider(card(P2, cpu=1000))]))
    for n in range(1, 6):
        chain.one(R1, submit_request(request(R1, n, cpu=2000, duration=100)))
    return chain


def test_reads_carry_state_proofs() -> None:
    chain = _populated()
    c = chain.c
    root = c.state_root()
    read = c.query("provider", {"provider_id": P1.public})
    leaf = check_state_proof(read["state_proof"], root)
    assert decode(leaf) == [encode(["provider", P1.public]), read["provider"]]
    assert read["provider"]["mr_td"] == MRTD_V4 and read["live_grants"] == 2
    for name, key in (("request", "request"), ("grant", "grant")):
        item = c.query(name, {"request_id": rid(1)})
        assert decode(check_state_proof(item["state_proof"], root))[1] == item[key]
    providers = c.query("providers", {})["providers"]
    assert [p["provider"]["card"]["provider_id"] for p in providers] == sorted(
        [P1.public, P2.public])
    for p in providers:
        check_state_proof(p["state_proof"], root)
    head = c.query("head", {})
    assert head["state_root"] == root
    assert (head["providers"], head["open_requests"], head["live_grants"]) == (2, 3, 2)


def test_list_reads_page() -> None:
    chain = _populated()
    c = chain.c
    page = c.query("open_requests", {"limit": 2})
    assert [r["request"]["seq"] for r in page["requests"]] == [2, 3]
    assert page["next"] == 4
    last = c.query("open_requests", {"from_seq": page["next"]})
    assert [r["request"]["seq"] for r in last["requests"]] == [4] and last["next"] is None
    grants = c.query("grants", {"limit": 1})
    assert [g["grant"]["seq"] for g in grants["grants"]] == [0] and grants["next"] == 1
    since = c.query("grants", {"since_height": chain.height})
    assert since["grants"] == []
    all_grants = c.query("grants", {"since_height": 2})
    assert [g["grant"]["grant"]["request_id"] for g in all_grants["grants"]] == [rid(1), rid(2)]


@pytest.mark.parametrize(("name", "args", "message"), [
    ("nope", {}, "unknown compute query 'nope' (known: grant, grants, head, open_requests, "
                 "provider, providers, request)"),
    ("head", {"x": 1}, "head: arguments must be [], got ['x']"),
    ("provider", {"provider_id": b"x"}, "provider: provider_id must be 32 bytes"),
    ("provider", {"provider_id": b"\x00" * 32}, f"provider: no provider {'00' * 32}"),
    ("request", {"request_id": b"\x00" * 32}, f"request: no request {'00' * 32}"),
    ("grant", {"request_id": b"\x00" * 32}, f"grant: no grant for request {'00' * 32}"),
    ("open_requests", {"limit": 0}, "open_requests: limit must be 1..256"),
    ("grants", {"from_seq": -1}, "grants: from_seq must be an unsigned integer"),
    ("grants", {"since_height": "1"}, "grants: since_height must be an unsigned integer"),
])
def test_bad_queries(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError) as info:
        _populated().c.query(name, args)
    assert str(info.value) == message
    # A well-formed read of an absent item is "not found" (HTTP 404), the rest bad requests.
    assert isinstance(info.value, QueryNotFound) == (": no " in message)


# -- snapshots --------------------------------------------------------------------------------


def test_snapshot_round_trip_and_continue() -> None:
    chain = _populated()
    chain.one(P1, submit_log(ComputeLog.sign(P1, grant_of(chain, 1)["grant_id"], Usage(1, 1, 0))))
    chain.one(R1, cancel_request(rid(5)))
    copy = Chain(Compute(ALMANAC))
    copy.c.restore(chain.c.snapshot())
    copy.height, copy.nonce, copy.tick = chain.height, chain.nonce, chain.tick
    assert copy.c.state_root() == chain.c.state_root()
    assert copy.c.snapshot() == chain.c.snapshot()
    for c in (chain, copy):
        c.block(tick=200)  # everything expires; open requests take the capacity
    assert copy.c.state_root() == chain.c.state_root()


def _snapshot_with(chain: Chain, edit: Any) -> bytes:
    obj = decode(chain.c.snapshot())
    edit(obj)
    return encode(obj)


def _edit_leaf(kind: str, change: Any) -> Any:
    def edit(obj: list[Any]) -> None:
        for i, leaf in enumerate(obj[5]):
            key, value = decode(leaf)
            if decode(key)[0] == kind:
                change(value)
                obj[5][i] = encode([key, value])
                return
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (lambda o: o.__setitem__(0, "feed-snapshot"), "compute snapshot: expected "
     "[\"compute-snapshot\", 1, next_request_seq, next_grant_seq, entry_count, [leaf]]"),
    (lambda o: o[5].reverse(), "compute snapshot: leaf 1: keys must be strictly ascending"),
    (lambda o: o[5].__setitem__(0, b"\xff"), "compute snapshot: leaf 0: "),
    (lambda o: o.__setitem__(2, 1), "compute snapshot: leaf "),
    (_edit_leaf("provider", lambda v: v.__setitem__("mr_td", b"\x00" * 48)),
     ".mr_td is not the quote's MR_TD"),
    (_edit_leaf("grant", lambda v: v["grant"].__setitem__("valid_to_tick", 1)),
     ".grant_id is not the digest of the grant"),
    (_edit_leaf("request", lambda v: v.__setitem__(
        "closed_height", 5 if v["closed_height"] is None else None)),
     ".closed_height must be null exactly while the request is open"),
    (_edit_leaf("request", lambda v: v.__setitem__("status", "weird")),
     ".status must be one of ['cancelled', 'granted', 'lapsed', 'open']"),
    (_edit_leaf("request", lambda v: v.__setitem__("seq", 99)),
     ".seq is not below next_request_seq"),
])
def test_malformed_snapshots_change_nothing(edit: Any, message: str) -> None:
    chain = _populated()
    before = chain.c.snapshot()
    with pytest.raises(MalformedSnapshot) as info:
        chain.c.restore(_snapshot_with(chain, edit))
    assert str(info.value).startswith("compute snapshot: ")
    assert message in str(info.value)
    assert chain.c.snapshot() == before
    with pytest.raises(MalformedSnapshot):
        chain.c.restore(b"\x00garbage")


def test_snapshot_with_a_quote_bound_to_another_provider_is_refused() -> None:
    chain = _populated()
    before = chain.c.snapshot()

    def steal(obj: list[Any]) -> None:
        for i, leaf in enumerate(obj[5]):
            key, value = decode(leaf)
            if key == encode(["provider", P1.public]):
                value["card"]["tdx_quote"] = bound(QUOTE_V4, P2)
                obj[5][i] = encode([key, value])
    with pytest.raises(MalformedSnapshot) as info:
        chain.c.restore(_snapshot_with(chain, steal))
    assert str(info.value).endswith(".card.tdx_quote is not bound to its provider_id")
    assert chain.c.snapshot() == before


def test_snapshot_with_live_grant_of_missing_provider_is_refused() -> None:
    chain = _populated()

    def drop_p2(obj: list[Any]) -> None:
        obj[5] = [leaf for leaf in obj[5]
                  if decode(leaf)[0] != encode(["provider", P1.public])]
    with pytest.raises(MalformedSnapshot) as info:
        Compute(ALMANAC).restore(_snapshot_with(chain, drop_p2))
    assert "live, but its provider is gone" in str(info.value)


# -- devnet load --------------------------------------------------------------------------------


def test_demo_commands_apply_cleanly() -> None:
    chain = Chain(Compute())
    providers = [P1, P2, P3]
    for round_ in range(4):
        pairs = demo_commands(providers, R1, round_)
        assert [k for k, _ in pairs] == ([*providers, R1] if round_ == 0 else [R1])
        results, _ = chain.block(*pairs)
        assert all(isinstance(r, Applied) for r in results)
    head = chain.c.query("head", {})
    assert head["providers"] == 3 and head["next_grant_seq"] > 0


# -- Hypothesis: replay determinism and the grant invariants -----------------------------------

KEYS = [P1, P2, P3]
QUOTES = [None, QUOTE_V4, QUOTE_V5]
MRTDS = [None, MRTD_V4, MRTD_V5]

provider_op = st.tuples(
    st.sampled_from(["register_provider", "register_provider", "refresh_provider",
                     "deregister_provider"]),
    st.integers(0, 2), st.integers(0, 4000), st.integers(0, 3), st.integers(0, 2),
    st.booleans())
request_op = st.tuples(
    st.sampled_from(["submit_request", "submit_request", "cancel_request"]),
    st.integers(0, 1), st.integers(0, 11), st.integers(1, 2000),
    st.sampled_from([0, 0, 1, 2]), st.booleans(), st.integers(1, 4), st.integers(0, 8))
blocks_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.lists(st.one_of(provider_op, request_op), max_size=5)),
    min_size=1, max_size=14)


def _commands(block: tuple[int, list[Any]], tick: int) -> list[tuple[SigningKey, list[Command]]]:
    out: list[tuple[SigningKey, list[Command]]] = []
    for op in block[1]:
        if op[0] in ("register_provider", "refresh_provider", "deregister_provider"):
            name, i, cpu, rate, q, tdx = op
            key = KEYS[i]
            if name == "deregister_provider":
                out.append((key, [deregister_provider()]))
                continue
            quote = QUOTES[q]
            c = ProviderCard(key.public, Capabilities(cpu, 4096, 10, tdx or q > 0, ()), rate,
                             None if quote is None else bound(quote, key))
            out.append((key, [Command(name, {"card": c.to_command_wire()})]))
        else:
            name, j, n, cpu, m, tdx, duration, slack = op
            key = (R1, R2)[j]
            if name == "cancel_request":
                out.append((key, [cancel_request(rid(n))]))
                continue
            out.append((key, [submit_request(request(key, n, cpu=cpu, ram=512, mrtd=MRTDS[m],
                                                     tdx=tdx, duration=duration,
                                                     deadline=tick + slack))]))
    return out


def _run(blocks: list[tuple[int, list[Any]]], chain: Chain, start: int = 0) -> list[bytes]:
    roots = []
    tick = chain.tick or 0
    for block in blocks[start:]:
        tick += block[0]
        chain.block(*_commands(block, tick), tick=tick)
        roots.append(chain.c.state_root())
        _check_invariants(chain.c)
    return roots


def _check_invariants(c: Compute) -> None:
    used: dict[bytes, list[int]] = {}
    page = c.query("grants", {})
    for item in page["grants"]:
        if item["grant"]["status"] != "live":
            continue
        grant = item["grant"]["grant"]
        req = c.query("request", {"request_id": grant["request_id"]})["request"]["request"]
        provider = c.query("provider", {"provider_id": grant["provider_id"]})["provider"]
        caps_ = provider["card"]["capabilities"]
        assert req["min_cpu_millicores"] <= caps_["cpu_millicores"]
        if req["tdx_required"]:
            assert caps_["tdx"] and provider["mr_td"] is not None
        if req["expected_mrtd"] is not None:
            assert provider["mr_td"] == req["expected_mrtd"] == grant["expected_mrtd"]
        total = used.setdefault(grant["provider_id"], [0, 0, 0])
        total[0] += req["min_cpu_millicores"]
        total[1] += req["min_ram_mib"]
        total[2] += req["min_storage_gib"]
    for pid, total in used.items():
        caps_ = c.query("provider", {"provider_id": pid})["provider"]["card"]["capabilities"]
        assert total[0] <= caps_["cpu_millicores"]
        assert total[1] <= caps_["ram_mib"]
        assert total[2] <= caps_["storage_gib"]


@settings(max_examples=150, deadline=None)
@given(blocks_strategy)
def test_grants_respect_coverage_mrtd_and_capacity(blocks: list[tuple[int, list[Any]]]) -> None:
    _run(blocks, Chain())


@settings(max_examples=60, deadline=None)
@given(blocks_strategy, st.integers(0, 13))
def test_replay_is_deterministic_across_restores(blocks: list[tuple[int, list[Any]]],
                                                 cut: int) -> None:
    first, second = Chain(), Chain()
    roots = _run(blocks, first)
    assert _run(blocks, second) == roots
    assert first.c.snapshot() == second.c.snapshot()
    # A member that restores a snapshot half-way and goes on reaches the same roots.
    cut = min(cut, len(blocks))
    third = Chain()
    _run(blocks[:cut], third)
    resumed = Chain(Compute(ALMANAC))
    resumed.c.restore(third.c.snapshot())
    resumed.height, resumed.nonce, resumed.tick = third.height, third.nonce, third.tick
    assert roots[:cut] + _run(blocks, resumed, start=cut) == roots


def test_max_tick_is_the_largest_deadline() -> None:
    chain = Chain()
    assert isinstance(chain.one(R1, submit_request(request(R1, 1, deadline=MAX_TICK))), Applied)


# -- through the executor: stamps drive the clock, end_block entries reach the log ---------------


def test_executor_stamps_drive_clearing_and_log_entries() -> None:
    from coalitiond.commands.envelope import Acl
    from coalitiond.commands.member import MemberCommand
    from coalitiond.components.executor import Executor, Stamp

    executor = Executor(COMMITTEE, Acl.allow([P1.public, R1.public]), Compute(ALMANAC),
                        follow_almanac=ALMANAC)

    def stamp(seq: int) -> bytes:
        return MemberCommand.make(COMMITTEE, "stamp",
                                  Stamp(ALMANAC, seq, seq + 1, b"\x0b" * 32).to_args()).raw

    register = Envelope.sign(P1, COMMITTEE, 1, [register_provider(card(P1, cpu=1000))]).raw
    submit = Envelope.sign(R1, COMMITTEE, 1, [submit_request(request(R1, 1, duration=2)),
                                               submit_request(request(R1, 2, deadline=9))]).raw
    result = executor.apply_block(1, b"\x01" * 32, [stamp(5), register, submit])
    assert [o.status for o in result.outcomes] == ["applied"] * 4
    grants = [decode(e.data) for e in result.entries if e.envelope_id == b"\x01" * 32]
    assert [(g[4], g[5]["grant"]["valid_to_tick"]) for g in grants] == [("grant", 7)]
    result = executor.apply_block(2, b"\x02" * 32, [stamp(8)])
    kinds = [decode(e.data)[4] for e in result.entries]
    assert kinds == ["expiry", "grant"]
    assert [e.entry_index for e in result.entries] == [4, 5]
    assert executor.query("grant", {"request_id": rid(2)})["grant"]["granted_tick"] == 8


# -- golden vectors: changing any of these changes the signature "compute/1" -------------------


GOLDEN_ROOT: Final = "c17df469f8866ec824b7dc4392c1355447306edc7e1b80fc317a7c452fdc1632"


def _golden_chain() -> Chain:
    chain = Chain()
    chain.block((P1, [register_provider(card(P1, rate=2, quote=QUOTE_V4))]),
                (P2, [register_provider(card(P2, rate=1, cpu=1500))]), tick=1)
    chain.block((R1, [submit_request(request(R1, 1, mrtd=MRTD_V4, duration=3)),
                      submit_request(request(R1, 2)), submit_request(request(R1, 3))]), tick=2)
    chain.block(tick=6)
    return chain


def test_golden_state_root() -> None:
    chain = _golden_chain()
    assert chain.c.state_root().hex() == GOLDEN_ROOT
    assert [status(chain, n) for n in (1, 2, 3)] == ["granted"] * 3
    # Request 1 needs MR_TD v4 (only P1); request 2 goes to the cheaper P2, which then lacks
    # the CPU for request 3, so P1 takes it. Request 1's grant (3 ticks from tick 2) expired.
    assert [grant_of(chain, n)["grant"]["provider_id"] for n in (1, 2, 3)] == [
        P1.public, P2.public, P1.public]
    assert grant_of(chain, 1)["status"] == "expired"


def test_golden_log_payload() -> None:
    payload = ComputeLog.signed_payload(b"\x01" * 32, b"\x02" * 32, Usage(1, 2, 3))
    assert payload.hex() == (
        "856b636f6d707574652d6c6f6701" "5820" + "01" * 32 + "5820" + "02" * 32
        + "a369657869745f636f6465036b6370755f7365636f6e6473016c72616d5f6d69625f7065616b02")


def test_clearing_stops_at_the_live_grant_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute_module, "MAX_LIVE_GRANTS", 1)
    chain = Chain()
    chain.one(P1, register_provider(card(P1)), tick=1)
    chain.block((R1, [submit_request(request(R1, 1, duration=1)),
                      submit_request(request(R1, 2))]))
    assert (status(chain, 1), status(chain, 2)) == ("granted", "open")
    chain.block(tick=3)  # grant 1 expired (valid to tick 2): request 2 gets the one slot
    assert (grant_of(chain, 1)["status"], status(chain, 2)) == ("expired", "granted")
