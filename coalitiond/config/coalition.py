"""The `[coalition]` section (or a standalone coalition file) and the two confluences'
`[component]` sections (`intents`, `ledger`): ordered spanned citizens and a failure mode.
The confluences have no state machine in this daemon yet, so their configuration lives here
rather than next to a component."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ..primitives.coalition import MODULES, CitizenRef, Coalition, ConfluenceRef
from ..primitives.identity import ID_LEN
from .parsing import MAX_CITIZENS, Table, parse_follow_almanac, refuse_duplicate_citizens

CONFLUENCE_KINDS: Final = ("intents", "ledger")
FAILURE_MODES: Final = ("partial", "stall")
#: Bound of `partial_deadline_ticks` (the component checks the same bound).
MAX_DEADLINE_TICKS: Final = 1 << 32


@dataclass(frozen=True, slots=True)
class ConfluenceComponentConfig:
    """Common shape of the two confluences: ordered spanned citizens and a failure mode."""

    KIND: ClassVar[str] = ""
    citizens: tuple[CitizenRef, ...]
    failure_mode: str = "stall"
    follow_almanac: bytes | None = None
    #: `partial` mode: Almanac ticks after a key opens before it is sealed without the
    #: citizens that have not passed its slot (docs/confluences.md §4).
    partial_deadline_ticks: int = 0

    def to_cbor(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "citizens": [c.preimage() for c in self.citizens],
            "failure_mode": self.failure_mode,
            "follow_almanac": self.follow_almanac,
        }
        if self.failure_mode == "partial":  # stall-mode configs keep their identity
            out["partial_deadline_ticks"] = self.partial_deadline_ticks
        return out


@dataclass(frozen=True, slots=True)
class IntentsConfig(ConfluenceComponentConfig):
    KIND: ClassVar[str] = "intents"


@dataclass(frozen=True, slots=True)
class LedgerConfig(ConfluenceComponentConfig):
    KIND: ClassVar[str] = "ledger"


def parse_citizen_ref(t: Table, *, default_role: str = "") -> CitizenRef:
    ref = CitizenRef(
        stable_id=t.hex("stable_id", ID_LEN),
        content_hash=t.hex("content_hash", ID_LEN, None),
        role=t.string("role", default_role),
    )
    t.finish()
    return ref


def parse_confluence(kind: str, t: Table) -> IntentsConfig | LedgerConfig:
    """The `[component]` section of an `intents` or `ledger` member (`finish` is the
    caller's)."""
    rows = t.tables("citizens", limit=MAX_CITIZENS)
    if not rows:
        raise t.error("citizens", "a confluence spans at least one citizen")
    refs = [parse_citizen_ref(row) for row in rows]
    refuse_duplicate_citizens(rows, [r.stable_id for r in refs])
    cls = IntentsConfig if kind == "intents" else LedgerConfig
    mode = t.string("failure_mode", "stall", choices=FAILURE_MODES)
    follow = parse_follow_almanac(t)
    deadline = t.integer("partial_deadline_ticks", 0, minimum=0, maximum=MAX_DEADLINE_TICKS)
    if mode == "partial" and (follow is None or deadline < 1):
        raise t.error("failure_mode", 'failure_mode = "partial" needs follow_almanac and '
                      "partial_deadline_ticks >= 1 (the deadline is counted in Almanac ticks)")
    if mode == "stall" and deadline:
        raise t.error("partial_deadline_ticks", 'only meaningful with failure_mode = "partial"')
    return cls(
        citizens=tuple(refs),
        failure_mode=mode,
        follow_almanac=follow,
        partial_deadline_ticks=deadline,
    )



def parse_coalition_table(t: Table) -> Coalition:
    name = t.string("name")
    lattice_rows = t.tables("lattices", limit=MAX_CITIZENS, default=())
    organism_rows = t.tables("organisms", limit=MAX_CITIZENS, default=())
    lattices = [parse_citizen_ref(r, default_role="lattice") for r in lattice_rows]
    organisms = [parse_citizen_ref(r, default_role="organism") for r in organism_rows]
    refuse_duplicate_citizens(
        (*lattice_rows, *organism_rows), [c.stable_id for c in (*lattices, *organisms)]
    )

    confluences: list[ConfluenceRef] = []
    seen_names: dict[str, str] = {}
    seen_fps: dict[bytes, str] = {}
    for row in t.tables("confluences", limit=MAX_CITIZENS, default=()):
        ref = ConfluenceRef(name=row.string("name"), fingerprint=row.hex("fingerprint", ID_LEN))
        row.finish()
        if ref.name in seen_names:
            raise row.error("name", f"duplicate confluence: same name as {seen_names[ref.name]}")
        if ref.fingerprint in seen_fps:
            raise row.error(
                "fingerprint", f"duplicate confluence: same fingerprint as {seen_fps[ref.fingerprint]}"
            )
        seen_names[ref.name] = row.prefix
        seen_fps[ref.fingerprint] = row.prefix
        confluences.append(ref)

    modules = t.string_array("modules", choices=MODULES)
    not_shipped = t.string_array("not_shipped", (), choices=MODULES)
    for m in not_shipped:
        if m in modules:
            raise t.error("not_shipped", f"module {m!r} is also listed in {t.key('modules')}")
    for m in MODULES:
        if m not in modules and m not in not_shipped:
            raise t.error(
                "modules",
                f"module {m!r} is in neither {t.key('modules')} nor {t.key('not_shipped')}; "
                f"state every module explicitly",
            )
    coalition = Coalition(
        name=name,
        lattices=tuple(lattices),
        organisms=tuple(organisms),
        confluences=tuple(confluences),
        modules=modules,
        not_shipped=not_shipped,
        ticket_issuer=t.hex("ticket_issuer", ID_LEN, None),
    )
    t.finish()
    return coalition

