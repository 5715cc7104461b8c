"""The `compute` component (SPEC §3.4): a registry of providers and a deterministic scheduler.

Why this module is long: it is the one `Compute` class, and its commands, clearing pass,
commitment, reads and snapshot validation all maintain the same private indexes (open
requests per requester, live grants, capacity in use, the expiry, deadline and pruning
heaps, the committed leaves). Splitting the class would spread those invariants over several
modules; what does not touch them already lives elsewhere (records, wire shapes and command
builders in `records`, the quote layout in `attestation.quote`, the section in `config`).

Providers register cards (capabilities, hourly rate, optional TDX quote), requesters submit
requests, and at every block the committee runs the clearing rule, which commits grants,
lapses requests past their deadline and expires grants past their validity. Providers sign
usage logs for their grants. docs/compute.md is the contract (wire shapes, refusal reasons,
reads, state root, decisions); this docstring only sketches it.

Client commands (the envelope's client key is the signer):
  register_provider {card}   refresh_provider {card}   deregister_provider {}
  submit_request {request}   cancel_request {request_id}   submit_log {log}

Clearing rule (part of the signature "compute/1"), in `end_block`, at tick `t`:
  1. every live grant with `valid_to_tick < t` expires (order: valid_to_tick, grant seq) and
     its resources return to its provider;
  2. every open request with `deadline_tick < t` lapses (order: deadline_tick, request seq);
  3. for each open request in request order (seq), the registered provider with the lowest
     `rate_per_hour` (ties: lowest provider id) that covers the request and whose remaining
     capacity fits it gets a grant valid to `t + duration ticks`.

Following an Almanac, nothing clears (no grants, lapses or expiries) before the first stamp.

A TDX quote is parsed (`attestation.quote`), never verified: full DCAP verification depends
on the wall clock and collateral files, so it runs before voting, in
`components.compute.quotes`. Its REPORTDATA must start with
`provider_quote_binding(provider_id)` (`records`), so a provider cannot present another TD's
quote. Everything in this module is deterministic.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from ...attestation.quote import MAX_QUOTE_SIZE, MalformedQuote
from ...commands.envelope import Command, Envelope, InvalidCommand
from ...primitives.crypto import SigningKey
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError, OperatorError
from ...primitives.identity import ID_LEN, hash_structure
from ...primitives.merkle import MemoryTree, leaf_hash
from ..almanac.config import DEFAULT_TICK_INTERVAL_MS, MAX_TICK_INTERVAL_MS, MIN_TICK_INTERVAL_MS
from ..base import (
    Applied,
    BlockContext,
    CommandResult,
    Component,
    QueryError,
    QueryNotFound,
    Refused,
    expect_args,
    is_uint,
    register,
    state_proof,
)
from ..paging import limit_arg, uint_arg
from ..snapshot import SnapshotFormat, is_list
from .records import (
    CANCELLED,
    EXPIRED,
    GRANTED,
    LAPSED,
    LIVE,
    MAX_TICK,
    OPEN,
    SCHEMA,
    BadField,
    Capabilities,
    ComputeGrant,
    ComputeLog,
    ComputeRequest,
    GrantRecord,
    ProviderCard,
    RequestRecord,
    card_from_command,
    field_bytes,
    field_map,
    register_provider,
    submit_request,
)

SIGNATURE: Final = "compute/1"

# -- bounds of the state (each one a refusal with a reason when exceeded) ---------------------

MAX_PROVIDERS: Final = 256
MAX_OPEN_REQUESTS: Final = 1024
#: One requester cannot fill the open-request table on its own.
MAX_OPEN_PER_REQUESTER: Final = 64
MAX_LIVE_GRANTS: Final = 4096
#: Request records kept (open, granted, lapsed, cancelled). When full, the oldest closed
#: record (lowest request seq) is pruned together with its grant and log.
MAX_REQUEST_RECORDS: Final = 8192
MAX_QUERY_ITEMS: Final = 256
MAX_SNAPSHOT_SIZE: Final = 1 << 31

EVENT_TYPE: Final = "compute-event"
SNAPSHOT_TYPE: Final = "compute-snapshot"
STATE_TYPE: Final = "compute-state"

OPS: Final = ("register_provider", "refresh_provider", "deregister_provider", "submit_request",
              "cancel_request", "submit_log")
_PARAM_KEYS: Final = frozenset({"follow_almanac", "tick_interval_ms"})


def _counter(value: Any) -> bool:
    return is_uint(value) and value <= MAX_TICK


_SNAPSHOT: Final = SnapshotFormat(
    "compute", SNAPSHOT_TYPE, SCHEMA, (_counter, _counter, _counter, is_list),
    '["compute-snapshot", 1, next_request_seq, next_grant_seq, entry_count, [leaf]]',
    max_size=MAX_SNAPSHOT_SIZE)


_ARG_KEYS: Final = {"register_provider": {"card"}, "refresh_provider": {"card"},
                    "deregister_provider": set(), "submit_request": {"request"},
                    "cancel_request": {"request_id"}, "submit_log": {"log"}}


def _refuse(op: str, reason: str, detail: str) -> InvalidCommand:
    return InvalidCommand(f"{op}: {detail}", reason=reason)


def _key(kind: str, ident: bytes) -> bytes:
    """A state key: `encode([kind, id])`, so keys of one kind sort together."""
    return encode([kind, ident])


#: The encoding of `[kind, ` (array head and kind text): how a snapshot leaf's kind is read.
_KEY_PREFIX: Final = {kind: _key(kind, b"")[:-1] for kind in ("provider", "request", "grant")}


def _add(a: tuple[int, int, int], b: tuple[int, int, int], sign: int = 1
         ) -> tuple[int, int, int]:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2])


def _fits(need: tuple[int, int, int], room: tuple[int, int, int]) -> bool:
    return need[0] <= room[0] and need[1] <= room[1] and need[2] <= room[2]


_ZERO: Final = (0, 0, 0)


def _resources_read(r: tuple[int, int, int]) -> dict[str, int]:
    return {"cpu_millicores": r[0], "ram_mib": r[1], "storage_gib": r[2]}


# ---------------------------------------------------------------------------------------
# The component


@register
class Compute(Component):
    kind = "compute"
    signature = SIGNATURE

    def __init__(self, follow_almanac: bytes | None = None,
                 tick_interval_ms: int = DEFAULT_TICK_INTERVAL_MS) -> None:
        if follow_almanac is not None and not (isinstance(follow_almanac, bytes)
                                               and len(follow_almanac) == ID_LEN):
            raise OperatorError(f"component.follow_almanac: must be a {ID_LEN}-byte committee id")
        if not (is_uint(tick_interval_ms)
                and MIN_TICK_INTERVAL_MS <= tick_interval_ms <= MAX_TICK_INTERVAL_MS):
            raise OperatorError(f"component.tick_interval_ms: must be {MIN_TICK_INTERVAL_MS}.."
                                f"{MAX_TICK_INTERVAL_MS}")
        self.follow_almanac = follow_almanac
        self.tick_interval_ms = tick_interval_ms
        self._reset()

    def _reset(self) -> None:
        self._providers: dict[bytes, ProviderCard] = {}
        #: Parsed MR_TD per provider (None: no quote). Derived from the card.
        self._mrtd: dict[bytes, bytes | None] = {}
        self._requests: dict[bytes, RequestRecord] = {}
        self._grants: dict[bytes, GrantRecord] = {}  # by request id
        # Derived indexes, rebuilt on restore:
        self._by_grant_id: dict[bytes, bytes] = {}
        self._open: dict[int, bytes] = {}  # request seq → id; insertion order = seq order
        self._open_per_requester: dict[bytes, int] = {}
        self._in_use: dict[bytes, tuple[int, int, int]] = {}
        self._live_per_provider: dict[bytes, int] = {}
        self._live = 0
        self._expiry_heap: list[tuple[int, int, bytes]] = []  # (valid_to, grant seq, id)
        self._deadline_heap: list[tuple[int, int, bytes]] = []  # (deadline, seq, id); lazy
        self._closed_heap: list[tuple[int, bytes]] = []  # (request seq, id): prunable
        self.next_request_seq = 0
        self.next_grant_seq = 0
        self.entry_count = 0
        # Commitment: leaf bytes per key; the tree is rebuilt lazily after a change.
        self._leaves: dict[bytes, bytes] = {}
        self._leaf_hashes: dict[bytes, bytes] = {}
        self._tree: tuple[list[bytes], MemoryTree] | None = None
        #: False only when the last clearing pass left no open request grantable and nothing
        #: that could change that has happened since (a cache: never part of the state).
        self._clearing_due = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Compute:
        """From `config.ComputeConfig.to_cbor()`: `follow_almanac` (32 bytes or None), and
        optionally `tick_interval_ms` (the followed Almanac's tick length; default 1000)."""
        unknown = sorted(set(params) - _PARAM_KEYS)
        if unknown:
            raise OperatorError(f"component.{unknown[0]}: unknown key for compute")
        return cls(params.get("follow_almanac"),
                   params.get("tick_interval_ms", DEFAULT_TICK_INTERVAL_MS))

    def config_digest(self) -> bytes:
        return hash_structure("compute-config", SCHEMA, self.signature, self.follow_almanac,
                              self.tick_interval_ms)

    # -- time -----------------------------------------------------------------------------

    def now(self, ctx: BlockContext) -> int:
        """The tick the block is applied at. Following an Almanac: its latest stamped tick,
        0 before the first stamp (commands only: `end_block` does nothing until a stamp).
        Following none: the block height (docs/compute.md §4)."""
        if self.follow_almanac is None:
            return ctx.height
        return 0 if ctx.tick is None else ctx.tick

    def duration_ticks(self, duration_sec: int) -> int:
        """Whole ticks covering `duration_sec` (rounded up; at least 1)."""
        return max(1, -(-duration_sec * 1000 // self.tick_interval_ms))

    # -- stateless check --------------------------------------------------------------------

    def check(self, client: bytes, command: Command) -> None:
        self._parse(client, command)

    def _parse(self, client: bytes, command: Command) -> Any:
        op = command.op
        if op not in _ARG_KEYS:
            raise InvalidCommand(f"unknown op {op!r} (compute accepts: {', '.join(OPS)})",
                                 reason="unknown_op")
        args = command.args
        if set(args) != _ARG_KEYS[op]:
            expected = ", ".join(sorted(_ARG_KEYS[op]))
            raise _refuse(op, "bad_args", f"args must be exactly {{{expected}}}")
        if op in ("register_provider", "refresh_provider"):
            card = card_from_command(command)
            if card.provider_id != client:
                raise _refuse(op, "not_provider", "card.provider_id must be the signing "
                              f"client key {client.hex()}")
            try:
                card.mr_td()
                bound = card.quote_bound()
            except MalformedQuote as exc:
                raise _refuse(op, "bad_quote", f"card.{exc}") from None
            if not bound:
                raise _refuse(op, "quote_not_bound", "card.tdx_quote: REPORTDATA[0..32] is not "
                              f"the binding of provider {card.provider_id.hex()}")
            return card
        if op == "deregister_provider":
            return None
        try:
            if op == "submit_request":
                request = ComputeRequest.from_wire(args["request"], "request")
                if request.requester != client:
                    raise _refuse(op, "not_requester", "request.requester must be the signing "
                                  f"client key {client.hex()}")
                return request
            if op == "cancel_request":
                return field_bytes(args, "request_id", "args", ID_LEN)
            log = ComputeLog.from_wire(args["log"], "log")
        except BadField as exc:
            raise _refuse(op, "bad_args", str(exc)) from None
        if not log.signature_valid():
            raise _refuse(op, "bad_log_signature", "log.signature does not verify for "
                          f"provider {log.provider_id.hex()}")
        return log

    # -- apply ------------------------------------------------------------------------------

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for envelope in envelopes:
            for command in envelope.commands:
                try:
                    parsed = self._parse(envelope.client, command)
                    body = self._apply_one(ctx, envelope.client, command.op, parsed)
                except InvalidCommand as exc:
                    results.append(Refused(exc.reason, str(exc)))
                    continue
                index_of_entry = self.entry_count
                results.append(Applied(index_of_entry, (self._entry(ctx, command.op, body),)))
        return results

    def _entry(self, ctx: BlockContext, kind: str, body: Mapping[str, Any]) -> bytes:
        data = encode([EVENT_TYPE, SCHEMA, self.entry_count, ctx.height, kind, dict(body)])
        self.entry_count += 1
        return data

    def _apply_one(self, ctx: BlockContext, client: bytes, op: str, parsed: Any
                   ) -> Mapping[str, Any]:
        """Check the stateful conditions (raise InvalidCommand with nothing changed), then
        change the state; return the event body."""
        tick = self.now(ctx)
        if op == "register_provider":
            if client in self._providers:
                raise _refuse(op, "already_registered", f"provider {client.hex()} is "
                              "registered (use refresh_provider)")
            if len(self._providers) >= MAX_PROVIDERS:
                raise _refuse(op, "registry_full", f"the registry holds its maximum of "
                              f"{MAX_PROVIDERS} providers")
            card = replace(parsed, refreshed_tick=tick)
            self._put_provider(card)
            return {"provider_id": client, "card": card.to_wire()}
        if op == "refresh_provider":
            if client not in self._providers:
                raise _refuse(op, "unknown_provider", f"provider {client.hex()} is not "
                              "registered")
            card = replace(parsed, refreshed_tick=tick)
            self._check_keeps_grants(op, card)
            self._put_provider(card)
            return {"provider_id": client, "card": card.to_wire()}
        if op == "deregister_provider":
            if client not in self._providers:
                raise _refuse(op, "unknown_provider", f"provider {client.hex()} is not "
                              "registered")
            live = self._live_per_provider.get(client, 0)
            if live:
                raise _refuse(op, "grants_live", f"provider holds {live} live grants; "
                              "deregister after they expire")
            self._drop_provider(client)
            return {"provider_id": client}
        if op == "submit_request":
            return self._submit(ctx, tick, parsed)
        if op == "cancel_request":
            record = self._requests.get(parsed)
            if record is None or record.request.requester != client:
                # Same refusal for "absent" and "someone else's": ids do not leak ownership.
                raise _refuse(op, "unknown_request", f"no request {parsed.hex()} of this "
                              "requester")
            if record.status != OPEN:
                raise _refuse(op, "not_open", f"request {parsed.hex()} is {record.status}")
            self._close_request(record, CANCELLED, ctx.height)
            return {"request_id": parsed}
        return self._log(op, parsed)

    def _check_keeps_grants(self, op: str, card: ProviderCard) -> None:
        """A refresh may not invalidate a live grant: capacity below what live grants use,
        or a TDX/MR_TD change a live grant's request depends on."""
        pid = card.provider_id
        caps = card.capabilities
        in_use = self._in_use.get(pid, _ZERO)
        if not _fits(in_use, (caps.cpu_millicores, caps.ram_mib, caps.storage_gib)):
            raise _refuse(op, "capacity_in_use", f"live grants use {in_use[0]} millicores, "
                          f"{in_use[1]} MiB, {in_use[2]} GiB; the new capabilities must cover "
                          "them")
        if not self._live_per_provider.get(pid):
            return
        for rid in self._live_grant_ids(pid):
            request = self._requests[rid].request
            if not self._covers(card, card.mr_td(), request):
                raise _refuse(op, "grants_live", f"live grant {rid.hex()} needs the current "
                              "TDX capability or MR_TD")

    def _live_grant_ids(self, provider_id: bytes) -> Iterator[bytes]:
        for _, _, rid in sorted(self._expiry_heap):
            if self._grants[rid].grant.provider_id == provider_id:
                yield rid

    def _submit(self, ctx: BlockContext, tick: int, request: ComputeRequest
                ) -> Mapping[str, Any]:
        op = "submit_request"
        rid = request.request_id
        if rid in self._requests:
            raise _refuse(op, "duplicate_request", f"request id {rid.hex()} is taken")
        if request.deadline_tick < tick:
            raise _refuse(op, "deadline_passed", f"request.deadline_tick {request.deadline_tick}"
                          f" is before the current tick {tick}")
        if len(self._open) >= MAX_OPEN_REQUESTS:
            raise _refuse(op, "too_many_open", f"{MAX_OPEN_REQUESTS} requests are open")
        if self._open_per_requester.get(request.requester, 0) >= MAX_OPEN_PER_REQUESTER:
            raise _refuse(op, "requester_limit", f"this requester has "
                          f"{MAX_OPEN_PER_REQUESTER} open requests")
        if len(self._requests) >= MAX_REQUEST_RECORDS:
            if not self._closed_heap:
                raise _refuse(op, "compute_full", f"{MAX_REQUEST_RECORDS} request records "
                              "are kept and none is closed")
            self._prune_oldest_closed()
        record = RequestRecord(request, self.next_request_seq, OPEN, ctx.height)
        self.next_request_seq += 1
        self._put_request(record)
        self._open[record.seq] = rid
        self._open_per_requester[request.requester] = (
            self._open_per_requester.get(request.requester, 0) + 1)
        heapq.heappush(self._deadline_heap, (request.deadline_tick, record.seq, rid))
        self._clearing_due = True
        return {"request_id": rid, "seq": record.seq}

    def _log(self, op: str, log: ComputeLog) -> Mapping[str, Any]:
        rid = self._by_grant_id.get(log.grant_id)
        if rid is None:
            raise _refuse(op, "unknown_grant", f"no grant {log.grant_id.hex()}")
        record = self._grants[rid]
        if record.grant.provider_id != log.provider_id:
            raise _refuse(op, "wrong_provider", f"grant {log.grant_id.hex()} names provider "
                          f"{record.grant.provider_id.hex()}")
        if record.log is not None:
            raise _refuse(op, "log_exists", f"grant {log.grant_id.hex()} has its usage log")
        self._put_grant(replace(record, log=log))
        return {"request_id": rid, "log": log.to_wire()}

    # -- clearing (end of every block) ------------------------------------------------------

    def end_block(self, ctx: BlockContext) -> Applied | None:
        if self.follow_almanac is not None and ctx.tick is None:
            # No stamp yet: tick 0 is not a time. Clearing now would give grants `valid_to`
            # = duration, all expiring at the first real stamp; nothing clears until then.
            self._compact_deadline_heap()
            return None
        tick = self.now(ctx)
        first = self.entry_count
        entries: list[bytes] = []
        while self._expiry_heap and self._expiry_heap[0][0] < tick:
            _, _, rid = heapq.heappop(self._expiry_heap)
            entries.append(self._entry(ctx, "expiry", self._expire(rid, ctx.height)))
        while self._deadline_heap and self._deadline_heap[0][0] < tick:
            _, seq, rid = heapq.heappop(self._deadline_heap)
            record = self._requests.get(rid)
            if record is None or record.status != OPEN or record.seq != seq:
                # Granted or cancelled since it was pushed, or pruned and its id submitted
                # again (a new request with its own seq and deadline entry).
                continue
            self._close_request(record, LAPSED, ctx.height)
            entries.append(self._entry(ctx, "lapse", {"request_id": rid}))
        self._compact_deadline_heap()
        if self._clearing_due:
            entries.extend(self._clear(ctx, tick))
            self._clearing_due = False
        return Applied(first, tuple(entries)) if entries else None

    def _clear(self, ctx: BlockContext, tick: int) -> list[bytes]:
        entries: list[bytes] = []
        ranking = [(pid, self._providers[pid], self._mrtd[pid]) for pid in sorted(
            self._providers, key=lambda pid: (self._providers[pid].rate_per_hour, pid))]
        # Candidate lists keep the ranking order; they only narrow the scan (a request with
        # expected_mrtd can go to nobody else), the choice is still "first in the ranking
        # that covers and fits".
        quoted = [p for p in ranking if p[1].capabilities.tdx and p[2] is not None]
        by_mrtd: dict[bytes, list[tuple[bytes, ProviderCard, bytes | None]]] = {}
        for p in quoted:
            by_mrtd.setdefault(p[2] or b"", []).append(p)
        room = {pid: list(self.remaining(pid)) for pid, _, _ in ranking}
        # Per-dimension upper bound of any provider's remaining capacity: remaining only
        # shrinks during the pass, so a request above it fits nowhere and is skipped at once.
        upper = [max((r[d] for r in room.values()), default=-1) for d in range(3)]
        for rid in list(self._open.values()):
            if self._live >= MAX_LIVE_GRANTS:
                break
            request = self._requests[rid].request
            need = request.resources
            if need[0] > upper[0] or need[1] > upper[1] or need[2] > upper[2]:
                continue
            if request.expected_mrtd is not None:
                candidates = by_mrtd.get(request.expected_mrtd, [])
            else:
                candidates = quoted if request.tdx_required else ranking
            for pid, card, mr_td in candidates:
                left = room[pid]
                if (need[0] <= left[0] and need[1] <= left[1] and need[2] <= left[2]
                        and self._covers(card, mr_td, request)):
                    entries.append(self._entry(ctx, "grant", self._grant(ctx, tick, pid, rid)))
                    for d in range(3):
                        left[d] -= need[d]
                    break
        return entries

    @staticmethod
    def _covers(card: ProviderCard, mr_td: bytes | None, request: ComputeRequest) -> bool:
        """The provider's card can serve the request at all (capacity aside)."""
        caps = card.capabilities
        if not _fits(request.resources, (caps.cpu_millicores, caps.ram_mib, caps.storage_gib)):
            return False
        if request.tdx_required and not (caps.tdx and mr_td is not None):
            return False
        return request.expected_mrtd is None or request.expected_mrtd == mr_td

    def remaining(self, provider_id: bytes) -> tuple[int, int, int]:
        """Capabilities minus the resources (the requests' minimums) of live grants."""
        caps = self._providers[provider_id].capabilities
        return _add((caps.cpu_millicores, caps.ram_mib, caps.storage_gib),
                    self._in_use.get(provider_id, _ZERO), -1)

    def _grant(self, ctx: BlockContext, tick: int, pid: bytes, rid: bytes) -> dict[str, Any]:
        record = self._requests[rid]
        request = record.request
        grant = ComputeGrant(
            request_id=rid, provider_id=pid,
            image_hash=request.pin_posthash if request.pin_posthash is not None
            else request.image_prehash,
            expected_mrtd=request.expected_mrtd if request.expected_mrtd is not None
            else self._mrtd[pid],
            valid_to_tick=min(MAX_TICK, tick + self.duration_ticks(request.duration_sec)),
            bearer_pointer=hash_structure("compute-bearer", SCHEMA, ctx.digest, rid))
        grant_record = GrantRecord(grant, self.next_grant_seq, ctx.height, tick, LIVE)
        self.next_grant_seq += 1
        self._remove_open(record)
        self._put_request(replace(record, status=GRANTED, closed_height=ctx.height))
        self._put_grant(grant_record)
        self._by_grant_id[grant.grant_id] = rid
        self._hold(pid, request.resources, 1)
        heapq.heappush(self._expiry_heap, (grant.valid_to_tick, grant_record.seq, rid))
        return {"grant": grant.to_wire(), "grant_id": grant.grant_id, "seq": grant_record.seq}

    def _expire(self, rid: bytes, height: int) -> dict[str, Any]:
        record = self._grants[rid]
        self._put_grant(replace(record, status=EXPIRED))
        self._hold(record.grant.provider_id, self._requests[rid].request.resources, -1)
        heapq.heappush(self._closed_heap, (self._requests[rid].seq, rid))
        self._clearing_due = True
        return {"request_id": rid, "grant_id": record.grant.grant_id}

    def _hold(self, pid: bytes, resources: tuple[int, int, int], sign: int) -> None:
        self._in_use[pid] = _add(self._in_use.get(pid, _ZERO), resources, sign)
        self._live_per_provider[pid] = self._live_per_provider.get(pid, 0) + sign
        self._live += sign
        if not self._live_per_provider[pid]:
            del self._live_per_provider[pid]
            del self._in_use[pid]

    # -- state changes (every one updates the committed leaves) ----------------------------

    def _set_leaf(self, key: bytes, value: Any) -> None:
        if value is None:
            self._leaves.pop(key, None)
            self._leaf_hashes.pop(key, None)
        else:
            leaf = encode([key, value])
            self._leaves[key] = leaf
            self._leaf_hashes[key] = leaf_hash(leaf)
        self._tree = None

    def _put_provider(self, card: ProviderCard) -> None:
        self._providers[card.provider_id] = card
        self._mrtd[card.provider_id] = card.mr_td()
        self._set_leaf(_key("provider", card.provider_id), self._provider_value(card))
        self._clearing_due = True

    def _provider_value(self, card: ProviderCard) -> dict[str, Any]:
        return {"card": card.to_wire(), "mr_td": self._mrtd[card.provider_id]}

    def _drop_provider(self, pid: bytes) -> None:
        del self._providers[pid]
        del self._mrtd[pid]
        self._set_leaf(_key("provider", pid), None)

    def _put_request(self, record: RequestRecord) -> None:
        self._requests[record.request.request_id] = record
        self._set_leaf(_key("request", record.request.request_id), record.to_wire())

    def _put_grant(self, record: GrantRecord) -> None:
        self._grants[record.grant.request_id] = record
        self._set_leaf(_key("grant", record.grant.request_id), record.to_wire())

    def _remove_open(self, record: RequestRecord) -> None:
        del self._open[record.seq]
        requester = record.request.requester
        self._open_per_requester[requester] -= 1
        if not self._open_per_requester[requester]:
            del self._open_per_requester[requester]

    def _close_request(self, record: RequestRecord, status: str, height: int) -> None:
        self._remove_open(record)
        self._put_request(replace(record, status=status, closed_height=height))
        heapq.heappush(self._closed_heap, (record.seq, record.request.request_id))

    def _prune_oldest_closed(self) -> None:
        _, rid = heapq.heappop(self._closed_heap)
        del self._requests[rid]
        self._set_leaf(_key("request", rid), None)
        grant = self._grants.pop(rid, None)
        if grant is not None:
            del self._by_grant_id[grant.grant.grant_id]
            self._set_leaf(_key("grant", rid), None)

    def _compact_deadline_heap(self) -> None:
        """Drop the entries of requests that left `open` (bounded memory, also before the
        first stamp); the pop order is by unique (deadline, seq), so this changes no outcome."""
        if len(self._deadline_heap) > 2 * len(self._open) + 64:
            self._deadline_heap = self._fresh_deadline_heap()

    def _fresh_deadline_heap(self) -> list[tuple[int, int, bytes]]:
        heap = [(self._requests[rid].request.deadline_tick, seq, rid)
                for seq, rid in self._open.items()]
        heapq.heapify(heap)
        return heap

    # -- commitment -------------------------------------------------------------------------

    def _tree_now(self) -> tuple[list[bytes], MemoryTree]:
        if self._tree is None:
            keys = sorted(self._leaves)
            self._tree = (keys, MemoryTree([self._leaf_hashes[k] for k in keys]))
        return self._tree

    def _root_preimage(self) -> list[Any]:
        keys, tree = self._tree_now()
        return [STATE_TYPE, SCHEMA, len(keys), tree.root(), self.next_request_seq,
                self.next_grant_seq, self.entry_count]

    def state_root(self) -> bytes:
        return hash_structure(*self._root_preimage())

    # -- reads ------------------------------------------------------------------------------

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "head":
            expect_args(name, args, set())
            keys, tree = self._tree_now()
            return {"providers": len(self._providers), "open_requests": len(self._open),
                    "live_grants": self._live, "request_records": len(self._requests),
                    "next_request_seq": self.next_request_seq,
                    "next_grant_seq": self.next_grant_seq, "entry_count": self.entry_count,
                    "tree_size": len(keys), "tree_root": tree.root(),
                    "state_root": self.state_root()}
        if name == "provider":
            expect_args(name, args, {"provider_id"})
            pid = _arg_id(name, args, "provider_id")
            if pid not in self._providers:
                raise QueryNotFound(f"provider: no provider {pid.hex()}")
            return self._provider_read(pid)
        if name == "request":
            expect_args(name, args, {"request_id"})
            rid = _arg_id(name, args, "request_id")
            if rid not in self._requests:
                raise QueryNotFound(f"request: no request {rid.hex()}")
            return self._item_read("request", rid, self._requests[rid].to_wire())
        if name == "grant":
            expect_args(name, args, {"request_id"})
            rid = _arg_id(name, args, "request_id")
            if rid not in self._grants:
                raise QueryNotFound(f"grant: no grant for request {rid.hex()}")
            return self._item_read("grant", rid, self._grants[rid].to_wire())
        if name == "providers":
            expect_args(name, args, set())
            return {"providers": [self._provider_read(pid) for pid in sorted(self._providers)],
                    "state_root": self.state_root()}
        if name == "open_requests":
            expect_args(name, args, set(), {"from_seq", "limit"})
            start = uint_arg(name, args, "from_seq", default=0)
            limit = limit_arg(name, args, MAX_QUERY_ITEMS)
            seqs = [s for s in self._open if s >= start][:limit]
            more = len([s for s in self._open if s >= start]) > limit
            return {"requests": [self._item_read("request", self._open[s],
                                                 self._requests[self._open[s]].to_wire())
                                 for s in seqs],
                    "next": seqs[-1] + 1 if more else None, "state_root": self.state_root()}
        if name == "grants":
            expect_args(name, args, set(), {"since_height", "from_seq", "limit"})
            start = uint_arg(name, args, "from_seq", default=0)
            limit = limit_arg(name, args, MAX_QUERY_ITEMS)
            since = uint_arg(name, args, "since_height", default=0)
            matching = sorted((r for r in self._grants.values()
                               if r.seq >= start and r.granted_height >= since),
                              key=lambda r: r.seq)
            page = matching[:limit]
            return {"grants": [self._item_read("grant", r.grant.request_id, r.to_wire())
                               for r in page],
                    "next": page[-1].seq + 1 if len(matching) > limit else None,
                    "state_root": self.state_root()}
        raise QueryError(f"unknown compute query {name!r} (known: grant, grants, head, "
                         "open_requests, provider, providers, request)")

    def _item_read(self, kind: str, ident: bytes, value: dict[str, Any]) -> dict[str, Any]:
        key = _key(kind, ident)
        keys, tree = self._tree_now()
        index = _index_of(keys, key)
        return {kind: value, "state_proof": state_proof(self._leaves[key], index, tree,
                                                        self._root_preimage())}

    def _provider_read(self, pid: bytes) -> dict[str, Any]:
        read = self._item_read("provider", pid, self._provider_value(self._providers[pid]))
        read["remaining"] = _resources_read(self.remaining(pid))
        read["live_grants"] = self._live_per_provider.get(pid, 0)
        return read

    # -- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        keys, _ = self._tree_now()
        return _SNAPSHOT.encode(self.next_request_seq, self.next_grant_seq, self.entry_count,
                                [self._leaves[k] for k in keys])

    def restore(self, data: bytes) -> None:
        _SNAPSHOT.restore(self, data, self._state_from_snapshot)

    def _state_from_snapshot(self, fields: list[Any]) -> dict[str, Any]:
        fresh = Compute(self.follow_almanac, self.tick_interval_ms)
        try:
            fresh._load(*fields)
        except BadField as exc:
            raise _SNAPSHOT.error(str(exc)) from None
        return {slot: getattr(fresh, slot) for slot in _STATE_SLOTS}

    def _load(self, next_request_seq: int, next_grant_seq: int, entry_count: int,
              leaves: list[Any]) -> None:
        if len(leaves) > MAX_PROVIDERS + 2 * MAX_REQUEST_RECORDS:
            raise BadField("more leaves than the bounds allow")
        self.next_request_seq, self.next_grant_seq = next_request_seq, next_grant_seq
        self.entry_count = entry_count
        previous = b""
        for n, leaf in enumerate(leaves):
            if not isinstance(leaf, bytes):
                raise BadField(f"leaf {n}: expected a byte string")
            try:
                row = decode(leaf, max_size=2 * MAX_QUOTE_SIZE)
            except EncodingError as exc:
                raise BadField(f"leaf {n}: {exc}") from None
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], bytes)):
                raise BadField(f"leaf {n}: expected [key, value]")
            key, value = row
            if key <= previous:
                raise BadField(f"leaf {n}: keys must be strictly ascending")
            previous = key
            self._load_leaf(n, key, value)
            if self._leaves.get(key) != leaf:
                raise BadField(f"leaf {n}: does not re-encode to the same bytes")
        self._rebuild_indexes()

    def _load_leaf(self, n: int, key: bytes, value: Any) -> None:
        where = f"leaf {n}"
        if key.startswith(_KEY_PREFIX["provider"]):
            m = field_map(value, frozenset({"card", "mr_td"}), where)
            card = ProviderCard.from_wire(m["card"], f"{where}.card", stored=True)
            try:
                mr_td = card.mr_td()
                bound = card.quote_bound()
            except MalformedQuote as exc:
                raise BadField(f"{where}.card: {exc}") from None
            if not bound:
                raise BadField(f"{where}.card.tdx_quote is not bound to its provider_id")
            if m["mr_td"] != mr_td:
                raise BadField(f"{where}.mr_td is not the quote's MR_TD")
            if len(self._providers) >= MAX_PROVIDERS:
                raise BadField(f"more than {MAX_PROVIDERS} providers")
            expected = _key("provider", card.provider_id)
            self._providers[card.provider_id] = card
            self._mrtd[card.provider_id] = mr_td
            self._set_leaf(expected, self._provider_value(card))
        elif key.startswith(_KEY_PREFIX["request"]):
            record = RequestRecord.from_wire(value, where)
            if record.seq >= self.next_request_seq:
                raise BadField(f"{where}.seq is not below next_request_seq")
            expected = _key("request", record.request.request_id)
            self._put_request(record)
        elif key.startswith(_KEY_PREFIX["grant"]):
            grant = GrantRecord.from_wire(value, where)
            if grant.seq >= self.next_grant_seq:
                raise BadField(f"{where}.seq is not below next_grant_seq")
            expected = _key("grant", grant.grant.request_id)
            self._put_grant(grant)
        else:
            raise BadField(f"{where}: key is not [\"provider\" | \"request\" | \"grant\", id]")
        if key != expected:
            raise BadField(f"{where}: key does not name its record")

    def _rebuild_indexes(self) -> None:
        """Cross-check the records and rebuild the derived indexes (a snapshot from a peer
        must describe a state this component could have reached)."""
        if len(self._requests) > MAX_REQUEST_RECORDS:
            raise BadField(f"more than {MAX_REQUEST_RECORDS} request records")
        seqs: set[int] = set()
        for rid in sorted(self._requests, key=lambda r: self._requests[r].seq):
            record = self._requests[rid]
            if record.seq in seqs:
                raise BadField(f"request seq {record.seq} appears twice")
            seqs.add(record.seq)
            if (record.status == GRANTED) != (rid in self._grants):
                raise BadField(f"request {rid.hex()}: a grant exists exactly when it is granted")
            if record.status == OPEN:
                self._open[record.seq] = rid
                requester = record.request.requester
                self._open_per_requester[requester] = (
                    self._open_per_requester.get(requester, 0) + 1)
            elif record.status != GRANTED:
                self._closed_heap.append((record.seq, rid))
        if len(self._open) > MAX_OPEN_REQUESTS or any(
                n > MAX_OPEN_PER_REQUESTER for n in self._open_per_requester.values()):
            raise BadField("more open requests than the bounds allow")
        grant_seqs: set[int] = set()
        for rid in sorted(self._grants):
            grec = self._grants[rid]
            request = self._requests[rid]
            grant = grec.grant
            if grant.request_id != rid or grec.seq in grant_seqs:
                raise BadField(f"grant {rid.hex()}: wrong request id or repeated seq")
            grant_seqs.add(grec.seq)
            if grec.granted_height != request.closed_height:
                raise BadField(f"grant {rid.hex()}: granted_height is not the request's "
                           "closed_height")
            self._by_grant_id[grant.grant_id] = rid
            if grec.status == EXPIRED:
                self._closed_heap.append((request.seq, rid))
                continue
            card = self._providers.get(grant.provider_id)
            if card is None or not self._covers(card, self._mrtd[grant.provider_id],
                                                request.request):
                raise BadField(f"grant {rid.hex()}: live, but its provider is gone or does not "
                           "cover the request")
            self._hold(grant.provider_id, request.request.resources, 1)
            self._expiry_heap.append((grant.valid_to_tick, grec.seq, rid))
        for pid in sorted(self._in_use):
            if min(self.remaining(pid)) < 0:
                raise BadField(f"provider {pid.hex()}: live grants exceed its capabilities")
        if self._live > MAX_LIVE_GRANTS:
            raise BadField(f"more than {MAX_LIVE_GRANTS} live grants")
        heapq.heapify(self._closed_heap)
        heapq.heapify(self._expiry_heap)
        self._deadline_heap = self._fresh_deadline_heap()
        self._clearing_due = True


_STATE_SLOTS: Final = (
    "_providers", "_mrtd", "_requests", "_grants", "_by_grant_id", "_open",
    "_open_per_requester", "_in_use", "_live_per_provider", "_live", "_expiry_heap",
    "_deadline_heap", "_closed_heap", "next_request_seq", "next_grant_seq", "entry_count",
    "_leaves", "_leaf_hashes", "_tree", "_clearing_due",
)


# -- query helpers -----------------------------------------------------------------------


def _arg_id(name: str, args: Mapping[str, Any], key: str) -> bytes:
    value = args[key]
    if not (isinstance(value, bytes) and len(value) == ID_LEN):
        raise QueryError(f"{name}: {key} must be {ID_LEN} bytes")
    return value


def _index_of(keys: list[bytes], key: bytes) -> int:
    return bisect.bisect_left(keys, key)


# ---------------------------------------------------------------------------------------
# Devnet load


def demo_commands(provider_keys: Sequence[SigningKey], requester_key: SigningKey,
                  round: int) -> list[tuple[SigningKey, list[Command]]]:
    """Commands for `coalitiond devnet --component compute`: every provider registers in
    round 0 (different sizes and rates, no quote), the requester submits two requests every
    round (ids derived from the round, so each round's are new; short durations, so grants
    expire and capacity returns)."""
    out: list[tuple[SigningKey, list[Command]]] = []
    if round == 0:
        for i, key in enumerate(provider_keys):
            caps = Capabilities(4000 * (i + 1), 8192 * (i + 1), 100 * (i + 1), False,
                                ("devnet",))
            out.append((key, [register_provider(
                ProviderCard(key.public, caps, 100 + 10 * (i % 3), None))]))
    requests = []
    for j in range(2):
        rid = hash_structure("compute-demo-request", SCHEMA, requester_key.public, round, j)
        requests.append(submit_request(ComputeRequest(
            request_id=rid, requester=requester_key.public,
            image_prehash=hash_structure("compute-demo-image", SCHEMA, j),
            pin_posthash=None, expected_mrtd=None, min_cpu_millicores=1000 * (j + 1),
            min_ram_mib=2048, min_storage_gib=10, tdx_required=False, duration_sec=5,
            deadline_tick=MAX_TICK, settlement=hash_structure("compute-demo-settlement",
                                                              SCHEMA))))
    out.append((requester_key, requests))
    return out
