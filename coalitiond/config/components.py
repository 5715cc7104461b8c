"""The `[component]` section of every kind, gathered: each component's configuration class,
defaults and bounds live next to the component (`components/<kind>/config.py`); this module
reads them from TOML with the shared `Table` and names the union of them all.

The direction is one way: the config package imports the components' config modules, never
the reverse, so a component never loads the config loader.
"""

from __future__ import annotations

from pathlib import Path

from ..components.almanac.config import (
    DEFAULT_TICK_INTERVAL_MS,
    MAX_TICK_INTERVAL_MS,
    MIN_TICK_INTERVAL_MS,
    AlmanacConfig,
)
from ..components.atlas.config import AtlasConfig, CatalogEntry
from ..components.chronicle.config import (
    ANCHOR_SINK_KINDS,
    DEFAULT_ANCHOR_EVERY,
    DEFAULT_EVM_CONFIRMATIONS,
    DEFAULT_LAG_ALERT_ENTRIES,
    EVM_ADDRESS_LEN,
    MAX_ANCHOR_EVERY,
    MAX_EVM_CONFIRMATIONS,
    MAX_EVM_MEMBERS,
    MAX_FALLBACK_URLS,
    AnchorSink,
    ChronicleConfig,
)
from ..components.compute.config import ComputeConfig
from ..components.feed.config import DEFAULT_FEED_MAX_BODY_BYTES, MAX_FEED_PUBLISHERS, FeedConfig
from ..components.tickets.config import (
    DEFAULT_TICKETS_MAX_CLAIMS_BYTES,
    DEFAULT_TICKETS_MAX_LIFETIME_S,
    MAX_TICKET_ISSUERS,
    MAX_TICKETS_CLAIMS_BYTES,
    MAX_TICKETS_LIFETIME_S,
    TicketsConfig,
)
from ..consensus.types import MAX_COMMAND_SIZE
from ..primitives.crypto import PUBLIC_KEY_LEN
from ..primitives.identity import ID_LEN
from .coalition import IntentsConfig, LedgerConfig, parse_confluence
from .parsing import (
    MAX_CITIZENS,
    Table,
    http_url,
    parse_follow_almanac,
    parse_hex,
    refuse_duplicate_citizens,
    refuse_duplicates,
)

ComponentConfig = (
    FeedConfig | AtlasConfig | AlmanacConfig | ChronicleConfig | ComputeConfig
    | IntentsConfig | LedgerConfig | TicketsConfig
)


def parse_component(kind: str, t: Table, base: Path) -> ComponentConfig:
    component: ComponentConfig
    if kind == "feed":
        publishers = t.hex_array("publishers", PUBLIC_KEY_LEN)
        if not 1 <= len(publishers) <= MAX_FEED_PUBLISHERS:
            raise t.error(
                "publishers", f"a feed needs 1 to {MAX_FEED_PUBLISHERS} publishers, got {len(publishers)}"
            )
        component = FeedConfig(
            publishers=publishers,
            max_body_bytes=t.integer(
                "max_body_bytes", DEFAULT_FEED_MAX_BODY_BYTES, minimum=1, maximum=MAX_COMMAND_SIZE
            ),
            follow_almanac=parse_follow_almanac(t),
        )
    elif kind == "atlas":
        rows = t.tables("citizens", limit=MAX_CITIZENS)
        entries = []
        for row in rows:
            entries.append(
                CatalogEntry(
                    stable_id=row.hex("stable_id", ID_LEN),
                    operator_key=row.hex("operator_key", PUBLIC_KEY_LEN),
                )
            )
            row.finish()
        refuse_duplicate_citizens(rows, [e.stable_id for e in entries])
        component = AtlasConfig(citizens=tuple(entries), follow_almanac=parse_follow_almanac(t))
    elif kind == "almanac":
        component = AlmanacConfig(
            tick_interval_ms=t.integer(
                "tick_interval_ms",
                DEFAULT_TICK_INTERVAL_MS,
                minimum=MIN_TICK_INTERVAL_MS,
                maximum=MAX_TICK_INTERVAL_MS,
            )
        )
    elif kind == "chronicle":
        component = ChronicleConfig(
            anchor_sink=parse_anchor_sink(t.table("anchor_sink"), base),
            anchor_every=t.integer(
                "anchor_every", DEFAULT_ANCHOR_EVERY, minimum=1, maximum=MAX_ANCHOR_EVERY
            ),
            follow_almanac=parse_follow_almanac(t),
        )
    elif kind == "compute":
        component = ComputeConfig(follow_almanac=parse_follow_almanac(t))
    elif kind == "tickets":
        issuers = t.hex_array("issuers", PUBLIC_KEY_LEN)
        if len(issuers) > MAX_TICKET_ISSUERS:
            raise t.error(
                "issuers", f"at most {MAX_TICKET_ISSUERS} issuer keys, got {len(issuers)}"
            )
        component = TicketsConfig(
            issuers=issuers,
            max_claims_bytes=t.integer(
                "max_claims_bytes",
                DEFAULT_TICKETS_MAX_CLAIMS_BYTES,
                minimum=1,
                maximum=MAX_TICKETS_CLAIMS_BYTES,
            ),
            max_lifetime_s=t.integer(
                "max_lifetime_s",
                DEFAULT_TICKETS_MAX_LIFETIME_S,
                minimum=1,
                maximum=MAX_TICKETS_LIFETIME_S,
            ),
        )
    else:
        component = parse_confluence(kind, t)
    t.finish()
    return component


def parse_anchor_sink(t: Table, base: Path) -> AnchorSink:
    kind = t.string("kind", choices=ANCHOR_SINK_KINDS)
    lag_alert = t.integer("lag_alert_entries", DEFAULT_LAG_ALERT_ENTRIES, minimum=1)
    if kind == "file":
        sink = AnchorSink(kind, path=t.path_value("path", base), lag_alert_entries=lag_alert)
    elif kind == "http":
        sink = AnchorSink(kind, url=http_url(t, "url"), lag_alert_entries=lag_alert)
    else:
        contract = _evm_address(t, "contract", t.string("contract"))
        url = http_url(t, "url")
        members = t.array("members", lambda key, v: _evm_address(t, key, v),
                          limit=MAX_EVM_MEMBERS)
        if not members:
            raise t.error("members", "the evm sink needs every member's EVM address")
        refuse_duplicates(t, "members", members)
        sink = AnchorSink(
            kind,
            url=url,
            chain_id=t.integer("chain_id", minimum=1),
            contract=contract,
            members=members,
            key_file=t.path_value("key_file", base),
            confirmations=t.integer("confirmations", DEFAULT_EVM_CONFIRMATIONS, minimum=1,
                                    maximum=MAX_EVM_CONFIRMATIONS),
            fallback_urls=t.array("fallback_urls", lambda key, v: _http_url_item(t, key, v),
                                  (), limit=MAX_FALLBACK_URLS),
            lag_alert_entries=lag_alert,
        )
    t.finish()
    return sink


def _evm_address(t: Table, key: str, value: object) -> bytes:
    """A 20-byte EVM address written as 40 hex characters, `0x` optional."""
    if not isinstance(value, str):
        raise t.error(key, "expected a hex string (an EVM address)")
    body = value[2:] if value.startswith("0x") else value
    parsed = parse_hex(body, EVM_ADDRESS_LEN)
    if isinstance(parsed, str):
        raise t.error(key, parsed)
    return parsed


def _http_url_item(t: Table, key: str, value: object) -> str:
    if not (isinstance(value, str) and value.startswith(("http://", "https://"))):
        raise t.error(key, f"expected an http:// or https:// URL, got {value!r}")
    return value

