"""Compute's `[component]` section: the Almanac it follows, if any (docs/configuration.md).
Parsed from TOML by `coalitiond.config.components`; consensus content via `to_cbor`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ComputeConfig:
    KIND: ClassVar[str] = "compute"
    #: Committee id of the Almanac whose ticks stamp grants and deadlines.
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {"follow_almanac": self.follow_almanac}
