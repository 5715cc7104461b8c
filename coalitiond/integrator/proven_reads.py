"""Proof-carrying state reads: for each (component signature, query), what its state proof
proves and how the client ties the proof to what was asked (docs/api.md §3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..components.almanac.component import AlmanacTick
from ..components.atlas.component import CardRecord, CitizenCard
from ..components.chronicle.records import ChronicleAnchor, ChronicleEntry
from ..components.feed.component import FeedEntry
from ..components.tickets.component import Ticket, TicketRecord
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError

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
    # Compute's state keys are `encode([kind, id])` (components/compute.py `_key`).
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


def show_value(value: Any) -> str:
    return value.hex()[:32] if isinstance(value, bytes) else repr(value)[:64]


def same_value(a: Any, b: Any) -> bool:
    """Equal as CBOR values (a list and a tuple holding the same items are equal)."""
    try:
        return encode(a) == encode(b)
    except EncodingError:
        return False
