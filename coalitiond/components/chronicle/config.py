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
#: Confirmation depth the EVM sink waits for: 1 = the block that includes the post.
DEFAULT_EVM_CONFIRMATIONS: Final = 2
MAX_EVM_CONFIRMATIONS: Final = 1_000
#: Anchor lag (entries committed but not yet anchored by this member) above which
#: `coalitiond_anchor_lag_alert` is 1 and `anchors.lagging` is logged.
DEFAULT_LAG_ALERT_ENTRIES: Final = 10_000
MAX_FALLBACK_URLS: Final = 7
#: Largest committee whose EVM addresses the sink lists (the contract's constructor bound).
MAX_EVM_MEMBERS: Final = 64


@dataclass(frozen=True, slots=True)
class AnchorSink:
    """Where Chronicle anchors go. Only `evm`'s chain, contract and member addresses are
    consensus content: a file path, URL, key file or confirmation depth is this member's
    own business and may differ between members."""

    kind: str
    path: Path | None = None
    url: str | None = None
    chain_id: int | None = None
    contract: bytes | None = None
    #: evm: every member's account (20 bytes), in committee member order.
    members: tuple[bytes, ...] = ()
    #: evm: this member's account key (components/chronicle/evm_keys.py).
    key_file: Path | None = None
    confirmations: int = DEFAULT_EVM_CONFIRMATIONS
    fallback_urls: tuple[str, ...] = ()
    lag_alert_entries: int = DEFAULT_LAG_ALERT_ENTRIES

    def to_cbor(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "chain_id": self.chain_id,
                               "contract": self.contract}
        if self.kind == "evm":
            out["members"] = list(self.members)
        return out


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
