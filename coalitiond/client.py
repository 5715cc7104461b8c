"""The integrator client of the HTTP read API (docs/api.md): fetch, then verify.

    committee = load_config(path, check_key=False).committee_spec()
    with CoalitionClient("http://127.0.0.1:9100", committee) as client:
        cp = client.checkpoint()               # note signed by a member + quorum certificate
        entries = client.entries(0, 10, cp)    # each with an inclusion proof against cp.root
        read = client.state("entry", {"index": 0})   # state proof up to a certified root

It trusts nothing but the `CommitteeSpec`: every answer is checked against the committee's
member keys and quorum, with `coalitiond.verify` (RFC 6962 proofs, signed notes), the
certificate checks of `coalitiond.node.client` and `check_state_proof`. Anything that does
not verify raises a `VerificationFailed` subclass (a `RemoteError`) naming what failed;
a member's refusal (HTTP 4xx/5xx) raises `ApiError` with the member's message.

Every operation is written once, as a generator that yields the requests it needs and
receives the decoded answers; `CoalitionClient` (sync, httpx) and `AsyncCoalitionClient`
(async, httpx on trio or asyncio) only move the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx

from .checkpoint import Checkpoint, CheckpointError, key_name, split_note, verify_checkpoint
from .committee import CommitteeSpec
from .components.base import BadStateProof, check_state_proof
from .consensus.evidence import Evidence
from .consensus.types import Block, Certificate, InvalidCertificate, Vote, VoteKind
from .encoding import decode, encode
from .errors import EncodingError, LocalError, RemoteError
from .identity import hash_structure
from .node.client import ChainVerifier, _check_certificate
from .store.records import FinalizedBlock, entry_leaf
from .verify import verify_consistency, verify_inclusion

#: Bytes of one response body at most (the server's pages stay well below).
MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
DEFAULT_TIMEOUT_S: Final = 30.0
#: Blocks linking a certified block to the descendant whose finalization covers it.
MAX_CHAIN: Final = 64


class ApiError(RemoteError):
    """The member answered with an HTTP error; `status` and the member's one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class VerificationFailed(RemoteError):
    """Something the member sent does not verify against the committee."""


class MalformedResponse(VerificationFailed):
    """A response that does not have the documented shape."""


class BadCheckpoint(VerificationFailed):
    """A checkpoint note without a valid member signature, or not for this committee."""


class BadCertificate(VerificationFailed):
    """A finalization that is not a quorum of valid member signatures over the block."""


class BadInclusionProof(VerificationFailed):
    """An entry whose inclusion proof does not lead to the checkpoint's root."""


class BadConsistencyProof(VerificationFailed):
    """Two checkpoints whose trees the consistency proof does not connect."""


class BadBlocks(VerificationFailed):
    """Blocks that do not chain, or carry votes or notes that do not verify."""


class BadStateRead(VerificationFailed):
    """A state read whose proof or executor-root pieces do not verify."""


class UncertifiedState(VerificationFailed):
    """The member holds no certified block committing to the state it read (yet)."""


class BadEvidence(VerificationFailed):
    """An evidence record that does not prove the misbehaviour it names."""


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint signed by `signers` (member indices) whose block a quorum finalised."""

    checkpoint: Checkpoint
    note: str
    signers: tuple[int, ...]
    block: Block
    finalization: Certificate

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    @property
    def height(self) -> int:
        return self.checkpoint.height


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One verified log entry: the leaf bytes and what they say (docs/formats.md)."""

    index: int
    height: int
    block_digest: bytes
    position: int
    command: bytes
    leaf: bytes


@dataclass(frozen=True, slots=True)
class BlockPage:
    """Blocks proven final, in height order; `next` is where to continue (blocks after the
    last finalization in the page are fetched again from there)."""

    blocks: tuple[FinalizedBlock, ...]
    next: int
    head: int


@dataclass(frozen=True, slots=True)
class StateRead:
    """A component read. `proven_leaf` is the state-proof leaf (None for reads without a
    proof); `certified_by` the finalised block whose state_root is `executor_root`, and
    `certified_height` its executed_height: the state read is the committee's state at
    that height (the root does not depend on the height, so it is also the state at
    `executed_height` when the member is further on with nothing changed)."""

    result: Any
    proven_leaf: bytes | None
    executed_height: int
    executor_root: bytes
    component_root: bytes
    certified_by: Block | None
    certified_height: int | None


Request = tuple[str, dict[str, str]]
R = TypeVar("R")
Op = Generator[Request, Any, R]


# ---------------------------------------------------------------------------------------
# Shape checks of decoded responses


def _field(obj: Any, name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise MalformedResponse(f"{what}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise MalformedResponse(f"{what}: field {name!r} has the wrong type")
    return value


def _uint(obj: Any, name: str, what: str) -> int:
    value: int = _field(obj, name, int, what)
    if value < 0:
        raise MalformedResponse(f"{what}: field {name!r} must be unsigned")
    return value


def _hashes(obj: Any, name: str, what: str) -> list[bytes]:
    value = _field(obj, name, list, what)
    if not all(isinstance(h, bytes) and len(h) == 32 for h in value):
        raise MalformedResponse(f"{what}: {name!r} must be a list of 32-byte hashes")
    return list(value)


def _decode_block(data: Any, what: str) -> Block:
    if not isinstance(data, bytes):
        raise MalformedResponse(f"{what}: block must be bytes")
    try:
        return Block.decode(data)
    except RemoteError as e:
        raise MalformedResponse(f"{what}: block does not decode: {e}") from None


def _decode_certificate(data: Any, what: str) -> Certificate:
    if not isinstance(data, bytes):
        raise MalformedResponse(f"{what}: certificate must be bytes")
    try:
        return Certificate.decode(data)
    except (RemoteError, ValueError) as e:
        raise MalformedResponse(f"{what}: certificate does not decode: {e}") from None


# ---------------------------------------------------------------------------------------
# Verification (pure; the committee is the only trust anchor)


class _Verifier:
    def __init__(self, committee: CommitteeSpec) -> None:
        self.committee = committee

    def note(self, note: Any, what: str) -> tuple[Checkpoint, tuple[int, ...]]:
        """The checkpoint of a note signed by at least one member of the committee."""
        if not isinstance(note, str):
            raise MalformedResponse(f"{what}: note must be text")
        c = self.committee
        try:
            text, sigs = split_note(note)
            cp = Checkpoint.parse_text(text)
        except CheckpointError as e:
            raise BadCheckpoint(f"{what}: {e}") from None
        if cp.committee_id != c.committee_id or cp.epoch != c.epoch:
            raise BadCheckpoint(f"{what}: checkpoint of committee {cp.committee_id.hex()[:16]} "
                                f"epoch {cp.epoch}, expected {c.committee_id.hex()[:16]} "
                                f"epoch {c.epoch}")
        names = {sig.name for sig in sigs}
        signers = []
        for index, member in enumerate(c.members):
            if key_name(cp.origin, member) not in names:
                continue
            try:
                verify_checkpoint(note, member)
            except CheckpointError as e:
                raise BadCheckpoint(f"{what}: member {index}: {e}") from None
            signers.append(index)
        if not signers:
            raise BadCheckpoint(f"{what}: the note carries no signature of a committee member")
        return cp, tuple(signers)

    def finalized(self, block: Block, chain_raw: Any, cert_raw: Any, what: str) -> Certificate:
        """Check `block` final: `chain_raw` (encoded blocks) links it to the block that the
        finalization `cert_raw` certifies (itself when the chain is empty)."""
        if block.epoch != self.committee.epoch:
            raise BadCertificate(f"{what}: block of epoch {block.epoch}, committee epoch "
                                 f"{self.committee.epoch}")
        if not (isinstance(chain_raw, list) and len(chain_raw) <= MAX_CHAIN):
            raise MalformedResponse(f"{what}: chain must be a list of at most {MAX_CHAIN} "
                                    "blocks")
        last = block
        for raw in chain_raw:
            nxt = _decode_block(raw, what)
            if nxt.parent != last.digest or nxt.height != last.height + 1:
                raise BadCertificate(f"{what}: chain block {nxt.height} does not link to "
                                     f"block {last.height}")
            last = nxt
        cert = _decode_certificate(cert_raw, what)
        try:
            _check_certificate(self.committee, cert, VoteKind.FINALIZE, last)
        except RemoteError as e:
            raise BadCertificate(f"{what}: finalization of height {last.height}: {e}") from None
        return cert

    def checkpoint(self, obj: Any) -> VerifiedCheckpoint:
        what = "checkpoint"
        cp, signers = self.note(_field(obj, "note", str, what), what)
        block = _decode_block(_field(obj, "block", bytes, what), what)
        if block.digest != cp.block_digest or block.height != cp.height:
            raise BadCheckpoint(f"{what}: the block sent is not the block the note names "
                                f"(height {cp.height})")
        cert = self.finalized(block, _field(obj, "chain", list, what),
                              _field(obj, "finalization", bytes, what), what)
        return VerifiedCheckpoint(cp, obj["note"], signers, block, cert)

    def entries(self, obj: Any, start: int, cp: VerifiedCheckpoint) -> list[LogEntry]:
        what = "entries"
        items = _field(obj, "entries", list, what)
        out = []
        for k, item in enumerate(items):
            index = start + k
            w = f"entry {index}"
            if _uint(item, "index", w) != index:
                raise MalformedResponse(f"{w}: entries are not consecutive from {start}")
            leaf = _field(item, "leaf", bytes, w)
            proof = _hashes(item, "proof", w)
            if not verify_inclusion(leaf, index, cp.size, proof, cp.root):
                raise BadInclusionProof(f"{w}: inclusion proof does not lead to the root of "
                                        f"checkpoint {cp.height} (size {cp.size})")
            out.append(self.entry(index, leaf, cp))
        return out

    def entry(self, index: int, leaf: bytes, cp: VerifiedCheckpoint) -> LogEntry:
        w = f"entry {index}"
        try:
            fields = decode(leaf)
        except EncodingError as e:
            raise MalformedResponse(f"{w}: leaf is not CBOR ({e})") from None
        if not (isinstance(fields, list) and len(fields) == 7 and fields[:2] == ["entry", 1]):
            raise MalformedResponse(f"{w}: leaf is not [\"entry\", 1, ...7 items]")
        _, _, epoch, height, digest, position, command = fields
        if not (epoch == self.committee.epoch and isinstance(height, int)
                and isinstance(digest, bytes) and isinstance(position, int)
                and isinstance(command, bytes)):
            raise MalformedResponse(f"{w}: leaf fields have the wrong types or epoch")
        if height == cp.height and not (position < len(cp.block.commands) and
                                        leaf == entry_leaf(cp.block, position)):
            # The checkpoint's own block is certified: its entries must be exactly its own.
            raise BadInclusionProof(f"{w}: is not command {position} of the certified block "
                                    f"{height}")
        return LogEntry(index, height, digest, position, command, leaf)

    def blocks(self, obj: Any, after: Block | None) -> BlockPage:
        what = "blocks"
        items = _field(obj, "blocks", list, what)
        head = _uint(obj, "head", what)
        chain = ChainVerifier(self.committee, after)
        final: list[FinalizedBlock] = []
        first = None
        for item in items:
            w = f"block {_uint(item, 'height', what)}"
            block = _decode_block(_field(item, "block", bytes, w), w)
            if block.height != item["height"]:
                raise MalformedResponse(f"{w}: the block bytes hold height {block.height}")
            first = block.height if first is None else first
            fin, nota = item.get("finalization"), item.get("notarization")
            raw_votes = _field(item, "votes", list, w)
            votes = []
            for raw in raw_votes:
                try:
                    vote = Vote.from_wire(decode(raw) if isinstance(raw, bytes) else None)
                except RemoteError as e:
                    raise MalformedResponse(f"{w}: a vote does not decode: {e}") from None
                if vote.kind is VoteKind.NULLIFY or (vote.epoch, vote.view, vote.digest) != (
                        block.epoch, block.view, block.digest) or not vote.verify(self.committee):
                    raise BadBlocks(f"{w}: the vote of member {vote.signer} is not a valid vote "
                                    "for this block")
                votes.append(vote)
            note = _field(item, "checkpoint", str, w)
            cp, _ = self.note(note, f"{w} checkpoint")
            if (cp.height, cp.block_digest) != (block.height, block.digest):
                raise BadCheckpoint(f"{w}: its checkpoint names another block")
            fb = FinalizedBlock(
                block, None if fin is None else _decode_certificate(fin, w),
                None if nota is None else _decode_certificate(nota, w), tuple(votes), (), note)
            try:
                final.extend(chain.feed(fb))
            except RemoteError as e:
                cert_failed = isinstance(e, InvalidCertificate) or "certificate" in str(e)
                raise (BadCertificate if cert_failed else BadBlocks)(f"{w}: {e}") from None
        nxt = final[-1].height + 1 if final else (first if first is not None else
                                                   _uint(obj, "next", what))
        return BlockPage(tuple(final), nxt, head)

    def state(self, obj: Any, name: str, allow_uncertified: bool) -> StateRead:
        what = f"state read {name!r}"
        c = self.committee
        signature = _field(obj, "component_signature", str, what)
        if not signature.startswith(c.component_kind + "/"):
            raise BadStateRead(f"{what}: component {signature!r} is not a "
                               f"{c.component_kind!r} component")
        dedup_root = _field(obj, "dedup_root", bytes, what)
        component_root = _field(obj, "component_root", bytes, what)
        executor_root = _field(obj, "executor_root", bytes, what)
        executed_height = _uint(obj, "executed_height", what)
        preimage: list[Any] = [signature, dedup_root, component_root]
        if "stamp" in obj:
            preimage.append(obj["stamp"])
        if hash_structure("executor-state", 1, *preimage) != executor_root:
            raise BadStateRead(f"{what}: the executor-root pieces do not hash to executor_root")
        result = obj.get("result")
        proven: bytes | None = None
        if isinstance(result, dict) and "state_proof" in result:
            try:
                proven = check_state_proof(result["state_proof"], component_root)
            except BadStateProof as e:
                raise BadStateRead(f"{what}: {e}") from None
            if "encoded" in result and result["encoded"] != proven:
                raise BadStateRead(f"{what}: the result's encoded item is not the proven leaf")
        certified = obj.get("certified")
        if certified is None:
            if not allow_uncertified:
                raise UncertifiedState(f"{what}: the member holds no finalised block that "
                                       f"certifies executor root {executor_root.hex()[:16]}")
            return StateRead(result, proven, executed_height, executor_root, component_root,
                             None, None)
        block = _decode_block(_field(certified, "block", bytes, what), what)
        self.finalized(block, _field(certified, "chain", list, what),
                       _field(certified, "finalization", bytes, what), what)
        if block.state_root != executor_root:
            raise BadStateRead(f"{what}: the certified block {block.height} commits to "
                               f"another state root")
        return StateRead(result, proven, executed_height, executor_root, component_root,
                         block, block.executed_height)

    def evidence(self, obj: Any) -> list[Evidence]:
        out = []
        for k, item in enumerate(_field(obj, "evidence", list, "evidence")):
            w = f"evidence record {k}"
            body = _field(item, "body", bytes, w)
            try:
                ev = Evidence.decode(body)
                ev.verify(self.committee)
            except RemoteError as e:
                raise BadEvidence(f"{w}: {e}") from None
            if (ev.member, ev.view) != (_uint(item, "member", w), _uint(item, "view", w)):
                raise BadEvidence(f"{w}: its member/view fields differ from the evidence")
            out.append(ev)
        return out


# ---------------------------------------------------------------------------------------
# Operations: generators of requests, shared by the sync and async clients


class _Operations:
    def __init__(self, committee: CommitteeSpec) -> None:
        self.committee = committee
        self.verify = _Verifier(committee)

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
        return self.verify.entries(obj, start, cp)

    def inclusion_op(self, index: int, cp: VerifiedCheckpoint) -> Op[LogEntry]:
        obj = yield ("/v1/proof/inclusion", {"index": str(index), "size": str(cp.size)})
        w = f"entry {index}"
        leaf = _field(obj, "leaf", bytes, w)
        if not verify_inclusion(leaf, index, cp.size, _hashes(obj, "proof", w), cp.root):
            raise BadInclusionProof(f"{w}: inclusion proof does not lead to the root of "
                                    f"checkpoint {cp.height} (size {cp.size})")
        return self.verify.entry(index, leaf, cp)

    def consistency_op(self, old: VerifiedCheckpoint, new: VerifiedCheckpoint) -> Op[None]:
        if old.size > new.size:
            raise LocalError(f"consistency: old size {old.size} exceeds new size {new.size}")
        obj = yield ("/v1/proof/consistency", {"old": str(old.size), "new": str(new.size)})
        proof = _hashes(obj, "proof", "consistency")
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise BadConsistencyProof(f"consistency: the log of checkpoint {old.height} (size "
                                      f"{old.size}) is not a prefix of checkpoint "
                                      f"{new.height}'s (size {new.size})")

    def blocks_op(self, start: int, limit: int | None, after: Block | None) -> Op[BlockPage]:
        params = {"from": str(start)}
        if limit is not None:
            params["limit"] = str(limit)
        return self.verify.blocks((yield ("/v1/blocks", params)), after)

    def state_op(self, name: str, args: Mapping[str, Any], wait: bool,
                 allow_uncertified: bool) -> Op[StateRead]:
        params = {"wait": "1" if wait else "0"}
        if args:
            params["args"] = encode(dict(args)).hex()
        obj = yield (f"/v1/state/{name}", params)
        return self.verify.state(obj, name, allow_uncertified)

    def evidence_op(self, start: int, limit: int | None) -> Op[list[Evidence]]:
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
              allow_uncertified: bool = False) -> StateRead:
        return self._run(self.state_op(name, args or {}, wait, allow_uncertified))

    def evidence(self, start: int = 0, limit: int | None = None) -> list[Evidence]:
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
                    wait: bool = True, allow_uncertified: bool = False) -> StateRead:
        return await self._run(self.state_op(name, args or {}, wait, allow_uncertified))

    async def evidence(self, start: int = 0, limit: int | None = None) -> list[Evidence]:
        return await self._run(self.evidence_op(start, limit))


__all__ = [
    "ApiError", "AsyncCoalitionClient", "BadBlocks", "BadCertificate", "BadCheckpoint",
    "BadConsistencyProof", "BadEvidence", "BadInclusionProof", "BadStateRead", "BlockPage",
    "CoalitionClient", "LogEntry", "MalformedResponse", "StateRead", "UncertifiedState",
    "VerificationFailed", "VerifiedCheckpoint",
]
