"""The snapshot frame every component (and the executor) writes and restores.

A snapshot is `[tag, schema, *fields]` in deterministic CBOR. `SnapshotFormat` names one
component's frame once and gives it its three shared steps: `encode` the fields; `decode`
bytes that may come from a peer (bounded size, the tag, a schema that is the integer, not a
boolean, and each field's type), refusing anything else with one `MalformedSnapshot` line
prefixed "<name> snapshot:"; and `restore`, which runs the component's own validation of
the fields and swaps the state in only once all of it passed, so a bad snapshot leaves the
state as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError
from .base import MalformedSnapshot

MAX_SNAPSHOT_SIZE: Final = 1 << 31

#: A type check of one snapshot field, run as part of the frame check.
FieldCheck = Callable[[Any], bool]


def any_value(value: Any) -> bool:
    """A field the frame check leaves to the component."""
    return True


def is_list(value: Any) -> bool:
    return isinstance(value, list)


@dataclass(frozen=True, slots=True)
class SnapshotFormat:
    #: The component's kind as refusals name it ("feed snapshot: ...").
    name: str
    tag: str
    schema: int
    #: One check per field after the tag and schema.
    fields: tuple[FieldCheck, ...]
    #: What a refusal of the frame says was expected.
    shape: str
    max_size: int = MAX_SNAPSHOT_SIZE

    def error(self, detail: str) -> MalformedSnapshot:
        return MalformedSnapshot(f"{self.name} snapshot: {detail}")

    def encode(self, *fields: Any) -> bytes:
        if len(fields) != len(self.fields):
            raise LocalError(f"{self.name} snapshot: {len(fields)} fields, the frame has "
                             f"{len(self.fields)}")
        return encode([self.tag, self.schema, *fields])

    def decode(self, data: bytes) -> list[Any]:
        """The fields after tag and schema, each past its type check; MalformedSnapshot."""
        try:
            obj = decode(data, max_size=self.max_size)
        except EncodingError as exc:
            raise self.error(str(exc)) from None
        if not (isinstance(obj, list) and len(obj) == 2 + len(self.fields)
                and obj[0] == self.tag and obj[1] == self.schema
                and not isinstance(obj[1], bool)
                and all(check(value) for check, value in zip(self.fields, obj[2:],
                                                             strict=True))):
            raise self.error(f"expected {self.shape}")
        return obj[2:]

    def restore(self, target: object, data: bytes,
                load: Callable[[list[Any]], Mapping[str, Any]]) -> None:
        """Decode `data`, let `load(fields)` validate everything and return the new state as
        {attribute: value}, then set those attributes of `target`, and only then."""
        swap_state(target, load(self.decode(data)))


def swap_state(target: object, state: Mapping[str, Any]) -> None:
    """Set every attribute of a fully validated state at once. Each name must already exist
    on `target` (a misspelt one would otherwise add an attribute and keep the old state)."""
    missing = sorted(name for name in state if not hasattr(target, name))
    if missing:
        raise LocalError(f"{type(target).__name__} has no state attribute {missing[0]!r}")
    for name, value in state.items():
        setattr(target, name, value)
