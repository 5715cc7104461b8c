"""Member configuration: TOML → frozen, typed objects (SPEC §1). One job: turn a member's
config file into the `MemberConfig` every layer reads, or refuse it with one clear line.

One file per member, sections `[node]`, `[network]`, `[committee]`, `[attestation]`,
`[component]` and, optionally, `[coalition]`. A standalone coalition file holds only
`[coalition]` (see `load_coalition`). `docs/configuration.md` lists every key.

Every refusal is a `ConfigError(path, key, problem)` whose message is one line naming the
file, the dotted key (`committee.members[2].peer_id`) and the problem. Unknown keys are
refused rather than ignored: a misspelt `fault_bnd` silently falling back to a default is
exactly the kind of mistake that splits a committee.

Parsing (`parse_config`, `parse_coalition`) is pure: it reads no file other than the TOML it
is given. `load_config` adds the one check that needs the disk: the node's key file must load
and its public key must be one of the members.

Where things are: `parsing` (the TOML `Table` reader and shared value parsers), `node`
(`[node]`, `[network]`), `committee`, `attestation`, `coalition` (`[coalition]` and the
confluences' sections), `components` (every kind's `[component]` section, gathered from
`coalitiond.components.<kind>.config`), `loader` (the whole file) and `template` (commented
config text for `coalitiond init` and `devnet`). This package namespace gathers all of them.
"""

from __future__ import annotations

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
    EVM_ADDRESS_LEN,
    MAX_ANCHOR_EVERY,
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
from ..primitives.committee import MAX_COMMITTEE_MEMBERS
from ..primitives.errors import ConfigError
from .attestation import (
    ATTESTATION_MODES,
    ATTESTATION_POLICY_EXTENSIONS,
    DEFAULT_MAX_TICKET_AGE_S,
    MRTD_LEN,
    RTMR_COUNT,
    TCB_STATUSES,
    AttestationConfig,
)
from .coalition import (
    CONFLUENCE_KINDS,
    FAILURE_MODES,
    ConfluenceComponentConfig,
    IntentsConfig,
    LedgerConfig,
)
from .committee import (
    COMPONENT_KINDS,
    DEFAULT_BATCH_INTERVAL_MS,
    DEFAULT_BATCH_MAX_COMMANDS,
    DEFAULT_LEADER_TIMEOUT_MS,
    DEFAULT_VIEW_TIMEOUT_MS,
    MAX_TIMEOUT_MS,
    AclConfig,
    CommitteeConfig,
    MemberEntry,
    TimingConfig,
)
from .components import ComponentConfig
from .loader import (
    MemberConfig,
    check_member_key,
    load_coalition,
    load_config,
    parse_coalition,
    parse_config,
)
from .node import (
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_BOOTSTRAP_PEERS,
    MAX_RECOGNISED_ISSUERS,
    NetworkConfig,
    NodeConfig,
)
from .parsing import (
    MAX_CITIZENS,
    MAX_CONFIG_FILE_BYTES,
    MAX_KEYS_PER_LIST,
    MAX_STRING_LEN,
    Address,
)

__all__ = [
    "ANCHOR_SINK_KINDS", "ATTESTATION_MODES", "ATTESTATION_POLICY_EXTENSIONS",
    "COMPONENT_KINDS", "CONFLUENCE_KINDS", "DEFAULT_ANCHOR_EVERY", "DEFAULT_BATCH_INTERVAL_MS",
    "DEFAULT_BATCH_MAX_COMMANDS", "DEFAULT_FEED_MAX_BODY_BYTES", "DEFAULT_LEADER_TIMEOUT_MS",
    "DEFAULT_MAX_TICKET_AGE_S", "DEFAULT_TICKETS_MAX_CLAIMS_BYTES",
    "DEFAULT_TICKETS_MAX_LIFETIME_S", "DEFAULT_TICK_INTERVAL_MS", "DEFAULT_VIEW_TIMEOUT_MS",
    "EVM_ADDRESS_LEN", "FAILURE_MODES", "LOG_FORMATS", "LOG_LEVELS", "MAX_ANCHOR_EVERY",
    "MAX_BOOTSTRAP_PEERS", "MAX_CITIZENS", "MAX_COMMITTEE_MEMBERS", "MAX_CONFIG_FILE_BYTES",
    "MAX_FEED_PUBLISHERS", "MAX_KEYS_PER_LIST", "MAX_RECOGNISED_ISSUERS", "MAX_STRING_LEN",
    "MAX_TICKETS_CLAIMS_BYTES", "MAX_TICKETS_LIFETIME_S", "MAX_TICKET_ISSUERS",
    "MAX_TICK_INTERVAL_MS", "MAX_TIMEOUT_MS", "MIN_TICK_INTERVAL_MS", "MRTD_LEN", "RTMR_COUNT",
    "TCB_STATUSES", "AclConfig", "Address", "AlmanacConfig", "AnchorSink", "AtlasConfig",
    "AttestationConfig", "CatalogEntry", "ChronicleConfig", "CommitteeConfig",
    "ComponentConfig", "ComputeConfig", "ConfigError", "ConfluenceComponentConfig",
    "FeedConfig", "IntentsConfig", "LedgerConfig", "MemberConfig", "MemberEntry",
    "NetworkConfig", "NodeConfig", "TicketsConfig", "TimingConfig", "check_member_key",
    "load_coalition", "load_config", "parse_coalition", "parse_config",
]
