"""What a confluence reads from its citizens and what it commits (docs/confluences.md §2-§4).

Pure: the upstream items a citizen feed entry yields, the `ingest` member command that
carries them (built by a leader, rebuilt by every voter and by `coalitiond audit` from its own
copy of the citizen's certified log, and compared), and the two committed records
(`route` for intents, `attest` for the ledger), each with its evidence pointers.

An evidence pointer is `[citizen, seq, height, block]`: the citizen's index in the
confluence's ordered `citizens`, the feed entry's index (the SPEC's "entry index"), and the
citizen block (height, digest) that certified it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ...commands.envelope import InvalidCommand
from ...consensus.types import MAX_COMMAND_SIZE
from ...primitives.encoding import decode, encode
from ...primitives.errors import EncodingError
from ...primitives.identity import ID_LEN
from ..base import is_uint

#: The first 20 bytes of a citizen's stable id (SPEC conventions), and EVM addresses.
CITIZEN_KEY_LEN: Final = 20
ADDRESS_LEN: Final = 20
#: Slots, heights, sequence numbers: unsigned 63-bit.
MAX_UINT: Final = (1 << 63) - 1
#: One refund's amount, and a recipient's running total (CBOR's 64-bit integers).
MAX_AMOUNT: Final = (1 << 63) - 1
MAX_TOTAL: Final = (1 << 64) - 1
#: Targets one intent may name.
MAX_TARGETS: Final = 16
#: Feed entries one ingest may span (relevant or not): bounds a voter's re-scan.
MAX_INGEST_ENTRIES: Final = 4096
#: Bytes the leader packs into one ingest's items (the command's frame and the rest of
#: its args stay well below MAX_COMMAND_SIZE).
INGEST_BUDGET: Final = MAX_COMMAND_SIZE - 8192

INGEST_OP: Final = "ingest"
ROUTE_OP: Final = "route"
ATTEST_OP: Final = "attest"

#: Feed entry kinds a confluence reads (SPEC §4: the stand-in for the citizens' pools).
KIND_INTENT: Final = "intent"
KIND_REFUND: Final = "refund"
KIND_SLOT: Final = "slot"


class CitizenView(Protocol):
    """One citizen's certified feed as far as this reader has verified it."""

    def count(self) -> int:
        """Feed entries verified so far."""

    def entry(self, seq: int) -> bytes:
        """The feed entry encoding `seq` (< count())."""

    def block(self, height: int) -> tuple[bytes, int] | None:
        """(digest, feed entries after it) of verified block `height`, None if unknown."""

    def latest_height(self) -> int:
        """Height of the newest verified block (0: none)."""


@dataclass
class MemoryView:
    """A CitizenView over lists (the audit's replica of a citizen archive, and tests)."""

    entries: list[bytes]
    blocks: dict[int, tuple[bytes, int]]

    def count(self) -> int:
        return len(self.entries)

    def entry(self, seq: int) -> bytes:
        return self.entries[seq]

    def block(self, height: int) -> tuple[bytes, int] | None:
        return self.blocks.get(height)

    def latest_height(self) -> int:
        return max(self.blocks, default=0)


# ---------------------------------------------------------------------------------------
# Items: what one feed entry contributes


def _key20(x: Any) -> bool:
    return isinstance(x, bytes) and len(x) == CITIZEN_KEY_LEN


def _small(x: Any, limit: int = MAX_UINT) -> bool:
    return is_uint(x) and x <= limit


def feed_entry_fields(data: bytes) -> tuple[int, int, str, Any]:
    """(seq, height, kind, body) of a feed entry encoding; EncodingError if it is not one."""
    obj = decode(data, max_size=2 * MAX_COMMAND_SIZE)
    if not (isinstance(obj, list) and len(obj) == 9 and obj[0] == "feed-entry"
            and is_uint(obj[2]) and is_uint(obj[3]) and isinstance(obj[7], str)):
        raise EncodingError("not a feed entry")
    return obj[2], obj[3], obj[7], obj[8]


def item_of(kinds: frozenset[str], seq: int, height: int, kind: str, body: Any
            ) -> list[Any] | None:
    """The item a feed entry yields for a confluence reading `kinds`, or None (another kind,
    or a body that does not have the kind's shape: such entries are skipped by everyone)."""
    if kind not in kinds or not isinstance(body, dict):
        return None
    if kind == KIND_SLOT:
        if set(body) == {"slot"} and _small(body["slot"]):
            return [KIND_SLOT, seq, height, body["slot"]]
        return None
    if kind == KIND_INTENT:
        if set(body) - {"body"} != {"intent_id", "origin", "targets"}:
            return None
        iid, origin, targets = body["intent_id"], body["origin"], body["targets"]
        if not (isinstance(iid, bytes) and len(iid) == ID_LEN and _key20(origin)
                and isinstance(targets, list) and 1 <= len(targets) <= MAX_TARGETS
                and all(isinstance(t, list) and len(t) == 2 and _key20(t[0]) and _small(t[1])
                        for t in targets)):
            return None
        return [KIND_INTENT, seq, height, iid, origin, [list(t) for t in targets]]
    if kind == KIND_REFUND:
        if set(body) != {"submission_id", "origin", "slot", "recipient", "amount"}:
            return None
        sid, origin, slot = body["submission_id"], body["origin"], body["slot"]
        recipient, amount = body["recipient"], body["amount"]
        if not (isinstance(sid, bytes) and len(sid) == ID_LEN and _key20(origin)
                and _small(slot) and isinstance(recipient, bytes)
                and len(recipient) == ADDRESS_LEN and _small(amount, MAX_AMOUNT)):
            return None
        return [KIND_REFUND, seq, height, sid, origin, slot, recipient, amount]
    return None


def items_of_entry(kinds: frozenset[str], data: bytes) -> tuple[int, int, list[Any] | None]:
    seq, height, kind, body = feed_entry_fields(data)
    return seq, height, item_of(kinds, seq, height, kind, body)


# ---------------------------------------------------------------------------------------
# The ingest member command

#: args = {"citizen", "from", "to", "height", "block", "blocks", "items"}
INGEST_KEYS: Final = frozenset({"citizen", "from", "to", "height", "block", "blocks", "items"})


@dataclass(frozen=True, slots=True)
class Ingest:
    """Feed entries `from` … `to − 1` of citizen `citizen`, read up to its block `height`
    (digest `block`); `items` are the relevant ones, `blocks` the (height, digest) of every
    block an item came from."""

    citizen: int
    start: int
    end: int
    height: int
    block: bytes
    blocks: tuple[tuple[int, bytes], ...]
    items: tuple[tuple[Any, ...], ...]

    def to_args(self) -> dict[str, Any]:
        return {"citizen": self.citizen, "from": self.start, "to": self.end,
                "height": self.height, "block": self.block,
                "blocks": [[h, d] for h, d in self.blocks],
                "items": [_thaw(i) for i in self.items]}

    def digest_of(self, height: int) -> bytes:
        for h, d in self.blocks:
            if h == height:
                return d
        raise KeyError(height)


def _thaw(x: Any) -> Any:
    return [_thaw(v) for v in x] if isinstance(x, tuple) else x


def _freeze(x: Any) -> Any:
    return tuple(_freeze(v) for v in x) if isinstance(x, list) else x


def parse_ingest(args: Mapping[str, Any], citizens: int, kinds: frozenset[str]) -> Ingest:
    """The stateless check of an ingest's args; InvalidCommand(reason=bad_ingest)."""
    def bad(what: str) -> InvalidCommand:
        return InvalidCommand(f"ingest: {what}", reason="bad_ingest")

    if set(args) != INGEST_KEYS:
        raise bad(f"args must be {sorted(INGEST_KEYS)}")
    citizen, start, end = args["citizen"], args["from"], args["to"]
    height, block, blocks, items = args["height"], args["block"], args["blocks"], args["items"]
    if not (_small(citizen) and citizen < citizens):
        raise bad(f"citizen must be an index below {citizens}")
    if not (_small(start) and _small(end) and start <= end <= start + MAX_INGEST_ENTRIES):
        raise bad(f"from/to must satisfy from <= to <= from + {MAX_INGEST_ENTRIES}")
    if not (_small(height) and isinstance(block, bytes) and len(block) == ID_LEN):
        raise bad("height must be an unsigned integer and block a 32-byte digest")
    if not (isinstance(blocks, list) and isinstance(items, list)):
        raise bad("blocks and items must be lists")
    pairs: list[tuple[int, bytes]] = []
    for b in blocks:
        if not (isinstance(b, list) and len(b) == 2 and _small(b[0]) and b[0] <= height
                and isinstance(b[1], bytes) and len(b[1]) == ID_LEN):
            raise bad("each block is [height <= ingest height, 32-byte digest]")
        if pairs and b[0] <= pairs[-1][0]:
            raise bad("blocks must be in strictly ascending height order")
        pairs.append((b[0], b[1]))
    heights = {h for h, _ in pairs}
    used: set[int] = set()
    last_seq, last_height = start - 1, 0
    out: list[tuple[Any, ...]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)
                and _small(item[1]) and _small(item[2])):
            raise bad("each item is [kind, seq, height, ...]")
        kind, seq, h = item[0], item[1], item[2]
        if not last_seq < seq < end:
            raise bad(f"item seq {seq} out of order or outside [{start}, {end})")
        if h < last_height or h not in heights:
            raise bad(f"item seq {seq}: height {h} out of order or not among blocks")
        if _reparse(kinds, item) != item:
            raise bad(f"item seq {seq}: not a well-formed {kind!r} item for this confluence")
        used.add(h)
        last_seq, last_height = seq, h
        out.append(_freeze(item))
    if used != heights:
        raise bad("blocks must list exactly the heights the items come from")
    return Ingest(citizen, start, end, height, block, tuple(pairs), tuple(out))


def _reparse(kinds: frozenset[str], item: list[Any]) -> list[Any] | None:
    """Rebuild an item from its fields through `item_of` (one definition of well-formed)."""
    kind, seq, height = item[0], item[1], item[2]
    fields = item[3:]
    body: Any = None
    if kind == KIND_SLOT and len(fields) == 1:
        body = {"slot": fields[0]}
    elif kind == KIND_INTENT and len(fields) == 3:
        body = {"intent_id": fields[0], "origin": fields[1], "targets": fields[2]}
    elif kind == KIND_REFUND and len(fields) == 5:
        body = dict(zip(("submission_id", "origin", "slot", "recipient", "amount"), fields,
                        strict=True))
    return item_of(kinds, seq, height, kind, body)


def build_ingest(view: CitizenView, citizen: int, kinds: frozenset[str], start: int, *,
                 min_height: int = 0, end: int | None = None, height: int | None = None,
                 budget: int = INGEST_BUDGET) -> Ingest | None:
    """The ingest of `view`'s entries from `start`: as a leader builds it (end and height
    None: as many entries as fit, up to the newest verified block), or as a voter or
    auditor rebuilds one it was handed (end and height given). None when `view` cannot
    (entries or blocks not verified here, or nothing to read)."""
    count = view.count()
    limit = end if end is not None else min(count, start + MAX_INGEST_ENTRIES)
    if limit > count or start > limit:
        return None
    items: list[tuple[Any, ...]] = []
    blocks: dict[int, bytes] = {}
    size = 0
    seq = start
    last_height = 0
    while seq < limit:
        entry_seq, entry_height, item = items_of_entry(kinds, view.entry(seq))
        if entry_seq != seq:
            return None
        if item is not None:
            cost = len(encode(item)) + (0 if entry_height in blocks else 48)
            if end is None and size + cost > budget:
                break
            known = view.block(entry_height)
            if known is None:
                return None
            blocks[entry_height] = known[0]
            items.append(_freeze(item))
            size += cost
        last_height = entry_height
        seq += 1
    if end is None:
        if seq == start:
            return None
        end = seq
        height = max(view.latest_height() if seq == count else last_height, min_height)
    assert height is not None
    known = view.block(height)
    if known is None or known[1] < end:
        return None
    return Ingest(citizen, start, end, height, known[0], tuple(sorted(blocks.items())),
                  tuple(items))


# ---------------------------------------------------------------------------------------
# Committed records


def pointer(citizen: int, seq: int, height: int, block: bytes) -> list[Any]:
    return [citizen, seq, height, block]


def show_pointer(p: Sequence[Any], citizen_ids: Sequence[bytes] | None = None) -> str:
    """`citizen <id-or-index> entry <seq> @ <height>/<digest prefix>` for reports."""
    who = citizen_ids[p[0]].hex()[:16] if citizen_ids is not None else str(p[0])
    return f"citizen {who} entry {p[1]} @ height {p[2]} block {bytes(p[3]).hex()[:16]}"
