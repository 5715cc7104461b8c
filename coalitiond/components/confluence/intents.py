"""The `intents` confluence (SPEC §4.1): routed intents per (target, target slot).

Items: `intent` entries `{intent_id, origin, targets: [[target key, slot], …], body?}` and
`slot` entries of the spanned citizens' feeds. Each intent joins the open key `(target,
slot)` of every target it names (once per key: a repeated intent id is a duplicate, counted,
not listed twice). A key is sealed when its slot is final (component.py), into

    route = {"target": 20 bytes, "slot": uint, "intents": [[intent_id, citizen, seq, height,
             block], …] (sorted by intent_id), "partial": bool, "missing": [citizen…],
             "upto": [[height, block, next entry] per citizen]}

and committed by the member command `route` carrying exactly that map (docs/confluences.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from ...commands.envelope import InvalidCommand
from ..base import BlockContext, is_uint, register
from .component import MAX_PENDING, Confluence, Key, check_common, check_pointer_list
from .records import CITIZEN_KEY_LEN, KIND_INTENT, KIND_SLOT, ROUTE_OP

#: Open (target, slot) keys; an intent opening one more is dropped (overflow).
MAX_OPEN_KEYS: Final = 4096
#: Intents routed to one key (a route record must fit one block command).
MAX_INTENTS_PER_KEY: Final = 256

ROUTE_KEYS: Final = frozenset({"target", "slot", "intents", "partial", "missing", "upto"})


@register
class Intents(Confluence):
    kind: ClassVar[str] = "intents"
    signature: ClassVar[str] = "intents/1"
    KINDS: ClassVar[frozenset[str]] = frozenset({KIND_INTENT, KIND_SLOT})
    OUTPUT_OP: ClassVar[str] = ROUTE_OP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (target, slot) -> [opened tick or None, {intent_id: pointer row}]
        self.open: dict[Key, list[Any]] = {}

    def fold(self, ctx: BlockContext, citizen: int, item: tuple[Any, ...],
             ptr: list[Any]) -> None:
        _, _, _, intent_id, _origin, targets = item
        for key in sorted({(bytes(t[0]), int(t[1])) for t in targets}):
            if self.is_late(citizen, key, key[1]):
                self.late += 1
                continue
            entry = self.open.get(key)
            if entry is None:
                if len(self.open) >= MAX_OPEN_KEYS:
                    self.overflow += 1
                    continue
                entry = self.open[key] = [ctx.tick, {}]
            rows = entry[1]
            if intent_id in rows:
                self.duplicates += 1
            elif len(rows) >= MAX_INTENTS_PER_KEY:
                self.overflow += 1
            else:
                rows[intent_id] = [intent_id, *ptr]

    def seal_final(self, ctx: BlockContext) -> None:
        for key in sorted(self.open):
            entry = self.open[key]
            if entry[0] is None:
                entry[0] = ctx.tick  # opened before the first stamp: the clock starts now
            if len(self.pending) >= MAX_PENDING or not self.is_final(key[1], entry[0], ctx.tick):
                continue
            missing = self.missing(key[1])
            rows = entry[1]
            record = {"target": key[0], "slot": key[1],
                      "intents": [rows[i] for i in sorted(rows)],
                      "partial": bool(missing), "missing": missing, "upto": self.upto()}
            del self.open[key]
            self.seal(key, record, key[1])

    def check_output(self, args: Mapping[str, Any]) -> None:
        if set(args) != ROUTE_KEYS:
            raise InvalidCommand(f"route: args must be {sorted(ROUTE_KEYS)}",
                                 reason="bad_record")
        target, slot = args["target"], args["slot"]
        if not (isinstance(target, bytes) and len(target) == CITIZEN_KEY_LEN and is_uint(slot)):
            raise InvalidCommand("route: target is a 20-byte citizen key, slot an unsigned "
                                 "integer", reason="bad_record")
        check_pointer_list("route: intents", args["intents"], len(self.citizens),
                           MAX_INTENTS_PER_KEY)
        check_common("route", args, len(self.citizens))

    def key_of(self, args: Mapping[str, Any]) -> Key:
        return (args["target"], args["slot"])

    def slot_of(self, key: Key) -> int:
        return int(key[1])

    def show_key(self, key: Key) -> str:
        return f"target {bytes(key[0]).hex()} slot {key[1]}"

    def open_state(self) -> list[Any]:
        return [[k[0], k[1], e[0], [e[1][i] for i in sorted(e[1])]]
                for k, e in sorted(self.open.items())]

    def load_open_state(self, fields: Any) -> None:
        opened: dict[Key, list[Any]] = {}
        for target, slot, tick, rows in fields:
            opened[(target, slot)] = [tick, {r[0]: r for r in rows}]
        if len(opened) > MAX_OPEN_KEYS:
            raise ValueError("too many open keys")
        self.open = opened

    def head(self) -> dict[str, Any]:
        out = super().head()
        out["open"] = len(self.open)
        return out
