"""The integrator client of the HTTP read API (docs/api.md): fetch, then verify.

    committee = load_config(path, check_key=False).committee_spec()
    with CoalitionClient("http://127.0.0.1:9100", committee) as client:
        cp = client.checkpoint()               # size and root certified by a finalised block
        entries = client.entries(0, 10, cp)    # proven in cp's tree, certified by their blocks
        read = client.state("entry", {"index": 0})   # rebuilt from a proven, certified leaf

It trusts nothing but the `CommitteeSpec`: every answer is checked against the committee's
member keys and quorum, with `coalitiond.verify` (RFC 6962 proofs, signed notes), the
certificate checks of `coalitiond.node.client` and `check_state_proof`. Anything that does
not verify raises a `VerificationFailed` subclass (a `RemoteError`) naming what failed;
a member's refusal (HTTP 4xx/5xx) raises `ApiError` with the member's message.

Nothing rests on one member's signature (docs/api.md §3): a checkpoint's tree (size, root) is
the one a finalised block commits to, so log indices and consistency proofs are the
committee's; log entries are also each checked against their finalised block. A member only
chooses which certified checkpoint it serves. State reads return what their proof proves
(`PROVEN_READS`); reads without a proof are refused unless `allow_unproven=True`.

Every operation is written once, as a generator that yields the requests it needs and
receives the decoded answers; `CoalitionClient` (sync, httpx) and `AsyncCoalitionClient`
(async, httpx on trio or asyncio) only move the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from typing import Any, Final, TypeVar

import httpx

from ..consensus.evidence import Evidence
from ..consensus.root_evidence import WrongRoot
from ..consensus.types import Block
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError
from ..verify import verify_consistency, verify_inclusion
from .answers import (
    ApiError,
    BadBlocks,
    BadConsistencyProof,
    BadInclusionProof,
    BlockPage,
    LogEntry,
    MalformedResponse,
    StateRead,
    VerifiedCheckpoint,
    expect_field,
    expect_hashes,
)
from .verifier import AnswerVerifier

#: Bytes of one response body at most (the server's pages stay well below).
MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
DEFAULT_TIMEOUT_S: Final = 30.0

Request = tuple[str, dict[str, str]]
R = TypeVar("R")
Op = Generator[Request, Any, R]


# ---------------------------------------------------------------------------------------
# Operations: generators of requests, shared by the sync and async clients


class _Operations:
    def __init__(self, committee: CommitteeSpec) -> None:
        self.committee = committee
        self.verify = AnswerVerifier(committee)

    def status_op(self) -> Op[dict[str, Any]]:
        obj = yield ("/v1/status", {})
        if not isinstance(obj, dict):
            raise MalformedResponse("status: expected a map")
        committee = obj.get("committee")
        if not isinstance(committee, dict) or committee.get("id") != self.committee.committee_id:
            raise MalformedResponse("status: the member serves another committee")
        return obj

    def checkpoint_op(self, height: int | None) -> Op[VerifiedCheckpoint]:
        params = {} if height is None else {"height": str(height)}
        return self.verify.checkpoint((yield ("/v1/checkpoint", params)))

    def entries_op(self, start: int, limit: int, cp: VerifiedCheckpoint | None
                   ) -> Op[list[LogEntry]]:
        if cp is None:
            cp = yield from self.checkpoint_op(None)
        obj = yield ("/v1/entries", {"from": str(start), "limit": str(limit),
                                      "size": str(cp.size)})
        entries = self.verify.entries(obj, start, cp)
        blocks = yield from self.final_blocks_op({e.height for e in entries}, cp)
        self.verify.certify_entries(entries, blocks)
        return entries

    def final_blocks_op(self, heights: set[int], cp: VerifiedCheckpoint
                        ) -> Op[dict[int, Block]]:
        """The final blocks from the lowest to the highest of `heights` (all at most
        `cp.height`), each shown final by a quorum (`/v1/blocks`, `ChainVerifier`)."""
        found = {cp.height: cp.block}
        missing = sorted(h for h in heights if h not in found)
        if not missing:
            return found
        start, high, after = missing[0], missing[-1], None
        while start <= high:
            page = yield from self.blocks_op(start, None, after)
            if not page.blocks:
                raise BadBlocks(f"blocks: the member shows no final block from height {start} "
                                f"(head {page.head}), which holds a log entry")
            for fb in page.blocks:
                found[fb.height] = fb.block
            after, start = page.blocks[-1].block, page.next
        return found

    def inclusion_op(self, index: int, cp: VerifiedCheckpoint) -> Op[LogEntry]:
        obj = yield ("/v1/proof/inclusion", {"index": str(index), "size": str(cp.size)})
        w = f"entry {index}"
        leaf = expect_field(obj, "leaf", bytes, w)
        if not verify_inclusion(leaf, index, cp.size, expect_hashes(obj, "proof", w), cp.root):
            raise BadInclusionProof(f"{w}: inclusion proof does not lead to the root of "
                                    f"checkpoint {cp.height} (size {cp.size})")
        entry = self.verify.entry(index, leaf, cp)
        blocks = yield from self.final_blocks_op({entry.height}, cp)
        self.verify.certify_entries([entry], blocks)
        return entry

    def consistency_op(self, old: VerifiedCheckpoint, new: VerifiedCheckpoint) -> Op[None]:
        if old.size > new.size:
            raise LocalError(f"consistency: old size {old.size} exceeds new size {new.size}")
        obj = yield ("/v1/proof/consistency", {"old": str(old.size), "new": str(new.size)})
        proof = expect_hashes(obj, "proof", "consistency")
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise BadConsistencyProof(f"consistency: the log of checkpoint {old.height} (size "
                                      f"{old.size}) is not a prefix of checkpoint "
                                      f"{new.height}'s (size {new.size})")

    def blocks_op(self, start: int, limit: int | None, after: Block | None) -> Op[BlockPage]:
        params = {"from": str(start)}
        if limit is not None:
            params["limit"] = str(limit)
        return self.verify.blocks((yield ("/v1/blocks", params)), start, after)

    def state_op(self, name: str, args: Mapping[str, Any], wait: bool,
                 allow_uncertified: bool, allow_unproven: bool) -> Op[StateRead]:
        params = {"wait": "1" if wait else "0"}
        if args:
            params["args"] = encode(dict(args)).hex()
        obj = yield (f"/v1/state/{name}", params)
        return self.verify.state(obj, name, args, allow_uncertified, allow_unproven)

    def evidence_op(self, start: int, limit: int | None) -> Op[list[Evidence | WrongRoot]]:
        params = {"from": str(start)}
        if limit is not None:
            params["limit"] = str(limit)
        return self.verify.evidence((yield ("/v1/evidence", params)))


def _decode_body(status: int, content_type: str, body: bytes) -> Any:
    if status != 200:
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = body[:200].decode("utf-8", "replace")
        raise ApiError(status, str(message))
    if not content_type.startswith("application/cbor"):
        raise MalformedResponse(f"expected application/cbor, got {content_type[:64]!r}")
    try:
        return decode(body, max_size=MAX_RESPONSE_BYTES)
    except EncodingError as e:
        raise MalformedResponse(f"response is not deterministic CBOR: {e}") from None


def _params(params: dict[str, str]) -> dict[str, str]:
    return {**params, "format": "cbor"}


class CoalitionClient(_Operations):
    """Synchronous client (httpx). `transport` replaces the network (tests, proxies)."""

    def __init__(self, base_url: str, committee: CommitteeSpec, *,
                 transport: httpx.BaseTransport | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(committee)
        self.http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CoalitionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            with self.http.stream("GET", path, params=_params(params)) as r:
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise MalformedResponse(f"response exceeds {MAX_RESPONSE_BYTES} bytes")
                return _decode_body(r.status_code, r.headers.get("content-type", ""),
                                    bytes(body))
        except httpx.HTTPError as e:
            raise ApiError(0, f"{type(e).__name__}: {e}") from None

    def _run(self, op: Op[R]) -> R:
        try:
            request = next(op)
            while True:
                request = op.send(self._get(*request))
        except StopIteration as done:
            result: R = done.value
            return result

    def status(self) -> dict[str, Any]:
        return self._run(self.status_op())

    def checkpoint(self, height: int | None = None) -> VerifiedCheckpoint:
        return self._run(self.checkpoint_op(height))

    def entries(self, start: int, limit: int = 256, checkpoint: VerifiedCheckpoint | None = None
                ) -> list[LogEntry]:
        return self._run(self.entries_op(start, limit, checkpoint))

    def inclusion(self, index: int, checkpoint: VerifiedCheckpoint) -> LogEntry:
        return self._run(self.inclusion_op(index, checkpoint))

    def consistency(self, old: VerifiedCheckpoint, new: VerifiedCheckpoint) -> None:
        self._run(self.consistency_op(old, new))

    def blocks(self, start: int = 1, limit: int | None = None, *,
               after: Block | None = None) -> BlockPage:
        return self._run(self.blocks_op(start, limit, after))

    def state(self, name: str, args: Mapping[str, Any] | None = None, *, wait: bool = True,
              allow_uncertified: bool = False, allow_unproven: bool = False) -> StateRead:
        return self._run(self.state_op(name, args or {}, wait, allow_uncertified,
                                       allow_unproven))

    def evidence(self, start: int = 0, limit: int | None = None) -> list[Evidence | WrongRoot]:
        return self._run(self.evidence_op(start, limit))


class AsyncCoalitionClient(_Operations):
    """The same operations, async (httpx.AsyncClient: trio or asyncio)."""

    def __init__(self, base_url: str, committee: CommitteeSpec, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(committee)
        self.http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncCoalitionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            async with self.http.stream("GET", path, params=_params(params)) as r:
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise MalformedResponse(f"response exceeds {MAX_RESPONSE_BYTES} bytes")
                return _decode_body(r.status_code, r.headers.get("content-type", ""),
                                    bytes(body))
        except httpx.HTTPError as e:
            raise ApiError(0, f"{type(e).__name__}: {e}") from None

    async def _run(self, op: Op[R]) -> R:
        try:
            request = next(op)
            while True:
                request = op.send(await self._get(*request))
        except StopIteration as done:
            result: R = done.value
            return result

    async def status(self) -> dict[str, Any]:
        return await self._run(self.status_op())

    async def checkpoint(self, height: int | None = None) -> VerifiedCheckpoint:
        return await self._run(self.checkpoint_op(height))

    async def entries(self, start: int, limit: int = 256,
                      checkpoint: VerifiedCheckpoint | None = None) -> list[LogEntry]:
        return await self._run(self.entries_op(start, limit, checkpoint))

    async def inclusion(self, index: int, checkpoint: VerifiedCheckpoint) -> LogEntry:
        return await self._run(self.inclusion_op(index, checkpoint))

    async def consistency(self, old: VerifiedCheckpoint, new: VerifiedCheckpoint) -> None:
        await self._run(self.consistency_op(old, new))

    async def blocks(self, start: int = 1, limit: int | None = None, *,
                     after: Block | None = None) -> BlockPage:
        return await self._run(self.blocks_op(start, limit, after))

    async def state(self, name: str, args: Mapping[str, Any] | None = None, *,
                    wait: bool = True, allow_uncertified: bool = False,
                    allow_unproven: bool = False) -> StateRead:
        return await self._run(self.state_op(name, args or {}, wait, allow_uncertified,
                                             allow_unproven))

    async def evidence(self, start: int = 0, limit: int | None = None) -> list[Evidence | WrongRoot]:
        return await self._run(self.evidence_op(start, limit))
