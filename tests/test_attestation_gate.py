"""The admission gate, driven directly with peer records (no transport): four members of a
TDX-gated committee admitted, and every refusal of DESIGN §2.7 with its metric and log line.
Quotes and collateral come from the re-signing harness under a throwaway test root."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
import structlog
import trio
import trio.testing
from tdx_resign import NOW, ResignPki

from coalitiond.attestation import dcap
from coalitiond.attestation.binding import report_data
from coalitiond.attestation.dcap import DcapPolicy
from coalitiond.attestation.gate import NoAttestationGate, TdxGate, make_gate, run_expiry_rechecks
from coalitiond.attestation.policy import AttestationPolicy
from coalitiond.attestation.ticket import Ticket
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.metrics import sample_value

GOOD_MRTD = b"\x42" * 48
EPOCH = 0
FMSPC = "B0C06F000000"


@dataclass
class Record:
    tickets: Mapping[str, bytes] = field(default_factory=dict)


class Source:
    def __init__(self, by_fmspc: dict[str, object]) -> None:
        self.by_fmspc = by_fmspc

    def get(self, fmspc: str) -> object:
        return self.by_fmspc.get(fmspc)


@pytest.fixture(scope="module")
def pki() -> ResignPki:
    return ResignPki()


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [SigningKey(bytes([i + 1]) * 32) for i in range(4)]


@pytest.fixture(scope="module")
def spec(keys: list[SigningKey]) -> CommitteeSpec:
    return CommitteeSpec("tdx-test", "feed", "gated", tuple(k.public for k in keys), 1, EPOCH)


POLICY = AttestationPolicy(allowed_mr_td=frozenset({GOOD_MRTD}), max_ticket_age_seconds=3600)


def make_ticket(pki: ResignPki, spec: CommitteeSpec, peer: bytes, *, issued_at: int = NOW - 60,
                bound_to: bytes | None = None, **quote_kw: object) -> bytes:
    rd = report_data(bound_to or peer, spec.network_id, spec.committee_id, EPOCH, issued_at)
    quote_kw.setdefault("mr_td", GOOD_MRTD)
    quote = pki.quote(report_data=rd, **quote_kw)  # type: ignore[arg-type]
    return Ticket(quote, bound_to or peer, spec.network_id, spec.committee_id, EPOCH,
                  issued_at).encode()


def make_gate_for(pki: ResignPki, spec: CommitteeSpec, collateral: str | None = None,
                  policy: AttestationPolicy = POLICY) -> TdxGate:
    col = dcap.load_collateral(collateral or pki.collateral())
    return TdxGate(policy, network_id=spec.network_id, committee_id=spec.committee_id,
                   epoch=EPOCH, collateral=Source({FMSPC: col}),
                   verifier=functools.partial(dcap.verify_under_test_root, root_der=pki.root_der))


def refused(reason: str) -> float:
    return sample_value("coalitiond_attestation_refused_total", {"reason": reason}) or 0.0


def test_four_members_admitted(pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey]) -> None:
    gate = make_gate_for(pki, spec)
    before = sample_value("coalitiond_attestation_admitted_total") or 0.0
    for k in keys:
        record = Record({"tdx": make_ticket(pki, spec, k.public)})
        assert gate(k.public, record, NOW) is None
        assert gate.next_expiry(k.public) == NOW - 60 + 3600
    assert sample_value("coalitiond_attestation_admitted_total") == before + 4
    assert sample_value("coalitiond_attestation_disabled") == 0


def _expect(gate: TdxGate, peer: bytes, record: Record, now: int, reason: str, detail: str) -> None:
    before = refused(reason)
    with structlog.testing.capture_logs() as logs:
        assert gate(peer, record, now) == f"attestation:{reason}"
    assert refused(reason) == before + 1
    assert gate.next_expiry(peer) is None
    [entry] = [e for e in logs if e["event"] == "attestation refused"]
    assert entry["reason"] == reason
    assert entry["log_level"] == "warning"
    assert detail in entry["detail"], entry["detail"]


def test_refusals(pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey]) -> None:
    gate = make_gate_for(pki, spec)
    me, other = keys[0].public, keys[1].public
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me, mr_td=b"\x66" * 48)}), NOW,
            "mr_td", f"MR_TD {'66' * 48} is not in the allow-list")
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me, td_attributes=0x10000001)}), NOW,
            "debug", "Debug mode is enabled")
    # Another peer's (valid) ticket presented by `me`: refused before any signature check.
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, other)}), NOW,
            "binding", "ticket names another peer")
    # A ticket claiming `me` but whose quote binds `other` (REPORTDATA copied from its quote).
    stolen_rd = report_data(other, spec.network_id, spec.committee_id, EPOCH, NOW - 60)
    forged = Ticket(pki.quote(mr_td=GOOD_MRTD, report_data=stolen_rd), me, spec.network_id,
                    spec.committee_id, EPOCH, NOW - 60).encode()
    _expect(gate, me, Record({"tdx": forged}), NOW, "binding",
            "REPORTDATA does not bind this peer's ticket")
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me, issued_at=NOW - 3600)}), NOW,
            "ticket_expired", f"ticket expired at {NOW}, now is {NOW}")
    _expect(gate, me, Record({}), NOW, "no_ticket", "peer record has no 'tdx' ticket")
    _expect(gate, me, Record({"tdx": b"\x00"}), NOW, "ticket_malformed", "ticket must be a CBOR map")


def test_revoked_pck_refused(pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey]) -> None:
    gate = make_gate_for(pki, spec, pki.collateral(revoke_pck=True))
    me = keys[0].public
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me)}), NOW, "pck_revoked", "CertRevoked")


def test_outofdate_tcb_refused_unless_accepted(pki: ResignPki, spec: CommitteeSpec,
                                               keys: list[SigningKey]) -> None:
    col = pki.collateral(tcb_status="OutOfDate", advisories=("INTEL-SA-99999",))
    me = keys[0].public
    record = Record({"tdx": make_ticket(pki, spec, me)})
    _expect(make_gate_for(pki, spec, col), me, record, NOW, "tcb_status",
            "TCB status OutOfDate is not acceptable by policy")
    ten_years = 10 * 365 * 86400
    lenient = AttestationPolicy(allowed_mr_td=frozenset({GOOD_MRTD}), dcap=DcapPolicy(
        accepted_statuses=frozenset({"UpToDate", "OutOfDate"}), grace_period_seconds=ten_years))
    assert make_gate_for(pki, spec, col, lenient)(me, record, NOW) is None
    denied = AttestationPolicy(allowed_mr_td=frozenset({GOOD_MRTD}), dcap=DcapPolicy(
        accepted_statuses=frozenset({"UpToDate", "OutOfDate"}), grace_period_seconds=ten_years,
        rejected_advisories=frozenset({"INTEL-SA-99999"})))
    _expect(make_gate_for(pki, spec, col, denied), me, record, NOW, "advisory",
            "Advisory ID INTEL-SA-99999 is rejected by policy")


def test_no_collateral_is_refused_never_fetched(pki: ResignPki, spec: CommitteeSpec,
                                                keys: list[SigningKey]) -> None:
    gate = TdxGate(POLICY, network_id=spec.network_id, committee_id=spec.committee_id,
                   epoch=EPOCH, collateral=Source({}))
    me = keys[0].public
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me)}), NOW, "no_collateral",
            "no cached collateral for FMSPC B0C06F000000")


def test_production_gate_refuses_test_root_tickets(pki: ResignPki, spec: CommitteeSpec,
                                                   keys: list[SigningKey]) -> None:
    """`make_gate` (what the daemon uses) has no way to take another root."""
    gate = make_gate(POLICY, network_id=spec.network_id, committee_id=spec.committee_id,
                     epoch=EPOCH, collateral=Source({FMSPC: dcap.load_collateral(pki.collateral())}))
    assert isinstance(gate, TdxGate)
    me = keys[0].public
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me)}), NOW, "quote_invalid",
            "InvalidCrlSignatureForPublicKey")


def test_expiry_and_recheck(pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey]) -> None:
    # Collateral valid for 2 hours: the admission lapses at the earlier of ticket age and
    # collateral end, and a re-check at that time refuses until the peer re-attests.
    gate = make_gate_for(pki, spec, pki.collateral(valid_for=86400 + 1800))
    me = keys[0].public
    record = Record({"tdx": make_ticket(pki, spec, me)})
    assert gate(me, record, NOW) is None
    expiry = gate.next_expiry(me)
    assert expiry == NOW + 1800  # collateral issued at NOW - 1 day, valid for 1 day + 30 min
    assert gate(me, record, expiry - 1) is None
    assert gate(me, record, expiry) == "attestation:collateral_expired"
    assert gate.next_expiry(me) is None


def test_attestation_none_is_loud() -> None:
    with structlog.testing.capture_logs() as logs:
        gate = make_gate(AttestationPolicy(mode="none"), network_id=b"\0" * 32,
                         committee_id=b"\0" * 32, epoch=0, collateral=Source({}))
    assert isinstance(gate, NoAttestationGate)
    assert sample_value("coalitiond_attestation_disabled") == 1
    assert [e["log_level"] for e in logs if e["event"] == "attestation disabled"] == ["warning"]
    assert gate(b"\1" * 32, Record(), NOW) is None
    assert gate.next_expiry(b"\1" * 32) is None


async def test_expiry_watcher_rechecks_when_admissions_lapse(
    pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey],
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = make_gate_for(pki, spec)
    start = trio.current_time()
    wall = lambda: NOW + (trio.current_time() - start)  # noqa: E731
    records = {k.public: Record({"tdx": make_ticket(pki, spec, k.public, issued_at=NOW - 60 * i)})
               for i, k in enumerate(keys)}
    for peer, record in records.items():
        assert gate(peer, record, NOW) is None
    rechecks: list[tuple[int, list[str | None]]] = []

    def recheck() -> None:
        now = int(wall())
        rechecks.append((now, [gate(p, r, now) for p, r in records.items()]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_expiry_rechecks, gate, recheck, wall)
        await trio.sleep(1)
        # What the "attestation expiry near" alert reads: the first lapse, member 3's.
        assert sample_value("coalitiond_attestation_earliest_expiry_seconds") == NOW + 3600 - 180
        await trio.sleep(3600)
        nursery.cancel_scope.cancel()
    # Tickets issued at NOW, NOW-60, NOW-120, NOW-180 with a one-hour age limit lapse in
    # reverse order; each lapse triggers exactly one re-check at that second.
    assert [t for t, _ in rechecks] == [NOW + 3600 - 180, NOW + 3600 - 120, NOW + 3600 - 60, NOW + 3600]
    assert rechecks[0][1] == ["attestation:ticket_expired", None, None, None][::-1]
    assert gate.earliest_expiry() is None


def test_unreadable_collateral_cache_refuses_without_crashing(
    pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from coalitiond.attestation.collateral import CollateralCache

    cache = CollateralCache(tmp_path)
    cache.path(FMSPC).write_text("not json")
    gate = TdxGate(POLICY, network_id=spec.network_id, committee_id=spec.committee_id,
                   epoch=EPOCH, collateral=cache)
    me = keys[0].public
    _expect(gate, me, Record({"tdx": make_ticket(pki, spec, me)}), NOW, "no_collateral",
            "collateral for FMSPC B0C06F000000: collateral_invalid: ")


def test_only_members_are_gated(pki: ResignPki, spec: CommitteeSpec, keys: list[SigningKey]) -> None:
    gate = make_gate(POLICY, network_id=spec.network_id, committee_id=spec.committee_id,
                     epoch=EPOCH, collateral=Source({}), members=spec.members)
    reader = SigningKey(b"\x77" * 32).public
    assert gate(reader, Record(), NOW) is None  # a reader carries no ticket and needs none
    assert gate(keys[0].public, Record(), NOW) == "attestation:no_ticket"
