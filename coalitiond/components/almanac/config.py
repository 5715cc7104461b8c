"""The almanac's `[component]` section: the tick interval, and the bounds every tick length
is held to (a Compute following an Almanac uses them too). Parsed from TOML by
`coalitiond.config.components`; consensus content via `to_cbor`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

MAX_TICK_INTERVAL_MS: Final = 86_400_000
MIN_TICK_INTERVAL_MS: Final = 10
DEFAULT_TICK_INTERVAL_MS: Final = 1_000


@dataclass(frozen=True, slots=True)
class AlmanacConfig:
    KIND: ClassVar[str] = "almanac"
    tick_interval_ms: int = DEFAULT_TICK_INTERVAL_MS

    def to_cbor(self) -> dict[str, Any]:
        return {"tick_interval_ms": self.tick_interval_ms}
