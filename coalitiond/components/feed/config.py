"""The feed's `[component]` section: its publishers and body bound (docs/configuration.md).
Parsed from TOML by `coalitiond.config.components`; consensus content via `to_cbor`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ...consensus.types import MAX_COMMAND_SIZE

#: The feed component keeps its publishers in memory and checks each publish against them.
MAX_FEED_PUBLISHERS: Final = 64
DEFAULT_FEED_MAX_BODY_BYTES: Final = MAX_COMMAND_SIZE // 2


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """`feed`: a certified feed an operator publishes into (SPEC §5)."""

    KIND: ClassVar[str] = "feed"
    #: Client keys allowed to `publish`.
    publishers: tuple[bytes, ...]
    max_body_bytes: int = DEFAULT_FEED_MAX_BODY_BYTES
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "publishers": list(self.publishers),
            "max_body_bytes": self.max_body_bytes,
            "follow_almanac": self.follow_almanac,
        }
