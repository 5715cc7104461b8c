"""The `[committee]` section: the component kind, the members, the fault bound, timing and
the client ACL (all consensus content: folded into the committee id)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..consensus.limits import (
    DEFAULT_MAX_BLOCK_BYTES,
    MAX_SERVABLE_BLOCK_BYTES,
    MIN_MAX_BLOCK_BYTES,
)
from ..consensus.types import MAX_COMMANDS_PER_BLOCK
from ..primitives.committee import MAX_COMMITTEE_MEMBERS, default_fault_bound, quorum_size
from ..primitives.crypto import PUBLIC_KEY_LEN
from ..primitives.identity import ID_LEN
from .node import MAX_RECOGNISED_ISSUERS
from .parsing import Address, Table, refuse_duplicates

COMPONENT_KINDS: Final = (
    "atlas", "almanac", "chronicle", "compute", "intents", "ledger", "feed", "tickets"
)
MAX_TIMEOUT_MS: Final = 3_600_000

# Defaults (documented in docs/configuration.md; keep the two in step).
DEFAULT_LEADER_TIMEOUT_MS: Final = 1_000
DEFAULT_VIEW_TIMEOUT_MS: Final = 2_000
DEFAULT_BATCH_MAX_COMMANDS: Final = 1_000
DEFAULT_BATCH_INTERVAL_MS: Final = 500



@dataclass(frozen=True, slots=True)
class MemberEntry:
    peer_id: bytes
    address: Address
    operator: str = ""


@dataclass(frozen=True, slots=True)
class TimingConfig:
    leader_timeout_ms: int = DEFAULT_LEADER_TIMEOUT_MS
    view_timeout_ms: int = DEFAULT_VIEW_TIMEOUT_MS
    batch_max_commands: int = DEFAULT_BATCH_MAX_COMMANDS
    batch_interval_ms: int = DEFAULT_BATCH_INTERVAL_MS


@dataclass(frozen=True, slots=True)
class AclConfig:
    """Who may submit client commands: allow-listed client keys and/or ticket issuer roots."""

    clients: tuple[bytes, ...] = ()
    ticket_issuers: tuple[bytes, ...] = ()

    def to_cbor(self) -> dict[str, Any]:
        return {"clients": list(self.clients), "ticket_issuers": list(self.ticket_issuers)}


@dataclass(frozen=True, slots=True)
class CommitteeConfig:
    component: str
    name: str
    members: tuple[MemberEntry, ...]
    #: As configured; None means `default_fault_bound(n)`. See `effective_fault_bound`.
    fault_bound: int | None = None
    epoch: int = 0
    timing: TimingConfig = TimingConfig()
    acl: AclConfig = AclConfig()
    #: The size rule (docs/protocol.md §10): voters refuse larger blocks, leaders never
    #: build one. Committee-wide, like timing; not part of the committee id.
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES

    @property
    def effective_fault_bound(self) -> int:
        n = len(self.members)
        return default_fault_bound(n) if self.fault_bound is None else self.fault_bound

    @property
    def peer_ids(self) -> tuple[bytes, ...]:
        return tuple(m.peer_id for m in self.members)


def _parse_timing(t: Table | None) -> TimingConfig:
    if t is None:
        return TimingConfig()
    timing = TimingConfig(
        leader_timeout_ms=t.integer(
            "leader_timeout_ms", DEFAULT_LEADER_TIMEOUT_MS, minimum=1, maximum=MAX_TIMEOUT_MS
        ),
        view_timeout_ms=t.integer(
            "view_timeout_ms", DEFAULT_VIEW_TIMEOUT_MS, minimum=1, maximum=MAX_TIMEOUT_MS
        ),
        batch_max_commands=t.integer(
            "batch_max_commands",
            DEFAULT_BATCH_MAX_COMMANDS,
            minimum=1,
            maximum=MAX_COMMANDS_PER_BLOCK,
        ),
        batch_interval_ms=t.integer(
            "batch_interval_ms", DEFAULT_BATCH_INTERVAL_MS, minimum=1, maximum=MAX_TIMEOUT_MS
        ),
    )
    # The leader timeout bounds the wait for a proposal inside a view; a view timeout shorter
    # than it would nullify views whose leader is still within its allowance.
    if timing.leader_timeout_ms > timing.view_timeout_ms:
        raise t.error(
            "leader_timeout_ms",
            f"must not exceed view_timeout_ms ({timing.leader_timeout_ms} > "
            f"{timing.view_timeout_ms})",
        )
    t.finish()
    return timing


def _parse_acl(t: Table | None) -> AclConfig:
    if t is None:
        return AclConfig()
    acl = AclConfig(
        clients=t.hex_array("clients", PUBLIC_KEY_LEN, ()),
        ticket_issuers=t.hex_array("ticket_issuers", ID_LEN, ()),
    )
    if len(acl.ticket_issuers) > MAX_RECOGNISED_ISSUERS:
        raise t.error("ticket_issuers", f"at most {MAX_RECOGNISED_ISSUERS} issuer roots, got "
                      f"{len(acl.ticket_issuers)}")
    refuse_duplicates(t, "ticket_issuers", acl.ticket_issuers)
    t.finish()
    return acl


def _parse_members(t: Table) -> tuple[MemberEntry, ...]:
    rows = t.tables("members", limit=MAX_COMMITTEE_MEMBERS)
    if not rows:
        raise t.error("members", "a committee needs at least one member")
    members: list[MemberEntry] = []
    by_peer: dict[bytes, str] = {}
    by_addr: dict[Address, str] = {}
    for row in rows:
        m = MemberEntry(
            peer_id=row.hex("peer_id", PUBLIC_KEY_LEN),
            address=row.address("address"),
            operator=row.string("operator", ""),
        )
        row.finish()
        if m.peer_id in by_peer:
            raise row.error("peer_id", f"duplicate member: same peer id as {by_peer[m.peer_id]}")
        if m.address in by_addr:
            raise row.error("address", f"duplicate address: same as {by_addr[m.address]}")
        by_peer[m.peer_id] = row.prefix
        by_addr[m.address] = row.prefix
        members.append(m)
    return tuple(members)


def parse_committee(t: Table) -> CommitteeConfig:
    component = t.string("component", choices=COMPONENT_KINDS)
    name = t.string("name")
    members = _parse_members(t)
    n = len(members)
    fault_bound = t.integer("fault_bound", None, minimum=0)
    f_s = default_fault_bound(n) if fault_bound is None else fault_bound
    q = quorum_size(n, f_s)
    if q > n:
        raise t.error(
            "fault_bound",
            f"q > n: fault bound f_s={f_s} needs quorum q={q} = ceil((n + f_s + 1)/2), "
            f"but the committee has only n={n} members",
        )
    max_block_bytes = t.integer("max_block_bytes", DEFAULT_MAX_BLOCK_BYTES,
                                minimum=MIN_MAX_BLOCK_BYTES)
    if max_block_bytes > MAX_SERVABLE_BLOCK_BYTES:
        raise t.error(
            "max_block_bytes",
            f"must be at most {MAX_SERVABLE_BLOCK_BYTES} (3 MiB), got {max_block_bytes}: a "
            f"larger block could not be served to catch-up, followers and readers (its record "
            f"must fit one 4 MiB reply)",
        )
    committee = CommitteeConfig(
        component=component,
        name=name,
        members=members,
        fault_bound=fault_bound,
        epoch=t.integer("epoch", 0),
        timing=_parse_timing(t.optional_table("timing")),
        acl=_parse_acl(t.optional_table("acl")),
        max_block_bytes=max_block_bytes,
    )
    t.finish()
    return committee

