"""A 4-member TDX-gated committee on loopback: real TCP, Noise, signed peer records carrying
re-signed tickets, the transport's connection manager calling our gate. All four are
admitted; a member with a wrong MR_TD is refused by every other; tickets lapse at expiry and
links come back after the members re-attest.

Time: the peer-record / admission clock is a fixed unix time we move by hand; trio deadlines
are only safety nets (no sleeps)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import pytest
import trio
from tdx_resign import NOW, ResignPki

from coalitiond.attestation import dcap
from coalitiond.attestation.binding import report_data
from coalitiond.attestation.gate import TdxGate
from coalitiond.attestation.policy import AttestationPolicy
from coalitiond.attestation.ticket import Ticket
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.metrics import sample_value

pytestmark = pytest.mark.live

transport = pytest.importorskip("coalitiond.transport.manager")

GOOD_MRTD = b"\x42" * 48
BAD_MRTD = b"\x66" * 48
MAX_AGE = 3600
#: Safety net for real-TCP progress on a loaded CI box; never reached when things work.
DEADLINE = 60


class Source:
    def __init__(self, col: object) -> None:
        self.col = col

    def get(self, fmspc: str) -> object:
        return self.col


class Clock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> float:
        return float(self.t)


class Harness:
    def __init__(self, n: int = 4) -> None:
        self.pki = ResignPki()
        self.keys = [SigningKey.generate() for _ in range(n)]
        self.spec = CommitteeSpec("tdx-loopback", "feed", "gated",
                                  tuple(k.public for k in self.keys), 1, 0)
        self.collateral = dcap.load_collateral(self.pki.collateral())
        self.policy = AttestationPolicy(allowed_mr_td=frozenset({GOOD_MRTD}),
                                        max_ticket_age_seconds=MAX_AGE)
        self.clock = Clock(NOW)
        self.refusals: dict[int, list[tuple[bytes, str]]] = {i: [] for i in range(n)}
        self.changed = trio.Event()
        self.gates = [self._gate(i) for i in range(n)]

    def _gate(self, i: int) -> Callable[[bytes, object, int], str | None]:
        gate = TdxGate(self.policy, network_id=self.spec.network_id,
                       committee_id=self.spec.committee_id, epoch=0,
                       collateral=Source(self.collateral),
                       verifier=functools.partial(dcap.verify_under_test_root,
                                                  root_der=self.pki.root_der))

        def admission(peer: bytes, record: object, now: int) -> str | None:
            reason = gate(peer, record, now)  # type: ignore[arg-type]
            if reason is not None:
                self.refusals[i].append((peer, reason))
                self.changed.set()
                self.changed = trio.Event()
            return reason

        admission.gate = gate  # type: ignore[attr-defined]
        return admission

    def ticket(self, i: int, mr_td: bytes = GOOD_MRTD) -> bytes:
        k = self.keys[i]
        issued = self.clock.t
        rd = report_data(k.public, self.spec.network_id, self.spec.committee_id, 0, issued)
        return Ticket(self.pki.quote(mr_td=mr_td, report_data=rd), k.public,
                      self.spec.network_id, self.spec.committee_id, 0, issued).encode()

    def managers(self, tickets: list[bytes]) -> list[transport.ConnectionManager]:
        return [
            transport.ConnectionManager(
                k, self.spec, {}, tickets={"tdx": tickets[i]}, admission=self.gates[i],
                rng=random.Random(i), wall_clock=self.clock,
            )
            for i, k in enumerate(self.keys)
        ]

    async def start(self, nursery: trio.Nursery, managers: list) -> None:  # type: ignore[type-arg]
        ports = [await nursery.start(m.run) for m in managers]
        for m in managers:
            for j, k in enumerate(self.keys):
                if k.public != m.peer_id:
                    m.set_member_address(k.public, ("127.0.0.1", ports[j]))

    async def wait_refused(self, pred: Callable[[], bool]) -> None:
        while not pred():
            await self.changed.wait()


async def wait_mesh(managers: list, sizes: list[int]) -> None:  # type: ignore[type-arg]
    for m, size in zip(managers, sizes, strict=True):
        await m.wait_until(lambda m=m, size=size: len(m.member_links()) == size)


async def test_four_member_committee_admits_all_then_drops_at_expiry_until_reattested() -> None:
    h = Harness()
    managers = h.managers([h.ticket(i) for i in range(4)])
    async with trio.open_nursery() as nursery:
        await h.start(nursery, managers)
        with trio.fail_after(DEADLINE):
            await wait_mesh(managers, [3, 3, 3, 3])
        assert all(not r for r in h.refusals.values())
        expiry = NOW + MAX_AGE
        for i, g in enumerate(h.gates):
            for j, k in enumerate(h.keys):
                if i != j:
                    assert g.gate.next_expiry(k.public) == expiry  # type: ignore[attr-defined]

        # The tickets lapse: every re-check refuses and drops the links.
        h.clock.t = expiry
        before = sample_value("coalitiond_attestation_refused_total", {"reason": "ticket_expired"}) or 0
        dropped = [m.recheck_admission() for m in managers]
        assert all(len(d) == 3 for d in dropped), dropped
        after = sample_value("coalitiond_attestation_refused_total", {"reason": "ticket_expired"})
        assert after == before + 12
        # Each member re-attests (fresh quote, fresh binding); the links come back.
        for i, m in enumerate(managers):
            m.set_tickets({"tdx": h.ticket(i)})
        with trio.fail_after(DEADLINE):
            await wait_mesh(managers, [3, 3, 3, 3])
        for m in managers:
            await m.stop()
        nursery.cancel_scope.cancel()


async def test_member_with_wrong_mrtd_is_refused_by_all_others() -> None:
    h = Harness()
    bad = 3
    managers = h.managers([h.ticket(i, BAD_MRTD if i == bad else GOOD_MRTD) for i in range(4)])
    bad_id = h.keys[bad].public
    async with trio.open_nursery() as nursery:
        await h.start(nursery, managers)
        with trio.fail_after(DEADLINE):
            await wait_mesh(managers[:bad], [2, 2, 2])
            await h.wait_refused(
                lambda: all(any(p == bad_id for p, _ in h.refusals[i]) for i in range(bad))
            )
        for i in range(bad):
            assert {r for p, r in h.refusals[i]} == {"attestation:mr_td"}
            assert bad_id not in managers[i].links
        for m in managers:
            await m.stop()
        nursery.cancel_scope.cancel()
