"""The chronicle's `[component]` section: how often it anchors and where anchors go
(docs/configuration.md). Parsed from TOML by `coalitiond.config.components`; consensus
content via `to_cbor` (a sink's file path or URL is the member's own business)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

ANCHOR_SINK_KINDS: Final = ("file", "http", "evm")
MAX_ANCHOR_EVERY: Final = 1_000_000
DEFAULT_ANCHOR_EVERY: Final = 1_000
EVM_ADDRESS_LEN: Final = 20


@dataclass(frozen=True, slots=True)
class AnchorSink:
    """Where Chronicle anchors go. Only `evm`'s chain and contract are consensus content:
    a file path or URL is this member's own business and may differ between members."""

    kind: str
    path: Path | None = None
    url: str | None = None
    chain_id: int | None = None
    contract: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {"kind": self.kind, "chain_id": self.chain_id, "contract": self.contract}


@dataclass(frozen=True, slots=True)
class ChronicleConfig:
    KIND: ClassVar[str] = "chronicle"
    anchor_sink: AnchorSink
    anchor_every: int = DEFAULT_ANCHOR_EVERY
    follow_almanac: bytes | None = None

    def to_cbor(self) -> dict[str, Any]:
        return {
            "anchor_every": self.anchor_every,
            "anchor_sink": self.anchor_sink.to_cbor(),
            "follow_almanac": self.follow_almanac,
        }
