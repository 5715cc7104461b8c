"""The HTTP read API (docs/api.md): the member's signed log, proofs and component state.

Routes added to the ops app (`ReadApi(source).install(app)`):

    GET /v1/status                       member status, log head, executor root
    GET /v1/checkpoint[?height=H]        signed checkpoint note + finalization of its block
    GET /v1/blocks?from=H&limit=N        finalised blocks with certificates and votes
    GET /v1/entries?from=I&limit=N[&size=S]   log entries (with inclusion proofs for size S)
    GET /v1/proof/inclusion?index=I[&size=S]
    GET /v1/proof/consistency?old=A[&new=B]
    GET /v1/state/<query>?<args>         component read with the executor-root pieces and,
                                         when at hand, the certified block committing to them
    GET /v1/evidence[?from=I&limit=N]    misbehaviour evidence the member recorded

Every response is JSON (bytes as lowercase hex) or, with `format=cbor`, deterministic CBOR
of the same object (bytes as bytes; what `coalitiond.client` reads). The server proves
nothing by itself: everything here is checked by the reader against the committee alone.

Concurrency: store reads run on the store's worker thread (`AsyncStore.run`), one at a time,
never on the event loop. The executor is read synchronously on the trio thread between two
awaits: only the consensus loop, on the same thread, mutates it, so one synchronous read is a
consistent snapshot. A state read is encoded right away (a copy: later awaits cannot see the
state move under it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from ..components.base import QueryError, QueryNotFound
from ..components.executor import Executor
from ..consensus.types import Block
from ..log.aio import AsyncStore
from ..log.base import BelowBase
from ..log.checkpoint import Checkpoint, split_note
from ..log.errors import StoreUsageError
from ..log.sqlite import Store
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError
from ..primitives.merkle import HASH_LEN
from .http import HttpError, OpsApp, Response, data_response

if TYPE_CHECKING:
    from ..node.member import Member

T = TypeVar("T")

API_VERSION: Final = 1
#: Blocks in one /v1/blocks page at most (default: this many).
MAX_BLOCKS_PER_PAGE: Final = 64
#: Entries in one /v1/entries page at most (default: this many).
MAX_ENTRIES_PER_PAGE: Final = 256
#: Evidence records in one /v1/evidence page at most.
MAX_EVIDENCE_PER_PAGE: Final = 64
#: Encoded (CBOR) bytes of one page's items; a page stops before the item that would cross
#: it, but always holds at least one (a single block is bounded by MAX_BLOCK_SIZE).
MAX_PAGE_BYTES: Final = 4 * 1024 * 1024
#: Encoded bytes of one state read's result at most (413 beyond: ask for less).
MAX_STATE_RESULT_BYTES: Final = 8 * 1024 * 1024
#: Blocks searched back from the head for one certifying the current executor root, and
#: forward from a block without its own finalization for the descendant that finalises it.
MAX_CERTIFY_SCAN: Final = 64
#: How long `wait=1` waits for a finalised block that certifies the executor root read.
MAX_CERTIFY_WAIT_S: Final = 10.0
#: Arguments of one state read at most, and the encoded `args=` map's size.
MAX_STATE_ARGS: Final = 16
MAX_ARGS_BYTES: Final = 1024
#: Parameters of /v1/state/<name> that are not query arguments.
STATE_RESERVED: Final = frozenset({"format", "wait", "args"})

_QUERY_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
_ARG_NAME: Final = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}")
_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]{0,19})")
_HEX: Final = re.compile(r"(?:[0-9a-f]{2})*")


@dataclass(frozen=True, slots=True)
class ReadSource:
    """Exactly what the member has that the read API serves from.

    `progress()` returns at the member's next finalisation (used only to wait for a block
    that certifies a state read); None means "never wait".
    """

    store: AsyncStore
    executor: Executor
    committee: CommitteeSpec
    status: Callable[[], dict[str, Any]]
    ready: Callable[[], bool]
    diverged: Callable[[], str | None]
    progress: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def for_member(cls, member: Member) -> ReadSource:
        """The source of a running member (call after `member.run` has started)."""
        if member.store is None:
            raise RuntimeError("ReadSource.for_member: the member has not started")

        async def progress() -> None:
            height = member.height
            await member.wait_until(lambda m: m.height > height)

        return cls(member.store, member.executor, member.committee, member.status,
                   lambda: member.ready, lambda: member.diverged, progress)


# ---------------------------------------------------------------------------------------
# Parameters


class _Params:
    """Query parameters of one request: unknown names and malformed values are 400s that
    name the parameter."""

    def __init__(self, query: Mapping[str, str], allowed: set[str] | frozenset[str]) -> None:
        unknown = sorted(set(query) - set(allowed) - {"format"})
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} (allowed: "
                             f"{', '.join(sorted(set(allowed) | {'format'}))})")
        self.query = query
        fmt = query.get("format", "json")
        if fmt not in ("json", "cbor"):
            raise ValueError(f"format: must be json or cbor, got {fmt[:32]!r}")
        self.format = fmt

    def uint(self, name: str, default: int | None = None, *, lo: int = 0,
             hi: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            if default is None:
                raise ValueError(f"{name}: required (an unsigned integer)")
            return default
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 20 and
                (raw == "0" or not raw.startswith("0"))):
            raise ValueError(f"{name}: must be an unsigned decimal integer, got {raw[:32]!r}")
        value = int(raw)
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ValueError(f"{name}: must be {bound}, got {value}")
        return value

    def limit(self, maximum: int) -> int:
        # An oversize limit is capped rather than refused: readers page with `next`.
        return min(self.uint("limit", maximum, lo=1), maximum)

    def flag(self, name: str) -> bool:
        raw = self.query.get(name, "0")
        if raw not in ("0", "1"):
            raise ValueError(f"{name}: must be 0 or 1, got {raw[:32]!r}")
        return raw == "1"


def parse_state_args(query: Mapping[str, str]) -> dict[str, Any]:
    """Query arguments of a state read.

    Either `args=<hex of a deterministic CBOR map with text keys>` (exact, any CBOR value),
    or plain `name=value` pairs: a canonical decimal is an integer, `0x<hex>` a byte string,
    anything else text. Not both.
    """
    plain = {k: v for k, v in query.items() if k not in STATE_RESERVED}
    if "args" in query:
        if plain:
            raise ValueError(f"args: cannot be combined with plain arguments "
                             f"({sorted(plain)[0]!r})")
        raw = query["args"]
        if len(raw) > 2 * MAX_ARGS_BYTES or not _HEX.fullmatch(raw):
            raise ValueError(f"args: must be lowercase hex of at most {MAX_ARGS_BYTES} bytes")
        try:
            args = decode(bytes.fromhex(raw), max_size=MAX_ARGS_BYTES)
        except EncodingError as e:
            raise ValueError(f"args: not deterministic CBOR ({e})") from None
        if not (isinstance(args, dict) and all(isinstance(k, str) for k in args)):
            raise ValueError("args: must encode a map with text keys")
        if len(args) > MAX_STATE_ARGS:
            raise ValueError(f"args: at most {MAX_STATE_ARGS} arguments")
        return args
    if len(plain) > MAX_STATE_ARGS:
        raise ValueError(f"at most {MAX_STATE_ARGS} query arguments")
    out: dict[str, Any] = {}
    for name, value in plain.items():
        if not _ARG_NAME.fullmatch(name):
            raise ValueError(f"{name[:32]!r}: not an argument name ([a-z0-9_.-], 64 chars)")
        if _DECIMAL.fullmatch(value) and -(1 << 64) <= int(value) < (1 << 64):
            out[name] = int(value)
        elif value.startswith("0x"):
            if not _HEX.fullmatch(value[2:]):
                raise ValueError(f"{name}: 0x must be followed by lowercase hex byte pairs")
            out[name] = bytes.fromhex(value[2:])
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------
# Store reads (worker thread)


def _cert_bytes(cert: Any) -> bytes | None:
    return None if cert is None else bytes(cert.encode())


def _finalizing_chain(s: Store, height: int, through: int | None = None
                      ) -> tuple[list[bytes], bytes] | None:
    """For the stored block at `height`: (encoded headers of the blocks height+1..F, F's
    finalization) where F is the first block from `through` (default `height`) on with its
    own finalize certificate. Headers, not blocks: the chain only has to link and to show
    the certifier's roots, and a page of 3 MiB blocks would not fit one answer."""
    chain: list[bytes] = []
    first = height if through is None else through
    for h in range(height, min(s.height, first + MAX_CERTIFY_SCAN) + 1):
        fb = s.finalized(h)
        if h > height:
            chain.append(fb.block.header.encode())
        if fb.finalization is not None and h >= first:
            return chain, fb.finalization.encode()
    return None


def _certified(s: Store, height: int) -> dict[str, Any] | None:
    found = _finalizing_chain(s, height)
    if found is None:
        return None
    chain, finalization = found
    return {"height": height, "block": s.block(height).encode(), "finalization": finalization,
            "chain": chain}


def _read_checkpoint(s: Store, height: int | None) -> dict[str, Any]:
    """The checkpoint of the lowest certified height ≥ `height` (default: the newest
    certified height), with what certifies it: the chain from its block to a finalised one,
    in which the block at `certifier` commits to the checkpoint's (size, root)
    (docs/api.md §3, docs/protocol.md §7)."""
    if s.height == 0:
        raise HttpError(404, "no checkpoint yet: nothing has been finalised")
    newest = s.block(s.height).executed_height
    if newest == 0:
        raise HttpError(503, "no certified checkpoint yet: no finalised block commits to a "
                             "log root so far")
    at_least = newest if height is None else height
    if at_least > newest:
        raise HttpError(404, f"height: {at_least} is not certified yet (certified up to "
                             f"height {newest})")
    certifier = None
    for c in range(at_least + 1, min(s.height, at_least + MAX_CERTIFY_SCAN) + 1):
        if s.block(c).executed_height >= at_least:
            certifier = c
            break
    if certifier is None:
        raise HttpError(503, f"height: no block within {MAX_CERTIFY_SCAN} of {at_least} "
                             "certifies it")
    h = s.block(certifier).executed_height
    found = _finalizing_chain(s, h, certifier)
    if found is None:
        raise HttpError(503, f"height: no finalization within {MAX_CERTIFY_SCAN} blocks of "
                        f"{certifier} is stored yet")
    chain, finalization = found
    fb = s.finalized(h)
    cp = Checkpoint.parse_text(split_note(fb.checkpoint)[0])  # informational: readers verify
    return {"height": h, "size": cp.size, "root": cp.root, "note": fb.checkpoint,
            "block": fb.block.encode(), "finalization": finalization, "chain": chain,
            "certifier": certifier}


def _block_view(fb: Any) -> dict[str, Any]:
    b: Block = fb.block
    return {"height": b.height, "digest": b.digest, "view": b.view, "parent": b.parent,
            "proposer": b.proposer, "executed_height": b.executed_height,
            "state_root": b.state_root, "commands": len(b.commands), "block": b.encode(),
            "finalization": _cert_bytes(fb.finalization),
            "notarization": _cert_bytes(fb.notarization),
            "votes": [encode(v.to_wire()) for v in fb.votes], "checkpoint": fb.checkpoint}


def _read_blocks(s: Store, start: int, limit: int) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    used = 0
    stop = min(s.height, start + limit - 1)
    for fb in s.iter_finalized(start, stop) if start <= stop else ():
        item = _block_view(fb)
        used += len(encode(item))
        if out and used > MAX_PAGE_BYTES:
            break
        out.append(item)
    return {"head": s.height, "next": start + len(out), "blocks": out}


def _entry_view(index: int, leaf: bytes) -> dict[str, Any]:
    _, _, _epoch, height, block_digest, position, command = decode(leaf)
    return {"index": index, "height": height, "block": block_digest, "position": position,
            "command": command, "leaf": leaf}


def _read_entries(s: Store, start: int, limit: int, size: int | None) -> dict[str, Any]:
    end = s.size if size is None else size
    stop = min(end, start + limit)
    out: list[dict[str, Any]] = []
    used = 0
    for index in range(start, stop):
        item = _entry_view(index, s.entry(index))
        if size is not None:
            item["proof"] = s.inclusion_proof(index, size)
        used += len(encode(item))
        if out and used > MAX_PAGE_BYTES:
            break
        out.append(item)
    return {"size": s.size, "proof_size": size, "next": start + len(out), "entries": out}


def _check_tree_size(s: Store, name: str, size: int) -> None:
    if size > s.size:
        raise HttpError(404, f"{name}: no tree of size {size} (the log has {s.size} entries)")


def _read_inclusion(s: Store, index: int, size: int | None) -> dict[str, Any]:
    size = s.size if size is None else size
    _check_tree_size(s, "size", size)
    if index >= size:
        raise ValueError(f"index: must be below size {size}, got {index}")
    return {"index": index, "size": size, "leaf": s.entry(index),
            "proof": s.inclusion_proof(index, size), "root": s.root(size)}


def _read_consistency(s: Store, old: int, new: int | None) -> dict[str, Any]:
    new = s.size if new is None else new
    _check_tree_size(s, "new", new)
    if old > new:
        raise ValueError(f"old: must be at most new ({new}), got {old}")
    return {"old": old, "new": new, "proof": s.consistency_proof(old, new),
            "old_root": s.root(old), "new_root": s.root(new)}


def _read_evidence(s: Store, start: int, limit: int) -> dict[str, Any]:
    page = s.evidence(start, limit)
    return {"count": s.evidence_count(), "next": start + len(page), "evidence": [
        {"member": e.member, "epoch": e.epoch, "view": e.view, "kind": e.kind,
         "body": e.body} for e in page]}


def _find_certifying(s: Store, root: bytes, low: int, high: int) -> dict[str, Any] | None:
    """The highest stored block in low..high whose state_root is `root`, certified."""
    for h in range(min(high, s.height), max(low, 1) - 1, -1):
        if s.block(h).state_root == root:
            certified = _certified(s, h)
            if certified is not None:
                return certified
    return None


def _scan_new(s: Store, *, root: bytes, low: int, high: int) -> dict[str, Any] | None:
    return _find_certifying(s, root, max(low, high - MAX_CERTIFY_SCAN + 1), high)


# ---------------------------------------------------------------------------------------
# The API


class ReadApi:
    def __init__(self, source: ReadSource) -> None:
        self.source = source

    def install(self, app: OpsApp) -> OpsApp:
        app.add_route("/v1/status", self.status)
        app.add_route("/v1/checkpoint", self.checkpoint)
        app.add_route("/v1/blocks", self.blocks)
        app.add_route("/v1/entries", self.entries)
        app.add_route("/v1/proof/inclusion", self.inclusion)
        app.add_route("/v1/proof/consistency", self.consistency)
        app.add_route("/v1/evidence", self.evidence)
        app.add_prefix_route("/v1/state/", self.state)
        return app

    async def _store(self, fn: Callable[[Store], T]) -> T:
        try:
            return await self.source.store.run(fn)
        except BelowBase as e:  # a state-synced member: history below its base is elsewhere
            raise HttpError(410, str(e)) from None
        except StoreUsageError as e:  # something absent the parameters named
            raise HttpError(404, str(e)) from None

    async def status(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, set())
        src = self.source
        c = src.committee
        executor = {"executed_height": src.executor.executed_height,
                    "state_root": src.executor.state_root()}
        height, size, root = await self._store(lambda s: (s.height, s.size, s.root()))
        return data_response({
            "api": API_VERSION,
            "committee": {"id": c.committee_id, "network": c.network_name,
                          "component_kind": c.component_kind,
                          "component_name": c.component_name, "epoch": c.epoch, "n": c.n,
                          "quorum": c.quorum, "members": list(c.members)},
            "member": src.status(), "ready": src.ready(), "diverged": src.diverged(),
            "log": {"height": height, "size": size, "root": root}, "executor": executor,
        }, p.format)

    async def checkpoint(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, {"height"})
        height = p.uint("height", lo=1) if "height" in query else None
        return data_response(await self._store(lambda s: _read_checkpoint(s, height)),
                             p.format)

    async def blocks(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, {"from", "limit"})
        start, limit = p.uint("from", 1, lo=1), p.limit(MAX_BLOCKS_PER_PAGE)
        return data_response(await self._store(lambda s: _read_blocks(s, start, limit)),
                             p.format)

    async def entries(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, {"from", "limit", "size"})
        start, limit = p.uint("from", 0), p.limit(MAX_ENTRIES_PER_PAGE)
        size = p.uint("size", lo=1) if "size" in query else None

        def read(s: Store) -> dict[str, Any]:
            if size is not None:
                _check_tree_size(s, "size", size)
            return _read_entries(s, start, limit, size)

        return data_response(await self._store(read), p.format)

    async def inclusion(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, {"index", "size"})
        index = p.uint("index")
        size = p.uint("size", lo=1) if "size" in query else None
        return data_response(await self._store(lambda s: _read_inclusion(s, index, size)),
                             p.format)

    async def consistency(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, {"old", "new"})
        old = p.uint("old")
        new = p.uint("new") if "new" in query else None
        return data_response(await self._store(lambda s: _read_consistency(s, old, new)),
                             p.format)

    async def evidence(self, query: Mapping[str, str]) -> Response:
        p = _Params(query, {"from", "limit"})
        start, limit = p.uint("from", 0), p.limit(MAX_EVIDENCE_PER_PAGE)
        return data_response(await self._store(lambda s: _read_evidence(s, start, limit)),
                             p.format)

    async def state(self, name: str, query: Mapping[str, str]) -> Response:
        if not _QUERY_NAME.fullmatch(name):
            raise ValueError(f"query name {name[:64]!r}: must match [a-z0-9][a-z0-9_.:-]*")
        fmt = query.get("format", "json")
        if fmt not in ("json", "cbor"):
            raise ValueError(f"format: must be json or cbor, got {fmt[:32]!r}")
        wait = _Params({"wait": query.get("wait", "0")}, {"wait"}).flag("wait")
        args = parse_state_args(query)
        src = self.source
        diverged = src.diverged()
        if diverged is not None:
            raise HttpError(503, f"state diverged: {diverged}; this member serves no state "
                            "reads until an operator has looked")
        # One synchronous read of the executor: a consistent snapshot (see module doc).
        ex = src.executor
        try:
            result = encode(ex.query(name, args))
        except QueryNotFound as e:
            raise HttpError(404, str(e)) from None
        except QueryError as e:  # the component's message names the query and argument
            raise ValueError(str(e)) from None
        if len(result) > MAX_STATE_RESULT_BYTES:
            raise HttpError(413, f"{name}: result of {len(result)} bytes exceeds "
                            f"{MAX_STATE_RESULT_BYTES}; ask for less")
        executed_height = ex.executed_height
        component_root = ex.component.state_root()
        reply: dict[str, Any] = {
            "query": name, "args": args, "result": decode(result),
            "executed_height": executed_height, "executor_root": ex.state_root(),
            "component_signature": ex.component.signature, "dedup_root": ex.dedup.root(),
            "component_root": component_root,
        }
        if ex.follow_almanac is not None:
            reply["stamp"] = None if ex.stamp is None else ex.stamp.to_wire()
        reply["certified"] = await self._certify(reply["executor_root"], executed_height, wait)
        return data_response(reply, fmt)

    async def _certify(self, root: bytes, executed_height: int, wait: bool
                       ) -> dict[str, Any] | None:
        """A finalised block whose state_root is `root` (with its finalization), if the
        member holds one: searched back from the head, then (with `wait`) in the blocks
        finalised during the next MAX_CERTIFY_WAIT_S."""
        assert len(root) == HASH_LEN
        src = self.source
        head = await self._store(lambda s: s.height)
        found = await self._store(lambda s: _find_certifying(
            s, root, head - MAX_CERTIFY_SCAN + 1, head))
        if found is not None or not wait or src.progress is None or executed_height == 0:
            return found
        progress = src.progress
        with trio.move_on_after(MAX_CERTIFY_WAIT_S):
            while found is None:
                await progress()
                low, head = head + 1, await self._store(lambda s: s.height)
                found = await self._store(partial(_scan_new, root=root, low=low, high=head))
        return found
