"""The `ledger` confluence (SPEC §4.2): shared refunds, deduplicated across citizens, and
quorum-signed attestations of every recipient's running total.

Items: `refund` entries `{submission_id, origin, slot, recipient, amount}` and `slot` entries
of the spanned citizens' feeds. A submission id counts once across every citizen and every
slot: its first occurrence (in ingest order) is folded into the open slot, every later one
is a duplicate (counted, never summed). Slots are sealed in ascending order when final
(component.py); sealing slot `s` commits, per recipient with refunds in `s` (ascending),

    attest = {"slot": s, "recipient": 20 bytes, "amount": sum of this slot's refunds,
              "total": running total over every sealed slot <= s,
              "submissions": [[submission_id, citizen, seq, height, block, amount], …]
                             (sorted by submission_id),
              "partial": bool, "missing": [citizen…],
              "upto": [[height, block, next entry] per citizen]}

committed by the member command `attest` carrying exactly that map: the SharedAttestation is
that command in a block with the block's finalisation certificate (docs/confluences.md §5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from ...commands.envelope import InvalidCommand
from ..base import BlockContext, is_uint, register
from .component import MAX_PENDING, Confluence, Key, check_common, check_pointer_list
from .records import ADDRESS_LEN, ATTEST_OP, KIND_REFUND, KIND_SLOT, MAX_TOTAL

#: Submission ids remembered for deduplication; refunds past it are dropped (overflow).
MAX_SUBMISSIONS: Final = 262_144
#: Recipients with a running total.
MAX_RECIPIENTS: Final = 65_536
#: Open slots, recipients per slot, submissions per (slot, recipient).
MAX_OPEN_SLOTS: Final = 1024
MAX_RECIPIENTS_PER_SLOT: Final = 1024
MAX_SUBMISSIONS_PER_ATTESTATION: Final = 256

ATTEST_KEYS: Final = frozenset({"slot", "recipient", "amount", "total", "submissions",
                                "partial", "missing", "upto"})


@register
class Ledger(Confluence):
    kind: ClassVar[str] = "ledger"
    signature: ClassVar[str] = "ledger/1"
    KINDS: ClassVar[frozenset[str]] = frozenset({KIND_REFUND, KIND_SLOT})
    OUTPUT_OP: ClassVar[str] = ATTEST_OP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: slot -> [opened tick or None, {recipient: {submission_id: row}}]
        self.open: dict[int, list[Any]] = {}
        #: Every submission id folded so far (deduplication across citizens and slots).
        self.seen: dict[bytes, None] = {}
        #: recipient -> running total over sealed slots; `owed` adds the open slots.
        self.totals: dict[bytes, int] = {}
        self.owed: dict[bytes, int] = {}
        #: The highest slot sealed so far (slots seal in ascending order).
        self.sealed_through: int | None = None

    def fold(self, ctx: BlockContext, citizen: int, item: tuple[Any, ...],
             ptr: list[Any]) -> None:
        _, _, _, sid, _origin, slot, recipient, amount = item
        if self.is_late(citizen, (slot,), slot):
            self.late += 1
            return
        if sid in self.seen:
            self.duplicates += 1
            return
        entry = self.open.get(slot)
        owed = self.owed.get(recipient, 0) + amount
        if (len(self.seen) >= MAX_SUBMISSIONS or owed > MAX_TOTAL
                or (recipient not in self.owed and len(self.owed) >= MAX_RECIPIENTS)
                or (entry is None and len(self.open) >= MAX_OPEN_SLOTS)):
            self.overflow += 1
            return
        if entry is None:
            entry = self.open[slot] = [ctx.tick, {}]
        rows = entry[1].get(recipient)
        if rows is None:
            if len(entry[1]) >= MAX_RECIPIENTS_PER_SLOT:
                self.overflow += 1
                return
            rows = entry[1][recipient] = {}
        if len(rows) >= MAX_SUBMISSIONS_PER_ATTESTATION:
            self.overflow += 1
            return
        rows[sid] = [sid, *ptr, amount]
        self.seen[sid] = None
        self.owed[recipient] = owed

    def seal_final(self, ctx: BlockContext) -> None:
        for slot in sorted(self.open):
            entry = self.open[slot]
            if entry[0] is None:
                entry[0] = ctx.tick
            if len(self.pending) + len(entry[1]) > MAX_PENDING \
                    or not self.is_final(slot, entry[0], ctx.tick):
                return  # slots are sealed in ascending order only
            missing = self.missing(slot)
            upto = self.upto()
            for recipient in sorted(entry[1]):
                rows = entry[1][recipient]
                amount = sum(r[5] for r in rows.values())
                total = self.totals.get(recipient, 0) + amount
                self.totals[recipient] = total
                record = {"slot": slot, "recipient": recipient, "amount": amount,
                          "total": total, "submissions": [rows[s] for s in sorted(rows)],
                          "partial": bool(missing), "missing": missing, "upto": upto}
                self.seal((slot, recipient), record, slot)
            del self.open[slot]
            self.sealed_through = slot

    def is_late(self, citizen: int, key: Key, slot: int) -> bool:
        # A refund for a slot at or below one already sealed would change a sealed total.
        return self.passed(citizen, slot) or (self.sealed_through is not None
                                              and slot <= self.sealed_through)

    def check_output(self, args: Mapping[str, Any]) -> None:
        if set(args) != ATTEST_KEYS:
            raise InvalidCommand(f"attest: args must be {sorted(ATTEST_KEYS)}",
                                 reason="bad_record")
        slot, recipient, amount, total = (args["slot"], args["recipient"], args["amount"],
                                          args["total"])
        if not (is_uint(slot) and isinstance(recipient, bytes) and len(recipient) == ADDRESS_LEN
                and is_uint(amount) and is_uint(total) and amount <= total <= MAX_TOTAL):
            raise InvalidCommand("attest: slot, amount, total unsigned (amount <= total), "
                                 "recipient 20 bytes", reason="bad_record")
        rows = args["submissions"]
        check_pointer_list("attest: submissions", rows, len(self.citizens),
                           MAX_SUBMISSIONS_PER_ATTESTATION, amounts=True)
        if sum(r[5] for r in rows) != amount:
            raise InvalidCommand("attest: amount is not the sum of the submissions' amounts",
                                 reason="bad_record")
        check_common("attest", args, len(self.citizens))

    def key_of(self, args: Mapping[str, Any]) -> Key:
        return (args["slot"], args["recipient"])

    def slot_of(self, key: Key) -> int:
        return int(key[0])

    def show_key(self, key: Key) -> str:
        if len(key) == 1:
            return f"slot {key[0]}"
        return f"slot {key[0]} recipient {bytes(key[1]).hex()}"

    def open_state(self) -> list[Any]:
        return [[[s, e[0], [[r, [e[1][r][i] for i in sorted(e[1][r])]] for r in sorted(e[1])]]
                 for s, e in sorted(self.open.items())],
                sorted(self.seen), [[r, self.totals[r]] for r in sorted(self.totals)],
                -1 if self.sealed_through is None else self.sealed_through]

    def load_open_state(self, fields: Any) -> None:
        slots, seen, totals, through = fields
        opened: dict[int, list[Any]] = {}
        owed: dict[bytes, int] = {}
        for slot, tick, recipients in slots:
            per: dict[bytes, dict[bytes, list[Any]]] = {}
            for recipient, rows in recipients:
                per[recipient] = {r[0]: r for r in rows}
                owed[recipient] = owed.get(recipient, 0) + sum(int(r[5]) for r in rows)
            opened[int(slot)] = [tick, per]
        totals_map = {bytes(r): int(t) for r, t in totals}
        for r, t in totals_map.items():
            owed[r] = owed.get(r, 0) + t
        if len(opened) > MAX_OPEN_SLOTS or len(seen) > MAX_SUBMISSIONS:
            raise ValueError("more open slots or submissions than the bounds allow")
        self.open, self.seen = opened, {bytes(s): None for s in seen}
        self.totals, self.owed = totals_map, owed
        self.sealed_through = None if through == -1 else int(through)

    def head(self) -> dict[str, Any]:
        out = super().head()
        out.update(open=len(self.open), submissions=len(self.seen),
                   recipients=len(self.totals))
        return out

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        if name == "total":
            recipient = args.get("recipient")
            if set(args) != {"recipient"} or not isinstance(recipient, bytes):
                return super().query(name, args)
            return {"recipient": recipient, "total": self.totals.get(recipient, 0)}
        return super().query(name, args)
