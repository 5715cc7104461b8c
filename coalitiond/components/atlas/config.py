"""The atlas's `[component]` section: the ordered catalogue of citizens and the key allowed
to publish each one's card (docs/configuration.md). Parsed from TOML by
`coalitiond.config.components`; consensus content via `to_cbor`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    stable_id: bytes
    operator_key: bytes


@dataclass(frozen=True, slots=True)
class AtlasConfig:
    """`atlas`: the ordered catalogued citizens, each with the key allowed to publish its card."""

    KIND: ClassVar[str] = "atlas"
    citizens: tuple[CatalogEntry, ...]
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "citizens": [[c.stable_id, c.operator_key] for c in self.citizens],
            "follow_almanac": self.follow_almanac,
        }
