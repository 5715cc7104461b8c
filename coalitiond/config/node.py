"""The `[node]` and `[network]` sections: where this node keeps its key and data, where it
listens, how it logs, and the network it belongs to (local to the node, except the network
name, which is folded into the committee id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..primitives.committee import network_id
from .parsing import Address, Table, parse_address, toml_type

LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MAX_BOOTSTRAP_PEERS: Final = 64
#: Ticket issuer roots one ACL recognises (and issuer configs a node names).
MAX_RECOGNISED_ISSUERS: Final = 16
#: Citizen configs one confluence member names (the confluence's citizens are bounded alike).
MAX_CITIZEN_CONFIGS: Final = 256
#: `snapshot_interval` / `snapshots_kept` defaults and bounds (node/snapshots.py uses them).
DEFAULT_SNAPSHOT_INTERVAL: Final = 1000
MAX_SNAPSHOT_INTERVAL: Final = 1 << 32
DEFAULT_SNAPSHOTS_KEPT: Final = 3
MAX_SNAPSHOTS_KEPT: Final = 16



@dataclass(frozen=True, slots=True)
class NodeConfig:
    key_file: Path
    data_dir: Path
    listen: Address
    advertise: Address
    metrics: Address | None = None
    log_format: str = "auto"
    log_level: str = "info"
    #: A member config of the Almanac committee this committee's component follows
    #: (`component.follow_almanac`): where its members are and what its id is made of. Local
    #: to this node (not consensus content); read at start.
    almanac_config: Path | None = None
    #: Member configs of the ticket issuers `committee.acl.ticket_issuers` recognises, one
    #: per issuer root (local to this node; read at start).
    ticket_issuer_configs: tuple[Path, ...] = ()
    #: Member configs of the citizen feed committees a confluence (intents, ledger) spans,
    #: one per spanned citizen (local to this node; read at start, re-read to notice a
    #: citizen's configuration change).
    citizen_configs: tuple[Path, ...] = ()
    #: Blocks between two executor snapshots in `<data_dir>/snapshots/` (0: write none);
    #: a restart replays only the blocks after the newest good one (docs/formats.md §8).
    snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL
    #: Snapshot files kept (the newest ones).
    snapshots_kept: int = DEFAULT_SNAPSHOTS_KEPT
    #: Start an empty log from a peer's certified snapshot instead of from genesis
    #: (docs/protocol.md §12); ignored once the log holds anything.
    state_sync: bool = False


def _path_item(t: Table, base: Path) -> Callable[[str, Any], Path]:
    def one(key: str, v: Any) -> Path:
        if not isinstance(v, str) or not v:
            raise t.error(key, f"expected a non-empty string (a path), got {toml_type(v)}")
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p
    return one


def parse_node(t: Table, base: Path) -> NodeConfig:
    listen = t.address("listen")
    node = NodeConfig(
        key_file=t.path_value("key_file", base),
        data_dir=t.path_value("data_dir", base),
        listen=listen,
        advertise=t.address("advertise", listen),
        metrics=t.address("metrics", None),
        log_format=t.string("log_format", "auto", choices=LOG_FORMATS),
        log_level=t.string("log_level", "info", choices=LOG_LEVELS),
        almanac_config=t.path_value("almanac_config", base, None),
        ticket_issuer_configs=t.array("ticket_issuer_configs", _path_item(t, base), (),
                                      limit=MAX_RECOGNISED_ISSUERS),
        citizen_configs=t.array("citizen_configs", _path_item(t, base), (),
                                limit=MAX_CITIZEN_CONFIGS),
        snapshot_interval=t.integer("snapshot_interval", DEFAULT_SNAPSHOT_INTERVAL,
                                    maximum=MAX_SNAPSHOT_INTERVAL),
        snapshots_kept=t.integer("snapshots_kept", DEFAULT_SNAPSHOTS_KEPT, minimum=1,
                                 maximum=MAX_SNAPSHOTS_KEPT),
        state_sync=t._get("state_sync", False, bool, "a boolean"),
    )
    t.finish()
    return node


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    name: str
    bootstrap: tuple[Address, ...] = ()

    @property
    def network_id(self) -> bytes:
        return network_id(self.name)


def parse_network(t: Table) -> NetworkConfig:
    def addr(key: str, v: Any) -> Address:
        if not isinstance(v, str):
            raise t.error(key, f"expected a string HOST:PORT, got {toml_type(v)}")
        parsed = parse_address(v)
        if isinstance(parsed, str):
            raise t.error(key, parsed)
        return parsed

    net = NetworkConfig(
        name=t.string("name"),
        bootstrap=t.array("bootstrap", addr, (), limit=MAX_BOOTSTRAP_PEERS),
    )
    t.finish()
    return net

