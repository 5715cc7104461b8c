"""Canonical records of the signed log, shared by the store, archives and `verify`.

* Entry leaf bytes (what the RFC 6962 tree hashes, what integrators verify):
  `encode(["entry", 1, epoch, height, block_digest, index_in_block, command])`.
* Committee record (how a store and an archive embed the committee, so verification needs
  nothing else): `["committee", 1, network_name, component_kind, component_name,
  [member public keys], fault_bound, epoch, component_config_digest]`; the committee id is
  recomputed from it, never read.
* FinalizedBlock: one block with everything this member holds about it. Its record (what
  catch-up answers, followers, `tail` and archives carry) is
  `["block", 2, block, finalization|null, notarization|null, [vote...], checkpoint]`: the
  entries are not in it, since each entry leaf is `entry_leaf(block, index)`; a record
  carries every command once (docs/formats.md, "Block record"). The schema-1 record
  `["block", block, fin, nota, votes, [entry leaf...], checkpoint]` (every command twice) is
  still read, from old archives and peers, and only when its entries are exactly the
  block's leaves; it is never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..consensus.limits import MAX_SERVABLE_BLOCK_BYTES
from ..consensus.types import Block, Certificate, MalformedMessage, Vote, VoteKind
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import encode
from ..primitives.errors import LocalError
from .checkpoint import MAX_NOTE_SIZE
from .errors import StoreUsageError

ENTRY_SCHEMA: Final = 1
COMMITTEE_RECORD_SCHEMA: Final = 1
#: Votes one block can carry: every member's notarize and finalize vote.
MAX_VOTES_PER_BLOCK: Final = 2 * 1024
#: The block record's schema (2: entries derived from the block, not carried).
RECORD_SCHEMA: Final = 2
#: Bytes a served record adds to its block, at most, for a committee of up to 64 members:
#: two certificates of 64 signatures (≤ 4 600 bytes each), 128 votes (≤ 140 bytes each),
#: the checkpoint note (≤ MAX_NOTE_SIZE bytes) and the record's own heads — about 96 KiB.
MAX_RECORD_OVERHEAD: Final = 128 * 1024
#: The largest record of a block any committee accepts (docs/protocol.md §10): every
#: serving limit is above it (tests/test_block_size.py).
MAX_RECORD_BYTES: Final = MAX_SERVABLE_BLOCK_BYTES + MAX_RECORD_OVERHEAD


def entry_leaf(block: Block, index: int) -> bytes:
    """Canonical bytes of the log entry for `block.commands[index]`."""
    return encode(["entry", ENTRY_SCHEMA, block.epoch, block.height, block.digest, index,
                   block.commands[index]])


#: Head of a 7-item CBOR array; entry_leaves builds the same bytes as entry_leaf.
_ENTRY_ARRAY_HEAD: Final = b"\x87"


def entry_leaves(block: Block) -> list[bytes]:
    """`[entry_leaf(block, i) for i …]`, encoding the five fields every entry of the block
    shares once (the per-entry encode was half the cost of a 1024-entry append)."""
    shared = encode(["entry", ENTRY_SCHEMA, block.epoch, block.height, block.digest])
    assert shared[0] == 0x85  # a 5-item array: its items follow the one-byte head
    prefix = _ENTRY_ARRAY_HEAD + shared[1:]
    return [prefix + encode(i) + encode(c) for i, c in enumerate(block.commands)]


def committee_record(c: CommitteeSpec) -> list[Any]:
    return ["committee", COMMITTEE_RECORD_SCHEMA, c.network_name, c.component_kind,
            c.component_name, list(c.members), c.fault_bound, c.epoch, c.component_config_digest]


def committee_from_record(obj: Any) -> CommitteeSpec:
    """Rebuild a CommitteeSpec; raises MalformedMessage (a RemoteError) on anything odd."""
    if not (isinstance(obj, list) and len(obj) == 9 and obj[0] == "committee"
            and obj[1] == COMMITTEE_RECORD_SCHEMA):
        raise MalformedMessage("committee record: expected [\"committee\", 1, ...9 items]")
    _, _, network_name, kind, name, members, fault_bound, epoch, config_digest = obj
    if not (isinstance(network_name, str) and isinstance(kind, str) and isinstance(name, str)
            and isinstance(members, list) and all(isinstance(m, bytes) for m in members)
            and isinstance(fault_bound, int) and isinstance(epoch, int) and epoch >= 0
            and isinstance(config_digest, bytes) and len(config_digest) == 32):
        raise MalformedMessage("committee record: a field has the wrong type")
    try:
        return CommitteeSpec(network_name, kind, name, tuple(members), fault_bound, epoch,
                             config_digest)
    except LocalError as e:
        raise MalformedMessage(f"committee record: {e}") from None


@dataclass(frozen=True, slots=True)
class FinalizedBlock:
    """A block as the log keeps it.

    `finalization` is the block's finalize certificate; a block finalised only through a
    descendant (Simplex finalises ancestors) has `finalization=None` and a `notarization`.
    `votes` are every notarize/finalize vote for this block this member collected — a
    superset of the certificates' signers, so an honest member's archive is a witness.
    """

    block: Block
    finalization: Certificate | None
    notarization: Certificate | None
    votes: tuple[Vote, ...]
    checkpoint: str

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def entries(self) -> tuple[bytes, ...]:
        """The block's entry leaves, derived (`entry_leaves`): never stored in the record."""
        return tuple(entry_leaves(self.block))

    def to_wire(self) -> list[Any]:
        return ["block", RECORD_SCHEMA, self.block.encode(),
                None if self.finalization is None else self.finalization.encode(),
                None if self.notarization is None else self.notarization.encode(),
                [v.to_wire() for v in self.votes], self.checkpoint]

    @classmethod
    def from_wire(cls, obj: Any) -> FinalizedBlock:
        if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == "block"):
            raise MalformedMessage("block record: expected [\"block\", ...7 items]")
        legacy = isinstance(obj[1], bytes)
        if legacy:  # schema 1: ["block", block, fin, nota, votes, entries, note]
            _, body, fin, nota, votes, entries, note = obj
        else:
            if not (obj[1] == RECORD_SCHEMA and isinstance(obj[1], int)
                    and not isinstance(obj[1], bool)):
                raise MalformedMessage(f"block record: schema {obj[1]!r}, this coalitiond "
                                       f"reads {RECORD_SCHEMA} (and 1)")
            _, _, body, fin, nota, votes, note = obj
        if not isinstance(body, bytes):
            raise MalformedMessage("block record: block must be bytes")
        if fin is not None and not isinstance(fin, bytes):
            raise MalformedMessage("block record: finalization must be bytes or null")
        if nota is not None and not isinstance(nota, bytes):
            raise MalformedMessage("block record: notarization must be bytes or null")
        if not (isinstance(votes, list) and len(votes) <= MAX_VOTES_PER_BLOCK):
            raise MalformedMessage(f"block record: at most {MAX_VOTES_PER_BLOCK} votes")
        if not (isinstance(note, str) and len(note.encode()) <= MAX_NOTE_SIZE):
            raise MalformedMessage(f"block record: checkpoint must be text of at most "
                                   f"{MAX_NOTE_SIZE} bytes")
        block = Block.decode(body)
        if legacy and entries != entry_leaves(block):
            raise MalformedMessage("block record (schema 1): its entries are not the block's "
                                   "entry leaves")
        return cls(block,
                   None if fin is None else Certificate.decode(fin),
                   None if nota is None else Certificate.decode(nota),
                   tuple(Vote.from_wire(v) for v in votes), note)


def vote_for(block: Block, kind: VoteKind, signer: int, signature: bytes) -> Vote:
    return Vote(kind, block.epoch, block.view, block.digest, signer, signature)


def check_votes_match(block: Block, votes: Sequence[Vote]) -> None:
    """Raise StoreUsageError unless every vote is a notarize/finalize vote for `block`."""
    for v in votes:
        if v.kind is VoteKind.NULLIFY:
            raise StoreUsageError(f"height {block.height}: a nullify vote is not a vote for a block")
        if (v.epoch, v.view, v.digest) != (block.epoch, block.view, block.digest):
            raise StoreUsageError(
                f"height {block.height}: vote of member {v.signer} is for another "
                f"(epoch, view, digest) than the block")

