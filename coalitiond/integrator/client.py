"""The integrator client of the HTTP read API (docs/api.md): fetch, then verify.

    committee = load_config(path, check_key=False).committee_spec()
    with CoalitionClient("http://127.0.0.1:9100", committee) as client:
        cp = client.checkpoint()               # note signed by a member + quorum certificate
        entries = client.entries(0, 10, cp)    # proven in cp's tree, certified by their blocks
        read = client.state("entry", {"index": 0})   # rebuilt from a proven, certified leaf

It trusts nothing but the `CommitteeSpec`: every answer is checked against the committee's
member keys and quorum, with `coalitiond.verify` (RFC 6962 proofs, signed notes), the
certificate checks of `coalitiond.node.client` and `check_state_proof`. Anything that does
not verify raises a `VerificationFailed` subclass (a `RemoteError`) naming what failed;
a member's refusal (HTTP 4xx/5xx) raises `ApiError` with the member's message.

What rests on one member's signature only (docs/api.md §3): a checkpoint's tree (size,
root), hence log indices. Log entries are each checked against their quorum-finalised block,
so their contents never rest on it. State reads return what their proof proves
(`PROVEN_READS`); reads without a proof are refused unless `allow_unproven=True`.

Every operation is written once, as a generator that yields the requests it needs and
receives the decoded answers; `CoalitionClient` (sync, httpx) and `AsyncCoalitionClient`
(async, httpx on trio or asyncio) only move the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx

from ..components.almanac.component import AlmanacTick
from ..components.atlas.component import CardRecord, CitizenCard
from ..components.base import BadStateProof, check_state_proof
from ..components.chronicle.records import ChronicleAnchor, ChronicleEntry
from ..components.feed.component import FeedEntry
from ..components.tickets.component import Ticket, TicketRecord
from ..consensus.evidence import Evidence
from ..consensus.types import Block, Certificate, InvalidCertificate, Vote, VoteKind
from ..log.chain import ChainVerifier, check_certificate
from ..log.checkpoint import Checkpoint, CheckpointError, key_name, split_note, verify_checkpoint
from ..log.records import FinalizedBlock, entry_leaf
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError, RemoteError
from ..primitives.identity import hash_structure
from ..verify import verify_consistency, verify_inclusion

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


class UnprovenRead(VerificationFailed):
    """A state read that carries no state proof: its result would be the member's word.
    Refused unless the caller passes `allow_unproven=True` (then `StateRead.proven` is
    False)."""


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
    """One log entry: the leaf bytes and what they say (docs/formats.md). The leaf is
    `entry_leaf` of the final block at `height`; `index` is its place in the checkpoint
    signer's tree (that signer's word)."""

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
    """A component read.

    `proven` reads (the proof-carrying reads of `PROVEN_READS`): `result` is rebuilt by the
    client from `proven_leaf`, the leaf the state proof proves, after checking that the leaf
    is the item the read asked for, in the tree the read is about; the member's own `result`
    must agree with it field by field. `unproven_fields` holds the member's extra fields the
    proof does not cover (e.g. compute `provider`'s `remaining`): its word, kept apart.
    Unproven reads (`allow_unproven=True` only): `result` is the member's word, `proven_leaf`
    None.

    `certified_by` is the finalised block whose state_root is `executor_root`, and
    `certified_height` its executed_height: the state read is the committee's state at that
    height (the root does not depend on the height, so it is also the state at
    `executed_height` when the member is further on with nothing changed)."""

    result: Any
    proven_leaf: bytes | None
    executed_height: int
    executor_root: bytes
    component_root: bytes
    certified_by: Block | None
    certified_height: int | None
    proven: bool = False
    unproven_fields: Mapping[str, Any] = field(default_factory=dict)


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
# Proof-carrying reads: what each one proves, and how to tie its proof to what was asked


class _NotAnItem(Exception):
    """A proven leaf that does not decode as the item its read is about."""


@dataclass(frozen=True, slots=True)
class ProvenRead:
    """How the client checks one proof-carrying read `(component signature, query)`.

    The state proof's `root_preimage` must be `[state_type, 1, ...]` with the proof's
    `tree_root` at `tree_at` (the tree this read is about: Chronicle has an entry tree and an
    anchor tree) and the proof's `size` at `size_at` (that tree's leaf count). `leaf` decodes
    the proven leaf into (its key, the item as the component's read shows it); the key must
    equal `asked(args)`, and for index-keyed trees the proof's leaf index must be
    `index(key)`. The result the client returns is `{item: <decoded item>, **derived(leaf,
    proof), "state_proof": proof}`; the member's result may hold those fields (they must then
    be equal) and the `unproven` ones (the member's word, returned apart), nothing else."""

    item: str
    state_type: str
    tree_at: int
    size_at: int
    asked: Callable[[Mapping[str, Any]], Any]
    leaf: Callable[[bytes], tuple[Any, Any]]
    index: Callable[[Any], int] | None = None
    derived: Callable[[bytes, Mapping[str, Any]], dict[str, Any]] = lambda leaf, proof: {}
    unproven: frozenset[str] = frozenset()


def _list(obj: Any, n: int, tag: str | None = None) -> list[Any]:
    if not (isinstance(obj, list) and len(obj) == n and (tag is None or obj[0] == tag)):
        raise _NotAnItem(f"expected a {n}-item array" + (f" tagged {tag!r}" if tag else ""))
    return obj


def _feed_entry(leaf: bytes) -> tuple[Any, Any]:
    row = _list(decode(leaf), 9, "feed-entry")
    return row[2], FeedEntry(*row[2:]).as_read()


def _atlas_card(leaf: bytes) -> tuple[Any, Any]:
    key, record = _list(decode(leaf), 2)
    _, _, card, retired, replacement, height, tick = _list(record, 7, "atlas-record")
    parsed = CitizenCard.from_wire(card)
    if parsed.citizen_id != key:
        raise _NotAnItem("the card is not the leaf key's")
    return key, CardRecord(parsed, retired, replacement, height, tick).as_read()


def _ticket(leaf: bytes) -> tuple[Any, Any]:
    key, record = _list(decode(leaf), 2)
    _, _, wire, issuer, issued, envelope_id, revoked = _list(record, 7, "ticket-record")
    _, _, ticket_class, subject, claims, not_before, expires = _list(wire, 7, "ticket")
    ticket = Ticket(ticket_class, subject, encode(claims), not_before, expires)
    if ticket.ticket_id != key:
        raise _NotAnItem("the ticket is not the leaf key's")
    return key, TicketRecord(ticket, issuer, issued, envelope_id, revoked).as_read()


def _almanac_tick(leaf: bytes) -> tuple[Any, Any]:
    tick = AlmanacTick.decode(leaf)
    return tick.seq, tick.as_read()


def _chronicle_entry(leaf: bytes) -> tuple[Any, Any]:
    entry = ChronicleEntry.decode(leaf)
    return entry.seq, entry.as_read()


def _chronicle_anchor(leaf: bytes) -> tuple[Any, Any]:
    anchor = ChronicleAnchor.decode(leaf)
    return anchor.upto_seq, anchor.as_read()


def _map_value(leaf: bytes) -> tuple[Any, Any]:
    """Map components: the leaf is `encode([key, value])`, the read shows `value` as is."""
    key, value = _list(decode(leaf), 2)
    return key, value


def _compute_key(kind: str, arg: str) -> Callable[[Mapping[str, Any]], Any]:
    # Compute's state keys are `encode([kind, id])` (components/compute/component.py `_key`).
    return lambda args: encode([kind, args.get(arg)])


def _encoded(leaf: bytes, proof: Mapping[str, Any]) -> dict[str, Any]:
    return {"encoded": leaf}


def _feed_derived(leaf: bytes, proof: Mapping[str, Any]) -> dict[str, Any]:
    return {"encoded": leaf, "tree_size": proof["size"], "tree_root": proof["tree_root"],
            "proof": proof["path"]}


def _compute(kind: str, arg: str, unproven: frozenset[str] = frozenset()) -> ProvenRead:
    return ProvenRead(kind, "compute-state", 3, 2, _compute_key(kind, arg), _map_value,
                      unproven=unproven)


#: Every proof-carrying read the client knows, by (component signature, query name). A read
#: with a state proof that is not listed here is refused as unverifiable (the client cannot
#: tell which item, in which tree, the proof is about). Preimages: components/*.py
#: `_root_preimage`.
PROVEN_READS: Final[Mapping[tuple[str, str], ProvenRead]] = {
    # ["feed-state", 1, count, tree_root]
    ("feed/1", "entry"): ProvenRead("entry", "feed-state", 3, 2, lambda a: a.get("index"),
                                    _feed_entry, index=lambda seq: int(seq),
                                    derived=_feed_derived),
    # ["atlas-state", 1, card_count, change_count, tree_root]
    ("atlas/1", "card"): ProvenRead("record", "atlas-state", 4, 2,
                                    lambda a: a.get("citizen_id"), _atlas_card,
                                    derived=lambda leaf, proof: {"leaf": leaf}),
    # ["tickets-state", 1, count, revoked, events, tree_root]
    ("tickets/1", "ticket"): ProvenRead("record", "tickets-state", 5, 2,
                                        lambda a: a.get("ticket_id"), _ticket,
                                        derived=lambda leaf, proof: {"leaf": leaf}),
    # ["almanac-state", 1, latest_seq, tree_root]: tick `seq` is leaf `seq - 1`
    ("almanac/1", "tick"): ProvenRead("tick", "almanac-state", 3, 2, lambda a: a.get("seq"),
                                      _almanac_tick, index=lambda seq: int(seq) - 1,
                                      derived=_encoded),
    # ["chronicle-state", 1, entry_count, entry_root, anchor_count, anchor_root]
    ("chronicle/1", "entry"): ProvenRead("entry", "chronicle-state", 3, 2,
                                         lambda a: a.get("seq"), _chronicle_entry,
                                         index=lambda seq: int(seq), derived=_encoded),
    ("chronicle/1", "anchor"): ProvenRead("anchor", "chronicle-state", 5, 4,
                                          lambda a: a.get("upto_seq"), _chronicle_anchor,
                                          derived=_encoded),
    # ["compute-state", 1, leaf_count, tree_root, next_request_seq, next_grant_seq, entries]
    ("compute/1", "provider"): _compute("provider", "provider_id",
                                        frozenset({"remaining", "live_grants"})),
    ("compute/1", "request"): _compute("request", "request_id"),
    ("compute/1", "grant"): _compute("grant", "request_id"),
}


def _show(value: Any) -> str:
    return value.hex()[:32] if isinstance(value, bytes) else repr(value)[:64]


def _same(a: Any, b: Any) -> bool:
    """Equal as CBOR values (a list and a tuple holding the same items are equal)."""
    try:
        return encode(a) == encode(b)
    except EncodingError:
        return False


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
            check_certificate(self.committee, cert, VoteKind.FINALIZE, last)
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
        """The entries of a page, each proven in the checkpoint's tree. Their contents are
        not trusted yet: `certify_entries` checks them against their certified blocks."""
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
                and isinstance(command, bytes) and not isinstance(height, bool)
                and not isinstance(position, bool) and position >= 0):
            raise MalformedResponse(f"{w}: leaf fields have the wrong types or epoch")
        if not 1 <= height <= cp.height:
            raise BadInclusionProof(f"{w}: names block {height}, outside the checkpoint's "
                                    f"blocks 1..{cp.height}")
        return LogEntry(index, height, digest, position, command, leaf)

    @staticmethod
    def certify_entries(entries: list[LogEntry], blocks: Mapping[int, Block]) -> None:
        """Each entry must be `entry_leaf(block, position)` of the final block at its height
        (so its command is one the committee finalised, whatever the note's signer says),
        and consecutive entries must be consecutive commands of those blocks (no command
        left out or repeated inside the page)."""
        previous: LogEntry | None = None
        for e in entries:
            w = f"entry {e.index}"
            block = blocks.get(e.height)
            if block is None:
                raise BadInclusionProof(f"{w}: its block {e.height} was not shown final")
            if not (e.block_digest == block.digest and e.position < len(block.commands)
                    and e.leaf == entry_leaf(block, e.position)):
                raise BadInclusionProof(f"{w}: is not command {e.position} of the certified "
                                        f"block {e.height}")
            if previous is not None:
                if e.height == previous.height:
                    follows = e.position == previous.position + 1
                else:
                    skipped = range(previous.height + 1, e.height)
                    follows = (e.height > previous.height and e.position == 0
                               and previous.position == len(blocks[previous.height].commands)
                               - 1 and all(h in blocks and not blocks[h].commands
                                           for h in skipped))
                if not follows:
                    raise BadInclusionProof(f"{w}: does not follow entry {previous.index} in "
                                            "the certified blocks (an entry left out or "
                                            "repeated)")
            previous = e

    def blocks(self, obj: Any, start: int, after: Block | None) -> BlockPage:
        what = "blocks"
        items = _field(obj, "blocks", list, what)
        head = _uint(obj, "head", what)
        if items and _uint(items[0], "height", what) != start:
            raise BadBlocks(f"{what}: the page starts at height {items[0]['height']}, not at "
                            f"the {start} asked")
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

    def state(self, obj: Any, name: str, args: Mapping[str, Any], allow_uncertified: bool,
              allow_unproven: bool) -> StateRead:
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
        proof = result.get("state_proof") if isinstance(result, dict) else None
        spec = PROVEN_READS.get((signature, name))
        proven: bytes | None = None
        unproven: dict[str, Any] = {}
        if spec is not None:
            if proof is None:
                raise BadStateRead(f"{what}: a {signature} {name!r} read must carry a state "
                                   "proof")
            result, proven, unproven = self.proven(spec, result, proof, component_root, args,
                                                   what)
        elif proof is not None:
            raise BadStateRead(f"{what}: unverifiable: the client does not know what a "
                               f"{signature} {name!r} proof proves")
        elif not allow_unproven:
            raise UnprovenRead(f"{what}: carries no state proof, so its result is the "
                               "member's word (pass allow_unproven=True to accept it as such)")
        certified = obj.get("certified")
        if certified is None:
            if not allow_uncertified:
                raise UncertifiedState(f"{what}: the member holds no finalised block that "
                                       f"certifies executor root {executor_root.hex()[:16]}")
            return StateRead(result, proven, executed_height, executor_root, component_root,
                             None, None, spec is not None, unproven)
        block = _decode_block(_field(certified, "block", bytes, what), what)
        self.finalized(block, _field(certified, "chain", list, what),
                       _field(certified, "finalization", bytes, what), what)
        if block.state_root != executor_root:
            raise BadStateRead(f"{what}: the certified block {block.height} commits to "
                               f"another state root")
        return StateRead(result, proven, executed_height, executor_root, component_root,
                         block, block.executed_height, spec is not None, unproven)

    @staticmethod
    def proven(spec: ProvenRead, result: dict[str, Any], proof: Any, component_root: bytes,
               args: Mapping[str, Any], what: str
               ) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
        """(the result rebuilt from the proven leaf, the leaf, the member's unproven extra
        fields) — after checking the leaf is the asked item, in the read's own tree."""
        try:
            leaf = check_state_proof(proof, component_root)
        except BadStateProof as e:
            raise BadStateRead(f"{what}: {e}") from None
        pre = proof["root_preimage"]
        if not (pre[0] == spec.state_type and pre[1] == 1 and len(pre) > spec.tree_at
                and len(pre) > spec.size_at and pre[spec.tree_at] == proof["tree_root"]):
            raise BadStateRead(f"{what}: the proof is not for the {spec.item} tree of "
                               f"{spec.state_type} (root preimage position {spec.tree_at})")
        if pre[spec.size_at] != proof["size"]:
            raise BadStateRead(f"{what}: the proof's tree size {proof['size']} is not the "
                               f"{pre[spec.size_at]!r} items of the state")
        try:
            key, item = spec.leaf(leaf)
        except (_NotAnItem, EncodingError, RemoteError, TypeError, ValueError) as e:
            raise BadStateRead(f"{what}: the proven leaf is not a {spec.item}: {e}") from None
        asked = spec.asked(args)
        if not _same(key, asked):
            raise BadStateRead(f"{what}: the proof is for {spec.item} {_show(key)}, not the "
                               f"{_show(asked)} asked")
        if spec.index is not None and proof["index"] != spec.index(key):
            raise BadStateRead(f"{what}: the proven leaf sits at index {proof['index']}, "
                               f"{spec.item} {_show(key)} is at {spec.index(key)}")
        rebuilt = {spec.item: item, **spec.derived(leaf, proof), "state_proof": proof}
        unproven: dict[str, Any] = {}
        for name in sorted(result):
            if name in spec.unproven:
                unproven[name] = result[name]
            elif name not in rebuilt:
                raise BadStateRead(f"{what}: result field {name!r} is not covered by the proof")
            elif not _same(result[name], rebuilt[name]):
                raise BadStateRead(f"{what}: the result's {name!r} is not what the proven "
                                   "leaf says")
        return rebuilt, leaf, unproven

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
        leaf = _field(obj, "leaf", bytes, w)
        if not verify_inclusion(leaf, index, cp.size, _hashes(obj, "proof", w), cp.root):
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
        proof = _hashes(obj, "proof", "consistency")
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
              allow_uncertified: bool = False, allow_unproven: bool = False) -> StateRead:
        return self._run(self.state_op(name, args or {}, wait, allow_uncertified,
                                       allow_unproven))

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
                    wait: bool = True, allow_uncertified: bool = False,
                    allow_unproven: bool = False) -> StateRead:
        return await self._run(self.state_op(name, args or {}, wait, allow_uncertified,
                                             allow_unproven))

    async def evidence(self, start: int = 0, limit: int | None = None) -> list[Evidence]:
        return await self._run(self.evidence_op(start, limit))


__all__ = [
    "PROVEN_READS", "ApiError", "AsyncCoalitionClient", "BadBlocks", "BadCertificate",
    "BadCheckpoint", "BadConsistencyProof", "BadEvidence", "BadInclusionProof", "BadStateRead",
    "BlockPage", "CoalitionClient", "LogEntry", "MalformedResponse", "ProvenRead", "StateRead",
    "UncertifiedState", "UnprovenRead", "VerificationFailed", "VerifiedCheckpoint",
]
