"""The whole member config file: `parse_config` and `load_config` (read, validate, check the
key file), `MemberConfig` and what a committee derives from it (its spec, the component
config digest, a confluence's fingerprint); and the standalone coalition file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..primitives.coalition import MODULES, Coalition, confluence_fingerprint
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import ConfigError
from ..primitives.identity import hash_structure
from ..primitives.keys import load_key_file
from .attestation import AttestationConfig, parse_attestation
from .coalition import ConfluenceComponentConfig, parse_coalition_table
from .committee import CommitteeConfig, parse_committee
from .components import ComponentConfig, parse_component
from .node import NetworkConfig, NodeConfig, parse_network, parse_node
from .parsing import Table, read_toml
from .transport import TransportSettings, parse_transport


@dataclass(frozen=True, slots=True)
class MemberConfig:
    path: Path
    node: NodeConfig
    network: NetworkConfig
    committee: CommitteeConfig
    attestation: AttestationConfig
    component: ComponentConfig
    coalition: Coalition | None = None
    #: The optional `[transport]` section (reader admission, queue budgets, rate limits).
    transport: TransportSettings = field(default_factory=TransportSettings)

    @property
    def component_config_digest(self) -> bytes:
        """Everything that decides how a block's commands execute, hashed into the committee
        id: the component kind, its (normalised) section and the client ACL. Members whose
        ACLs differed would admit different commands at apply time and split their state,
        so they must never form a quorum together."""
        return hash_structure("component-config", 1, self.committee.component,
                              self.component.to_cbor(), self.committee.acl.to_cbor())

    def committee_spec(self) -> CommitteeSpec:
        """The committee every layer agrees on, byte for byte."""
        return CommitteeSpec(
            network_name=self.network.name,
            component_kind=self.committee.component,
            component_name=self.committee.name,
            members=self.committee.peer_ids,
            fault_bound=self.committee.effective_fault_bound,
            epoch=self.committee.epoch,
            component_config_digest=self.component_config_digest,
        )

    def confluence_fingerprint(self) -> bytes | None:
        """For an intents/ledger member: the fingerprint coalitions reference it by."""
        if not isinstance(self.component, ConfluenceComponentConfig):
            return None
        return confluence_fingerprint(
            self.committee.name,
            self.component.citizens,
            {
                "parameters": self.component.to_cbor(),
                "state_machine": f"{self.component.KIND}/v1",
            },
            self.committee.acl.to_cbor(),
        )


def parse_config(data: Mapping[str, Any], path: Path) -> MemberConfig:
    """Validate parsed TOML as a member config. Pure: touches no file."""
    top = Table(str(path), data, "")
    base = path.parent
    node_t = top.table("node")
    network_t = top.table("network")
    committee_t = top.table("committee")
    attestation_t = top.table("attestation")
    component_t = top.table("component")
    coalition_t = top.optional_table("coalition")
    transport_t = top.optional_table("transport")
    top.finish()
    node = parse_node(node_t, base)
    network = parse_network(network_t)
    committee = parse_committee(committee_t)
    attestation = parse_attestation(attestation_t, base)
    component = parse_component(committee.component, component_t, base)
    coalition = None if coalition_t is None else parse_coalition_table(coalition_t)
    if (
        coalition is not None
        and committee.component in MODULES
        and committee.component not in coalition.modules
    ):
        raise ConfigError(
            str(path),
            "committee.component",
            f"this member serves module {committee.component!r}, which coalition.modules "
            f"does not ship",
        )
    return MemberConfig(
        path=path,
        node=node,
        network=network,
        committee=committee,
        attestation=attestation,
        component=component,
        coalition=coalition,
        transport=parse_transport(transport_t),
    )


def check_member_key(config: MemberConfig) -> int:
    """Load the node's key file and return its member index; refuse a key not in the list."""
    key = load_key_file(config.node.key_file)
    try:
        return config.committee.peer_ids.index(key.public)
    except ValueError:
        raise ConfigError(
            str(config.path),
            "node.key_file",
            f"this node's public key {key.public.hex()} (from {config.node.key_file}) is not "
            f"among committee.members",
        ) from None


def load_config(path: Path, *, check_key: bool = True) -> MemberConfig:
    """Read, validate and (unless `check_key=False`) check the key file of a member config."""
    config = parse_config(read_toml(path), path)
    if check_key:
        check_member_key(config)
    return config


def parse_coalition(data: Mapping[str, Any], path: Path) -> Coalition:
    """Validate parsed TOML as a standalone coalition file (only a `[coalition]` table)."""
    top = Table(str(path), data, "")
    t = top.table("coalition")
    top.finish()
    return parse_coalition_table(t)


def load_coalition(path: Path) -> Coalition:
    """The coalition of a standalone coalition file or of a member config's `[coalition]`."""
    data = read_toml(path)
    if set(data) == {"coalition"}:
        return parse_coalition(data, path)
    config = parse_config(data, path)
    if config.coalition is None:
        raise ConfigError(str(path), "coalition", "missing required table")
    return config.coalition

