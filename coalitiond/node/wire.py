"""Messages of the client and sync channels (the consensus channel's are in consensus/).

Every message is a deterministic CBOR array `[type, 1, ...]`. The protocols are pull-based:
a reader asks for a bounded run of blocks and asks again, so a slow reader throttles only
itself and a member never queues unbounded history for anyone.

Client channel (any authenticated peer, members and readers):
    ["submit", 1, request_id, envelope]            -> ["submitted", 1, request_id, envelope_id, accepted, reason|null]
                                                      later ["outcome", 1, request_id, height, log_index, [outcome...]]
    ["blocks?", 1, request_id, from_height, max_blocks, wait]
                                                   -> ["blocks", 1, request_id, tip_height, [block record...]]
    ["status?", 1, request_id]                     -> ["status", 1, request_id, {status map}]
    any request may instead be answered           -> ["refused", 1, request_id, reason]
    (e.g. a member whose state diverged serves no reads, docs/protocol.md §7)
Sync channel (members only): the same "blocks?" / "blocks" pair, used by catch-up, and the
state-sync pair (docs/protocol.md §12, node/state_sync.py):
    ["snapshot?", 1, request_id, height, offset]  -> ["snapshot", 1, request_id, height, total,
                                                      offset, log_size, [frontier hash...], chunk]
    (height 0: the newest snapshot the member holds; a chunk is at most 1 MiB)
Gossip channel (members only): ["envelopes", 1, [envelope...]] — submitted envelopes relayed
to every member, a few milliseconds' worth per message, so whichever member leads the next
view can include them; ["observation", 1, bytes] — a member's signed input for a member
command (an Almanac member's clock reading), which the component's driver decodes and checks.

A block record is `FinalizedBlock.to_wire()` (docs/formats.md §2a): each command once, the
entries derived from the block. A reply holds whole records only, up to the block servers'
limit (4 MiB − 64 KiB); every block a committee accepts has a record below it
(docs/protocol.md §10).

`wait` asks the member to hold the request until a block beyond `from_height - 1` exists
(bounded by BLOCKS_WAIT_S), which is how `tail --follow` avoids polling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..consensus.types import MalformedMessage
from ..log.records import FinalizedBlock
from ..primitives.encoding import decode, encode

SCHEMA: Final = 1
#: Blocks per "blocks" reply; the reply must also fit the transport's message limit, which
#: the server enforces by size as it adds blocks.
MAX_BLOCKS_PER_REPLY: Final = 256
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
#: How long a "blocks?" request with wait=true is held before an empty reply.
BLOCKS_WAIT_S: Final = 10.0
MAX_CLIENT_MESSAGE: Final = 9 * 1024 * 1024
#: Envelopes relayed in one gossip message.
MAX_GOSSIP_BATCH: Final = 256
#: A member observation is one small signed record.
MAX_OBSERVATION_BYTES: Final = 4096
#: Bytes of a snapshot file in one "snapshot" reply (state sync pages the file by these).
MAX_SYNC_CHUNK: Final = 1 << 20
#: A snapshot file is at most this long (node/snapshots.py MAX_SNAPSHOT_FILE, repeated here:
#: this module sits below the snapshot code).
MAX_SYNC_TOTAL: Final = (1 << 31) + (1 << 20)
#: Frontier hashes of a tree of at most 2^64 leaves (log/base.py).
MAX_SYNC_FRONTIER: Final = 64


def _uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


@dataclass(frozen=True, slots=True)
class Submit:
    request_id: int
    envelope: bytes


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: int
    envelope_id: bytes
    accepted: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the envelope landed and what became of each of its commands."""

    request_id: int
    height: int
    log_index: int
    outcomes: tuple[Any, ...]  # CommandOutcome wire arrays


@dataclass(frozen=True, slots=True)
class BlocksRequest:
    request_id: int
    from_height: int
    max_blocks: int
    wait: bool


@dataclass(frozen=True, slots=True)
class Blocks:
    request_id: int
    tip_height: int
    blocks: tuple[FinalizedBlock, ...]


@dataclass(frozen=True, slots=True)
class StatusRequest:
    request_id: int


@dataclass(frozen=True, slots=True)
class Status:
    request_id: int
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """The member will not answer this request; `reason` says why, in one line."""

    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Ask for `MAX_SYNC_CHUNK` bytes of the snapshot file at `height` from `offset` (height
    0: the newest snapshot held; the reply names its height)."""

    request_id: int
    height: int
    offset: int


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Bytes `offset .. offset + len(chunk)` of the snapshot file at `height` (`total` bytes
    long), and the sender's log frontier at the snapshot's log size."""

    request_id: int
    height: int
    total: int
    offset: int
    log_size: int
    frontier: tuple[bytes, ...]
    chunk: bytes


@dataclass(frozen=True, slots=True)
class GossipEnvelopes:
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class GossipObservation:
    observation: bytes


Message = (Submit | Submitted | Outcome | BlocksRequest | Blocks | StatusRequest | Status
           | Refused | GossipEnvelopes | GossipObservation | SnapshotRequest | SnapshotChunk)


def encode_message(msg: Message) -> bytes:
    if isinstance(msg, Submit):
        return encode(["submit", SCHEMA, msg.request_id, msg.envelope])
    if isinstance(msg, Submitted):
        return encode(["submitted", SCHEMA, msg.request_id, msg.envelope_id, msg.accepted,
                       msg.reason])
    if isinstance(msg, Outcome):
        return encode(["outcome", SCHEMA, msg.request_id, msg.height, msg.log_index,
                       list(msg.outcomes)])
    if isinstance(msg, BlocksRequest):
        return encode(["blocks?", SCHEMA, msg.request_id, msg.from_height, msg.max_blocks,
                       msg.wait])
    if isinstance(msg, Blocks):
        return encode(["blocks", SCHEMA, msg.request_id, msg.tip_height,
                       [b.to_wire() for b in msg.blocks]])
    if isinstance(msg, StatusRequest):
        return encode(["status?", SCHEMA, msg.request_id])
    if isinstance(msg, Status):
        return encode(["status", SCHEMA, msg.request_id, msg.status])
    if isinstance(msg, Refused):
        return encode(["refused", SCHEMA, msg.request_id, msg.reason])
    if isinstance(msg, GossipObservation):
        return encode(["observation", SCHEMA, msg.observation])
    if isinstance(msg, SnapshotRequest):
        return encode(["snapshot?", SCHEMA, msg.request_id, msg.height, msg.offset])
    if isinstance(msg, SnapshotChunk):
        return encode(["snapshot", SCHEMA, msg.request_id, msg.height, msg.total, msg.offset,
                       msg.log_size, list(msg.frontier), msg.chunk])
    return encode(["envelopes", SCHEMA, list(msg.envelopes)])


def decode_message(data: bytes) -> Message:
    """Decode one client/sync/gossip message; MalformedMessage (a RemoteError) otherwise."""
    obj = decode(data, max_size=MAX_CLIENT_MESSAGE)
    _expect(isinstance(obj, list) and len(obj) >= 3 and obj[1] == SCHEMA
            and not isinstance(obj[1], bool), "client message: expected [type, 1, ...]")
    kind = obj[0]
    if kind == "envelopes":
        _expect(len(obj) == 3 and isinstance(obj[2], list) and len(obj[2]) <= MAX_GOSSIP_BATCH
                and all(isinstance(e, bytes) for e in obj[2]), "envelopes: malformed")
        return GossipEnvelopes(tuple(obj[2]))
    if kind == "observation":
        _expect(len(obj) == 3 and isinstance(obj[2], bytes)
                and len(obj[2]) <= MAX_OBSERVATION_BYTES, "observation: malformed")
        return GossipObservation(obj[2])
    _expect(_uint(obj[2]), f"{kind}: request id must be an unsigned integer")
    rid = obj[2]
    if kind == "submit":
        _expect(len(obj) == 4 and isinstance(obj[3], bytes), "submit: malformed")
        return Submit(rid, obj[3])
    if kind == "submitted":
        _expect(len(obj) == 6 and isinstance(obj[3], bytes) and isinstance(obj[4], bool)
                and (obj[5] is None or isinstance(obj[5], str)), "submitted: malformed")
        return Submitted(rid, obj[3], obj[4], obj[5])
    if kind == "outcome":
        _expect(len(obj) == 6 and _uint(obj[3]) and _uint(obj[4]) and isinstance(obj[5], list),
                "outcome: malformed")
        return Outcome(rid, obj[3], obj[4], tuple(obj[5]))
    if kind == "blocks?":
        _expect(len(obj) == 6 and _uint(obj[3]) and _uint(obj[4]) and isinstance(obj[5], bool),
                "blocks?: malformed")
        return BlocksRequest(rid, obj[3], min(obj[4], MAX_BLOCKS_PER_REPLY), obj[5])
    if kind == "blocks":
        _expect(len(obj) == 5 and _uint(obj[3]) and isinstance(obj[4], list)
                and len(obj[4]) <= MAX_BLOCKS_PER_REPLY, "blocks: malformed")
        return Blocks(rid, obj[3], tuple(FinalizedBlock.from_wire(b) for b in obj[4]))
    if kind == "status?":
        _expect(len(obj) == 3, "status?: malformed")
        return StatusRequest(rid)
    if kind == "status":
        _expect(len(obj) == 4 and isinstance(obj[3], dict), "status: malformed")
        return Status(rid, obj[3])
    if kind == "snapshot?":
        _expect(len(obj) == 5 and _uint(obj[3]) and _uint(obj[4]), "snapshot?: malformed")
        return SnapshotRequest(rid, obj[3], obj[4])
    if kind == "snapshot":
        return _snapshot_chunk(rid, obj)
    if kind == "refused":
        _expect(len(obj) == 4 and isinstance(obj[3], str) and len(obj[3]) <= 1024,
                "refused: malformed")
        return Refused(rid, obj[3])
    raise MalformedMessage(f"client message: unknown type {kind!r}")


def _snapshot_chunk(rid: int, obj: list[Any]) -> SnapshotChunk:
    _expect(len(obj) == 9 and all(_uint(x) for x in obj[3:7]) and isinstance(obj[7], list)
            and isinstance(obj[8], bytes), "snapshot: malformed")
    height, total, offset, log_size, frontier, chunk = obj[3:9]
    _expect(len(chunk) <= MAX_SYNC_CHUNK,
            f"snapshot: a chunk of {len(chunk)} bytes exceeds {MAX_SYNC_CHUNK}")
    _expect(0 < total <= MAX_SYNC_TOTAL and offset + len(chunk) <= total,
            f"snapshot: bytes {offset}..{offset + len(chunk)} of a {total}-byte file")
    _expect(len(frontier) <= MAX_SYNC_FRONTIER
            and all(isinstance(h, bytes) and len(h) == 32 for h in frontier),
            "snapshot: the frontier is not at most 64 hashes of 32 bytes")
    _expect(height > 0, "snapshot: height 0 holds no snapshot")
    return SnapshotChunk(rid, height, total, offset, log_size, tuple(frontier), chunk)
