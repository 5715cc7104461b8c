"""Admission gate for links to members of a TDX-gated committee (DESIGN §2.7).

The transport's connection manager calls `gate(peer_id, record, now_unix)` after the Noise
handshake has authenticated `peer_id`, and again at `gate.next_expiry(peer_id)`: `None` admits
the link, a string refuses it and is the close reason (`"attestation:<reason>"`). Every refusal
is logged with the peer, the reason label and dcap-qvl's or the policy's detail, and counted in
`coalitiond_attestation_refused_total{reason=...}`.

The gate never fetches anything: collateral comes from a `CollateralSource` (the on-disk
cache that `collateral.py` keeps fresh). Verification is synchronous and CPU-bound (~1 ms);
the caller decides whether to run it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, Protocol

import trio

from ..primitives.errors import CoalitiondError, LocalError
from ..primitives.identity import short
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge
from . import dcap
from .dcap import AttestationRefused, DcapPolicy, VerifiedQuote
from .policy import AttestationPolicy, check_measurements, check_ticket
from .ticket import TICKET_KEY, decode_ticket

log = get_logger(__name__)

#: Peers whose expiry we track. Links are only gated for committee members (≤ 15 in practice);
#: the bound keeps a misbehaving caller from growing the table without limit.
MAX_TRACKED_PEERS: Final = 1024
REASON_PREFIX: Final = "attestation:"
#: Upper bound on how long the expiry watcher sleeps between looks at the gate.
RECHECK_POLL: Final = 60.0

REFUSED = counter(
    "attestation_refused", "Links refused by TDX admission, by reason", ("reason",)
)
ADMITTED = counter("attestation_admitted", "Links admitted by TDX admission")
DISABLED = gauge(
    "attestation_disabled", "1 when this node runs with attestation = \"none\" (development only)"
)
EARLIEST_EXPIRY = gauge(
    "attestation_earliest_expiry_seconds",
    "Unix time the first admitted peer's attestation lapses unless renewed (0: none tracked)",
)


class PeerRecord(Protocol):
    """What the gate needs from the transport's signed peer record."""

    @property
    def tickets(self) -> Mapping[str, bytes]: ...


class CollateralSource(Protocol):
    """Collateral for one FMSPC from a local store, or None. Must not do network I/O."""

    def get(self, fmspc: str) -> Any: ...


Verifier = Callable[..., VerifiedQuote]


class TdxGate:
    """Admission callable for `attestation = "tdx"`."""

    def __init__(
        self,
        policy: AttestationPolicy,
        *,
        network_id: bytes,
        committee_id: bytes,
        epoch: int,
        collateral: CollateralSource,
        gated: Collection[bytes] | None = None,
        verifier: Verifier = dcap.verify,
    ) -> None:
        if policy.mode != "tdx":
            raise LocalError("TdxGate needs a policy with mode = \"tdx\"")
        self.policy = policy
        self.network_id = network_id
        self.committee_id = committee_id
        self.epoch = epoch
        self._collateral = collateral
        self._dcap_policy: DcapPolicy = policy.dcap_policy()
        # Injected so tests can verify under a throwaway root; the daemon never passes one.
        self._verifier = verifier
        self._expiry: dict[bytes, int] = {}
        # Whom the gate applies to: the committee's members. Readers (integrators fetching
        # certified data, which they verify themselves) do not run in TDs; None gates everyone.
        self._gated = None if gated is None else frozenset(gated)
        DISABLED.set(0)

    def check(self, peer_id: bytes, record: PeerRecord, now_unix: int) -> tuple[VerifiedQuote, int]:
        """Full check; returns the verified quote and the admission's expiry, or raises."""
        raw = record.tickets.get(TICKET_KEY)
        if raw is None:
            raise AttestationRefused("no_ticket", f"peer record has no {TICKET_KEY!r} ticket")
        ticket = decode_ticket(bytes(raw))
        if ticket.peer_id != peer_id:
            # Cheap context checks first: a replayed ticket costs no signature verification.
            raise AttestationRefused("binding", "ticket names another peer")
        fmspc = dcap.quote_fmspc(ticket.quote)
        try:
            collateral = self._collateral.get(fmspc)
        except CoalitiondError as e:
            # A broken cache file is the operator's to fix, but the peer is refused, not crashed.
            log.error("collateral cache unreadable", fmspc=fmspc, error=str(e))
            raise AttestationRefused("no_collateral", f"collateral for FMSPC {fmspc}: {e}") from None
        if collateral is None:
            raise AttestationRefused("no_collateral", f"no cached collateral for FMSPC {fmspc}")
        verified = self._verifier(ticket.quote, collateral, now_unix, policy=self._dcap_policy)
        check_measurements(self.policy, verified)
        expires = check_ticket(
            self.policy,
            ticket,
            verified,
            peer_id=peer_id,
            network_id=self.network_id,
            committee_id=self.committee_id,
            epoch=self.epoch,
            now=now_unix,
        )
        return verified, expires

    def __call__(self, peer_id: bytes, record: PeerRecord, now_unix: int) -> str | None:
        if self._gated is not None and peer_id not in self._gated:
            return None
        try:
            verified, expires = self.check(peer_id, record, now_unix)
        except AttestationRefused as e:
            self._expiry.pop(peer_id, None)
            REFUSED.labels(reason=e.reason).inc()
            log.warning(
                "attestation refused", peer=short(peer_id), reason=e.reason, detail=e.detail
            )
            return REASON_PREFIX + e.reason
        if peer_id not in self._expiry and len(self._expiry) >= MAX_TRACKED_PEERS:
            # Forget the entry that lapses first; its link gets re-checked when it asks again.
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        self._expiry[peer_id] = expires
        ADMITTED.inc()
        log.info(
            "attestation admitted",
            peer=short(peer_id),
            tcb_status=verified.tcb_status,
            mr_td=verified.mr_td.hex()[:16],
            expires_at=expires,
        )
        return None

    def next_expiry(self, peer_id: bytes) -> int | None:
        """Unix time at which `peer_id`'s admission lapses and must be re-checked."""
        return self._expiry.get(peer_id)

    def forget(self, peer_id: bytes) -> None:
        self._expiry.pop(peer_id, None)

    def forget_lapsed(self, now_unix: float) -> None:
        """Stop tracking admissions that lapsed and were not renewed by the re-check."""
        for peer in [p for p, expiry in self._expiry.items() if expiry <= now_unix]:
            del self._expiry[peer]

    def earliest_expiry(self) -> int | None:
        return min(self._expiry.values(), default=None)


async def run_expiry_rechecks(
    gate: TdxGate, recheck: Callable[[], object], wall: Callable[[], float]
) -> None:
    """Call `recheck` (the connection manager's `recheck_admission`) whenever an admission
    lapses. Wakes at the earliest tracked expiry, and at least every RECHECK_POLL seconds so
    admissions made meanwhile (possibly in worker threads) are picked up without signalling."""
    while True:
        now = wall()
        earliest = gate.earliest_expiry()
        EARLIEST_EXPIRY.set(earliest or 0)
        if earliest is not None and earliest <= now:
            recheck()
            gate.forget_lapsed(now)
            continue
        wait = RECHECK_POLL if earliest is None else min(RECHECK_POLL, earliest - now)
        await trio.sleep(max(wait, 0.0))


class NoAttestationGate:
    """`attestation = "none"`: admits everyone — loudly (warning at start, a gauge at 1)."""

    def __init__(self) -> None:
        DISABLED.set(1)
        log.warning(
            "attestation disabled",
            detail='attestation = "none": links are NOT gated by TDX; development only',
        )

    def __call__(self, peer_id: bytes, record: PeerRecord, now_unix: int) -> str | None:
        return None

    def next_expiry(self, peer_id: bytes) -> int | None:
        return None


def make_gate(
    policy: AttestationPolicy,
    *,
    network_id: bytes,
    committee_id: bytes,
    epoch: int,
    collateral: CollateralSource,
    members: Collection[bytes] | None = None,
) -> TdxGate | NoAttestationGate:
    """The gate the daemon uses for this policy (always Intel's root). `members`: the
    committee's PeerIds, the only peers that must attest."""
    if policy.mode == "none":
        return NoAttestationGate()
    return TdxGate(
        policy, network_id=network_id, committee_id=committee_id, epoch=epoch,
        collateral=collateral, gated=members,
    )
