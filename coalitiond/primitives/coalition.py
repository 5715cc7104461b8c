"""Coalition identity (DESIGN §2.3, SPEC §6): pure functions, no I/O.

    COALITION      = blake3(cbor(["coalition", 1, name]))
    COALITION_ROOT = blake3(cbor(["coalition-root", 1, COALITION, [lattice refs…],
                                  [organism refs…], [confluence fingerprints…],
                                  ticket issuer fingerprint or null]))
    module id      = derive(derive(COALITION_ROOT, "module"), name)
    tickets root   = derive(COALITION_ROOT, "tickets")

Every list keeps the order the configuration gives: reordering citizens is a different
coalition, exactly as renaming it is (the blueprint's rotation rules).

A citizen reference is its 32-byte stable id as a CBOR byte string; when the coalition pins
the citizen's content hash as well, the reference is the two-element array
`[stable_id, content_hash]`. The two forms have different CBOR major types, so they can never
collide, and the unpinned form is exactly the one SPEC §6's golden vectors use.

Confluence fingerprint (our choice; the blueprint leaves the bytes open, DESIGN §2.3 fixes
what it folds):

    blake3(cbor(["confluence", 1, name, [spanned citizen refs…], content, acl]))

where `content` and `acl` are CBOR maps (the component's parameters and state-machine
version; the client ACL). No coalition id is folded: one confluence may be referenced by many
coalitions. `tests/test_coalition.py` pins a golden vector.

A fingerprint is a name, never an authority: nothing grants rights because one matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .errors import LocalError
from .identity import ID_LEN, derive, hash_structure

IDENTITY_SCHEMA: Final = 1
#: The modules a coalition may ship (DESIGN §1). Their shapes are fixed by the blueprint, so
#: an unknown module name is a configuration error rather than an extension point.
MODULES: Final = ("atlas", "almanac", "chronicle", "compute")


def _check_id(value: bytes, what: str) -> None:
    if len(value) != ID_LEN:
        raise LocalError(f"{what} must be {ID_LEN} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class CitizenRef:
    """A lattice, organism or spanned citizen, by stable id, optionally content-pinned.

    `role` is a label for people (dashboards, `fingerprint` readers); it is not folded into
    any fingerprint, so relabelling a citizen never changes a coalition's identity.
    """

    stable_id: bytes
    content_hash: bytes | None = None
    role: str = ""

    def __post_init__(self) -> None:
        _check_id(self.stable_id, "citizen stable id")
        if self.content_hash is not None:
            _check_id(self.content_hash, "citizen content hash")

    def preimage(self) -> bytes | list[bytes]:
        """The item this reference contributes to a fingerprint preimage."""
        if self.content_hash is None:
            return self.stable_id
        return [self.stable_id, self.content_hash]


def coalition_id(name: str) -> bytes:
    """`COALITION = blake3(cbor(["coalition", 1, name]))`."""
    return hash_structure("coalition", IDENTITY_SCHEMA, name)


def coalition_root(
    coalition: bytes,
    lattices: Sequence[CitizenRef],
    organisms: Sequence[CitizenRef],
    confluences: Sequence[bytes],
    ticket_issuer: bytes | None,
) -> bytes:
    """`COALITION_ROOT`, every list in the given order."""
    _check_id(coalition, "coalition id")
    for fp in confluences:
        _check_id(fp, "confluence fingerprint")
    if ticket_issuer is not None:
        _check_id(ticket_issuer, "ticket issuer fingerprint")
    return hash_structure(
        "coalition-root",
        IDENTITY_SCHEMA,
        coalition,
        [c.preimage() for c in lattices],
        [c.preimage() for c in organisms],
        list(confluences),
        ticket_issuer,
    )


def module_id(root: bytes, name: str) -> bytes:
    """`derive(derive(COALITION_ROOT, "module"), name)`."""
    return derive(derive(root, "module"), name)


def ticket_issuer_root(root: bytes) -> bytes:
    """`derive(COALITION_ROOT, "tickets")`: the root of the optional ticket issuer."""
    return derive(root, "tickets")


def confluence_fingerprint(
    name: str,
    spans: Sequence[CitizenRef],
    content: Mapping[str, Any],
    acl: Mapping[str, Any],
) -> bytes:
    """A confluence's fingerprint: name, ordered spanned citizens, content, ACL; no coalition."""
    return hash_structure(
        "confluence",
        IDENTITY_SCHEMA,
        name,
        [c.preimage() for c in spans],
        dict(content),
        dict(acl),
    )


@dataclass(frozen=True, slots=True)
class ConfluenceRef:
    """A confluence the coalition references: a label and the confluence's fingerprint."""

    name: str
    fingerprint: bytes

    def __post_init__(self) -> None:
        _check_id(self.fingerprint, "confluence fingerprint")


@dataclass(frozen=True, slots=True)
class Coalition:
    """The identity-bearing part of a coalition: what `coalitiond fingerprint` prints.

    `modules` are the shipped modules, `not_shipped` the ones the coalition explicitly does
    not ship; together they name each of MODULES exactly once (an unstated module cannot be
    told apart from an omission, so configuration requires the statement).
    """

    name: str
    lattices: tuple[CitizenRef, ...] = ()
    organisms: tuple[CitizenRef, ...] = ()
    confluences: tuple[ConfluenceRef, ...] = ()
    modules: tuple[str, ...] = ()
    not_shipped: tuple[str, ...] = ()
    ticket_issuer: bytes | None = None

    def __post_init__(self) -> None:
        if self.ticket_issuer is not None:
            _check_id(self.ticket_issuer, "ticket issuer fingerprint")
        for m in (*self.modules, *self.not_shipped):
            if m not in MODULES:
                raise LocalError(f"unknown module {m!r}")

    @property
    def id(self) -> bytes:
        return coalition_id(self.name)

    @property
    def root(self) -> bytes:
        return coalition_root(
            self.id,
            self.lattices,
            self.organisms,
            [c.fingerprint for c in self.confluences],
            self.ticket_issuer,
        )

    def module_ids(self) -> dict[str, bytes]:
        """Shipped module name → module id, in the order the configuration lists them."""
        root = self.root
        return {m: module_id(root, m) for m in self.modules}

    @property
    def ticket_issuer_root(self) -> bytes | None:
        return None if self.ticket_issuer is None else ticket_issuer_root(self.root)

    def fingerprint_json(self) -> dict[str, Any]:
        """The object `coalitiond fingerprint` prints: lowercase hex, null when absent."""
        tickets = self.ticket_issuer_root
        return {
            "coalition": self.id.hex(),
            "coalition_root": self.root.hex(),
            "modules": {name: mid.hex() for name, mid in self.module_ids().items()},
            "ticket_issuer_root": None if tickets is None else tickets.hex(),
            "confluences": [c.fingerprint.hex() for c in self.confluences],
        }
