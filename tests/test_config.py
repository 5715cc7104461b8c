"""Configuration: TOML → frozen typed objects, and every refusal with its exact message."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from coalitiond.config import (
    COMPONENT_KINDS,
    MAX_CONFIG_FILE_BYTES,
    Address,
    AlmanacConfig,
    AtlasConfig,
    ChronicleConfig,
    ComputeConfig,
    FeedConfig,
    IntentsConfig,
    LedgerConfig,
    MemberConfig,
    TicketsConfig,
    load_coalition,
    load_config,
    parse_config,
)
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.errors import ConfigError, KeyFileError
from coalitiond.primitives.identity import digest, hash_structure, make_id
from coalitiond.primitives.keys import write_key_file

REPO = Path(__file__).resolve().parent.parent
KEYS = [SigningKey(digest(f"test-config-member-{i}".encode())) for i in range(4)]
CLIENT = SigningKey(digest(b"test-config-client"))
P = [k.public.hex() for k in KEYS]

BASE = f"""
[node]
key_file = "keys/member.key"
data_dir = "data"
listen = "127.0.0.1:7000"

[network]
name = "testnet"

[committee]
component = "feed"
name = "test-feed"

[[committee.members]]
peer_id = "{P[0]}"
address = "127.0.0.1:7000"
operator = "a"

[[committee.members]]
peer_id = "{P[1]}"
address = "127.0.0.1:7001"

[[committee.members]]
peer_id = "{P[2]}"
address = "127.0.0.1:7002"

[[committee.members]]
peer_id = "{P[3]}"
address = "127.0.0.1:7003"

[attestation]
mode = "none"

[component]
publishers = ["{CLIENT.public.hex()}"]
"""

COMPONENT_SECTIONS = {
    "feed": f'publishers = ["{CLIENT.public.hex()}"]',
    "atlas": f"""
[[component.citizens]]
stable_id = "{make_id("lattice|a").hex()}"
operator_key = "{CLIENT.public.hex()}"
""",
    "almanac": "tick_interval_ms = 500",
    "chronicle": """
anchor_every = 10
[component.anchor_sink]
kind = "file"
path = "anchors.jsonl"
""",
    "compute": "",
    "intents": f"""
failure_mode = "partial"
follow_almanac = "{make_id("almanac").hex()}"
partial_deadline_ticks = 5
[[component.citizens]]
stable_id = "{make_id("lattice|a").hex()}"
[[component.citizens]]
stable_id = "{make_id("lattice|b").hex()}"
content_hash = "{make_id("pin").hex()}"
""",
    "ledger": f"""
[[component.citizens]]
stable_id = "{make_id("lattice|a").hex()}"
""",
    "tickets": f'issuers = ["{CLIENT.public.hex()}"]',
}

PATH = Path("/etc/coalitiond/member.toml")


def parse(text: str, path: Path = PATH) -> MemberConfig:
    return parse_config(tomllib.loads(text), path)


def with_component(kind: str, body: str | None = None) -> str:
    head = BASE[: BASE.index("[component]")].replace('component = "feed"', f'component = "{kind}"')
    return head + "[component]\n" + (COMPONENT_SECTIONS[kind] if body is None else body) + "\n"


def refused(text: str, key: str, problem: str, path: Path = PATH) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, path)
    err = info.value
    assert (err.key, err.problem) == (key, problem)
    assert str(err) == f"{path}: {key}: {problem}"
    assert "\n" not in str(err)
    return err


# --- the happy path ---------------------------------------------------------------------


def test_base_config_parses_with_defaults() -> None:
    c = parse(BASE)
    assert c.node.key_file == Path("/etc/coalitiond/keys/member.key")  # relative → config dir
    assert c.node.data_dir == Path("/etc/coalitiond/data")
    assert c.node.listen == Address("127.0.0.1", 7000)
    assert c.node.advertise == c.node.listen
    assert c.node.metrics is None
    assert (c.node.log_format, c.node.log_level) == ("auto", "info")
    assert c.network.bootstrap == ()
    assert c.network.network_id == make_id("testnet")
    assert c.committee.fault_bound is None and c.committee.effective_fault_bound == 1
    assert c.committee.members[0].operator == "a" and c.committee.members[1].operator == ""
    assert c.committee.timing.leader_timeout_ms == 1000
    assert c.committee.timing.view_timeout_ms == 2000
    assert c.committee.max_block_bytes == 2 * 1024 * 1024
    assert c.committee.acl.clients == ()
    assert c.attestation.mode == "none" and c.attestation.tcb_statuses == ("UpToDate",)
    assert c.component == FeedConfig(publishers=(CLIENT.public,))
    assert c.coalition is None


def test_absolute_paths_stay_and_home_expands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/op")
    c = parse(BASE.replace('"keys/member.key"', '"~/k.key"').replace('"data"', '"/var/lib/x"'))
    assert c.node.key_file == Path("/home/op/k.key")
    assert c.node.data_dir == Path("/var/lib/x")


def test_committee_spec() -> None:
    c = parse(BASE)
    spec = c.committee_spec()
    assert spec.members == tuple(k.public for k in KEYS)
    assert (spec.n, spec.fault_bound, spec.quorum) == (4, 1, 3)
    assert spec.component_kind == "feed" and spec.component_name == "test-feed"
    assert spec.network_name == "testnet"
    assert spec.component_config_digest == c.component_config_digest
    explicit = parse(BASE.replace('name = "test-feed"', 'name = "test-feed"\nfault_bound = 2'))
    # n=4, f_s=2: q = ceil(7/2) = 4, so safety in fact covers 2q - n - 1 = 3.
    assert (explicit.committee_spec().quorum, explicit.committee_spec().safety_bound) == (4, 3)
    assert explicit.committee_spec().committee_id != spec.committee_id


def test_component_config_digest_is_of_the_normalised_section() -> None:
    c = parse(BASE)
    expected = hash_structure(
        "component-config", 1, "feed",
        {"publishers": [CLIENT.public], "max_body_bytes": 32768, "follow_almanac": None},
        c.committee.acl.to_cbor())
    assert c.component_config_digest == expected
    # Writing a default out explicitly is the same configuration.
    explicit = parse(BASE + "max_body_bytes = 32768\n")
    assert explicit.component_config_digest == c.component_config_digest
    changed = parse(BASE + "max_body_bytes = 100\n")
    assert changed.component_config_digest != c.component_config_digest


def test_the_client_acl_is_part_of_the_committee_id() -> None:
    # Members with different allow-lists would execute the same block differently.
    c = parse(BASE)
    other = SigningKey.generate().public.hex()
    widened = parse(BASE.replace("[attestation]",
                                 f'[committee.acl]\nclients = ["{other}"]\n\n[attestation]', 1))
    assert widened.committee.acl.clients != c.committee.acl.clients
    assert widened.committee_spec().committee_id != c.committee_spec().committee_id


def test_anchor_sink_location_is_not_consensus_content() -> None:
    a = parse(with_component("chronicle"))
    b = parse(with_component("chronicle").replace('path = "anchors.jsonl"', 'path = "/x/y"'))
    assert a.component != b.component
    assert a.component_config_digest == b.component_config_digest


@pytest.mark.parametrize("kind", COMPONENT_KINDS)
def test_every_component_kind(kind: str) -> None:
    c = parse(with_component(kind))
    classes = {"feed": FeedConfig, "atlas": AtlasConfig, "almanac": AlmanacConfig,
               "chronicle": ChronicleConfig, "compute": ComputeConfig,
               "intents": IntentsConfig, "ledger": LedgerConfig, "tickets": TicketsConfig}
    assert type(c.component) is classes[kind]
    assert c.committee_spec().component_kind == kind
    assert (c.confluence_fingerprint() is None) == (kind not in ("intents", "ledger"))


def test_component_values() -> None:
    intents = parse(with_component("intents")).component
    assert isinstance(intents, IntentsConfig)
    assert intents.failure_mode == "partial"
    assert [r.stable_id for r in intents.citizens] == [make_id("lattice|a"), make_id("lattice|b")]
    assert intents.citizens[1].content_hash == make_id("pin")
    ledger = parse(with_component("ledger")).component
    assert isinstance(ledger, LedgerConfig) and ledger.failure_mode == "stall"
    chronicle = parse(with_component("chronicle")).component
    assert isinstance(chronicle, ChronicleConfig)
    assert chronicle.anchor_sink.path == Path("/etc/coalitiond/anchors.jsonl")
    assert chronicle.anchor_every == 10
    almanac = parse(with_component("almanac")).component
    assert almanac == AlmanacConfig(tick_interval_ms=500)
    assert parse(with_component("almanac", "")).component == AlmanacConfig(tick_interval_ms=1000)
    atlas = parse(with_component("atlas")).component
    assert isinstance(atlas, AtlasConfig) and atlas.citizens[0].operator_key == CLIENT.public
    evm = parse(with_component("chronicle", """
[component.anchor_sink]
kind = "evm"
chain_id = 1
contract = "0x00000000000000000000000000000000000000aa"
url = "http://127.0.0.1:8545"
members = ["0x0101010101010101010101010101010101010101", "0202020202020202020202020202020202020202"]
key_file = "evm.key"
confirmations = 3
fallback_urls = ["http://127.0.0.1:8546"]
lag_alert_entries = 500
""")).component
    assert isinstance(evm, ChronicleConfig)
    sink = evm.anchor_sink
    assert sink.contract == b"\x00" * 19 + b"\xaa"
    assert sink.members == (b"\x01" * 20, b"\x02" * 20)
    assert sink.key_file is not None and sink.key_file.name == "evm.key"
    assert (sink.confirmations, sink.fallback_urls, sink.lag_alert_entries) == (
        3, ("http://127.0.0.1:8546",), 500)
    # Only the chain, the contract and the members are consensus content.
    assert sink.to_cbor() == {"kind": "evm", "chain_id": 1, "contract": sink.contract,
                              "members": [b"\x01" * 20, b"\x02" * 20]}
    compute = parse(with_component("compute", f'follow_almanac = "{make_id("alm").hex()}"'))
    assert compute.component == ComputeConfig(follow_almanac=make_id("alm"))


def test_objects_are_frozen() -> None:
    c = parse(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.node.listen = Address("x", 1)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.committee.epoch = 3  # type: ignore[misc]


def test_addresses() -> None:
    c = parse(BASE.replace('listen = "127.0.0.1:7000"',
                           'listen = "[::1]:7000"\nadvertise = "node.example:7100"\n'
                           'metrics = "127.0.0.1:9100"'))
    assert c.node.listen == Address("::1", 7000) and str(c.node.listen) == "[::1]:7000"
    assert str(c.node.advertise) == "node.example:7100"
    assert c.node.metrics == Address("127.0.0.1", 9100)


@pytest.mark.parametrize("kind", COMPONENT_KINDS)
def test_example_configs_load(kind: str) -> None:
    c = load_config(REPO / "configs" / f"{kind}.toml", check_key=False)
    assert c.committee.component == kind
    assert len(c.committee.members) == 5 and c.committee_spec().quorum == 4


def test_confluence_fingerprint_of_a_member_config() -> None:
    c = parse(with_component("intents"))
    fp = c.confluence_fingerprint()
    assert fp is not None and len(fp) == 32
    other = parse(with_component("intents").replace('name = "test-feed"', 'name = "other"'))
    assert other.confluence_fingerprint() != fp
    # Membership is not part of a confluence's identity: rotating members keeps it.
    rotated = parse(with_component("intents").replace('operator = "a"', 'operator = "b"'))
    assert rotated.confluence_fingerprint() == fp


# --- refusals ---------------------------------------------------------------------------


def test_unknown_keys() -> None:
    refused(BASE + "\n[extra]\n", "extra",
            "unknown key (allowed here: attestation, coalition, committee, component, network, node, transport)")
    refused(BASE.replace('data_dir = "data"', 'data_dir = "data"\ndatadir = "x"'), "node.datadir",
            "unknown key (allowed here: advertise, almanac_config, citizen_configs, data_dir, key_file, listen, log_format, "
            "log_level, metrics, snapshot_interval, snapshots_kept, state_sync, ticket_issuer_configs)")
    refused(BASE.replace('operator = "a"', 'operator = "a"\nweight = 2'),
            "committee.members[0].weight",
            "unknown key (allowed here: address, operator, peer_id)")
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nfault_bnd = 1'),
            "committee.fault_bnd",
            "unknown key (allowed here: acl, component, epoch, fault_bound, max_block_bytes, "
            "members, name, timing)")
    refused(BASE + "operators = []\n", "component.operators",
            "unknown key (allowed here: follow_almanac, max_body_bytes, publishers)")


def test_missing_keys_and_tables() -> None:
    refused(BASE.replace('listen = "127.0.0.1:7000"\n', ""), "node.listen", "missing required key")
    refused(BASE.replace("[attestation]\nmode = \"none\"\n", ""), "attestation",
            "missing required table")
    refused(BASE.replace('[attestation]\nmode = "none"', "[attestation]"), "attestation.mode",
            "missing required key")
    refused(with_component("feed", ""), "component.publishers", "missing required key")
    refused(with_component("chronicle", "anchor_every = 5"), "component.anchor_sink",
            "missing required table")
    refused(BASE.replace('peer_id = "' + P[1] + '"\n', ""), "committee.members[1].peer_id",
            "missing required key")


def test_wrong_types() -> None:
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nepoch = "0"'),
            "committee.epoch", "expected an integer, got a string")
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nepoch = true'),
            "committee.epoch", "expected an integer, got a boolean")
    refused(BASE.replace('name = "testnet"', "name = 7"), "network.name",
            "expected a string, got an integer")
    refused(BASE.replace('listen = "127.0.0.1:7000"', 'listen = 7000'), "node.listen",
            "expected a string HOST:PORT, got an integer")
    refused('network = "testnet"\n' + BASE.replace('[network]\nname = "testnet"', ""), "network",
            "expected a table, got a string")
    refused(BASE + "max_body_bytes = 1.5\n", "component.max_body_bytes",
            "expected an integer, got a float")
    refused(with_component("feed", "publishers = [1]"), "component.publishers[0]",
            "expected a hex string, got an integer")
    refused(with_component("feed", 'publishers = "ab"'), "component.publishers",
            "expected an array, got a string")
    refused(BASE.replace('name = "testnet"', 'name = "testnet"\nbootstrap = [7]'),
            "network.bootstrap[0]", "expected a string HOST:PORT, got an integer")


def test_bad_hex() -> None:
    refused(BASE.replace(P[2], P[2][:62]), "committee.members[2].peer_id",
            "expected 64 hex characters (32 bytes), got 62")
    refused(BASE.replace(P[2], "zz" + P[2][2:]), "committee.members[2].peer_id",
            f"not a hex string: {'zz' + P[2][2:]!r}")
    spaced = P[2][:30] + "  " + P[2][32:]
    refused(BASE.replace(P[2], spaced), "committee.members[2].peer_id",
            f"not a hex string: {spaced!r}")
    refused(BASE.replace('name = "testnet"', f'name = "{"n" * 513}"'), "network.name",
            "longer than 512 characters")
    refused(with_component("feed", 'publishers = ["abcd"]'), "component.publishers[0]",
            "expected 64 hex characters (32 bytes), got 4")
    refused(BASE.replace('mode = "none"', 'mode = "none"\nmrtd = ["00"]'), "attestation.mrtd[0]",
            "expected 96 hex characters (48 bytes), got 2")
    refused(with_component("chronicle", """
[component.anchor_sink]
kind = "evm"
chain_id = 1
contract = "0x1234"
url = "http://127.0.0.1:8545"
"""), "component.anchor_sink.contract", "expected 40 hex characters (20 bytes), got 4")
    evm = """
[component.anchor_sink]
kind = "evm"
chain_id = 1
contract = "0x00000000000000000000000000000000000000aa"
url = "http://127.0.0.1:8545"
key_file = "evm.key"
"""
    refused(with_component("chronicle", evm + 'members = ["0x12"]\n'),
            "component.anchor_sink.members[0]", "expected 40 hex characters (20 bytes), got 2")
    refused(with_component("chronicle", evm + "members = []\n"),
            "component.anchor_sink.members", "the evm sink needs every member's EVM address")
    refused(with_component("chronicle", evm + f'members = ["{"01" * 20}", "{"01" * 20}"]\n'),
            "component.anchor_sink.members[1]", "duplicate of component.anchor_sink.members[0]")
    refused(with_component("chronicle", evm + f'members = ["{"01" * 20}"]\nconfirmations = 0\n'),
            "component.anchor_sink.confirmations", "must be at least 1, got 0")


def test_duplicates() -> None:
    refused(BASE.replace(P[2], P[0]), "committee.members[2].peer_id",
            "duplicate member: same peer id as committee.members[0]")
    refused(BASE.replace('"127.0.0.1:7003"', '"127.0.0.1:7001"'), "committee.members[3].address",
            "duplicate address: same as committee.members[1]")
    pub = CLIENT.public.hex()
    refused(with_component("feed", f'publishers = ["{pub}", "{pub}"]'), "component.publishers[1]",
            "duplicate of component.publishers[0]")
    a = make_id("lattice|a").hex()
    refused(with_component("ledger", f"""
[[component.citizens]]
stable_id = "{a}"
[[component.citizens]]
stable_id = "{a}"
"""), "component.citizens[1].stable_id",
            "duplicate citizen: same stable id as component.citizens[0]")


def test_quorum_larger_than_committee() -> None:
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nfault_bound = 4'),
            "committee.fault_bound",
            "q > n: fault bound f_s=4 needs quorum q=5 = ceil((n + f_s + 1)/2), "
            "but the committee has only n=4 members")
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nfault_bound = -1'),
            "committee.fault_bound", "must be at least 0, got -1")


def test_value_problems() -> None:
    refused(BASE.replace('component = "feed"', 'component = "oracle"'), "committee.component",
            "expected one of atlas, almanac, chronicle, compute, intents, ledger, feed, "
            "tickets; got 'oracle'")
    refused(with_component("intents").replace('"partial"', '"maybe"'), "component.failure_mode",
            "expected one of partial, stall; got 'maybe'")
    refused(BASE.replace('listen = "127.0.0.1:7000"', 'listen = "localhost"'), "node.listen",
            "expected HOST:PORT, got 'localhost'")
    refused(BASE.replace('listen = "127.0.0.1:7000"', 'listen = "127.0.0.1:70000"'),
            "node.listen", "expected HOST:PORT with a port in 1..65535, got '127.0.0.1:70000'")
    refused(BASE.replace('listen = "127.0.0.1:7000"', 'listen = "::1:7000"'), "node.listen",
            "an IPv6 host must be in brackets ([::1]:PORT), got '::1:7000'")
    refused(BASE.replace('name = "testnet"', 'name = ""'), "network.name", "must not be empty")
    refused(with_component("almanac", "tick_interval_ms = 5"), "component.tick_interval_ms",
            "must be at least 10, got 5")
    refused(with_component("intents", "failure_mode = \"stall\""), "component.citizens",
            "missing required key")
    refused(with_component("feed", "publishers = []"), "component.publishers",
            "a feed needs 1 to 64 publishers, got 0")
    many = ", ".join(f'"{SigningKey(digest(bytes([i]))).public.hex()}"' for i in range(65))
    refused(with_component("feed", f"publishers = [{many}]"), "component.publishers",
            "a feed needs 1 to 64 publishers, got 65")
    refused(with_component("intents", "citizens = []"), "component.citizens",
            "a confluence spans at least one citizen")
    refused(BASE.replace("\n[[committee.members]]", "\n[[committee.xmembers]]"),
            "committee.members", "missing required key")
    refused(BASE + "\n[committee.timing]\nleader_timeout_ms = 3000\n",
            "committee.timing.leader_timeout_ms", "must not exceed view_timeout_ms (3000 > 2000)")
    refused(BASE + "\n[committee.timing]\nbatch_max_commands = 20000\n",
            "committee.timing.batch_max_commands", "must be at most 10000, got 20000")
    # The size rule's ceiling: any larger block could not be served (docs/protocol.md §10).
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nmax_block_bytes = 3145729'),
            "committee.max_block_bytes",
            "must be at most 3145728 (3 MiB), got 3145729: a larger block could not be served "
            "to catch-up, followers and readers (its record must fit one 4 MiB reply)")
    refused(BASE.replace('name = "test-feed"', 'name = "test-feed"\nmax_block_bytes = 1000'),
            "committee.max_block_bytes", "must be at least 1048576, got 1000")
    refused(with_component("chronicle", '[component.anchor_sink]\nkind = "http"\nurl = "ftp://x"'),
            "component.anchor_sink.url", "expected an http:// or https:// URL, got 'ftp://x'")
    refused(BASE.replace('mode = "none"', 'mode = "none"\ntcb_statuses = ["Revoked"]'),
            "attestation.tcb_statuses[0]",
            "expected one of UpToDate, SWHardeningNeeded, ConfigurationNeeded, "
            "ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, "
            "TDRelaunchAdvised, TDRelaunchAdvisedConfigurationNeeded; got 'Revoked'")


def test_tcb_status_names_match_the_verifier() -> None:
    # config keeps an ordered copy (for stable messages) of the verifier's set.
    from coalitiond.attestation.dcap import TCB_STATUSES as VERIFIER_STATUSES
    from coalitiond.config import TCB_STATUSES

    assert set(TCB_STATUSES) == VERIFIER_STATUSES and len(TCB_STATUSES) == len(VERIFIER_STATUSES)


def test_attestation_rules() -> None:
    mrtd = "ab" * 48
    refused(BASE.replace('mode = "none"', f'mode = "none"\nmrtd = ["{mrtd}"]'), "attestation.mode",
            'mode = "none" is refused when TDX measurements are declared')
    refused(BASE.replace('mode = "none"', f'mode = "none"\n[attestation.rtmr_pins]\nrtmr2 = "{mrtd}"'),
            "attestation.mode", 'mode = "none" is refused when TDX measurements are declared')
    refused(BASE.replace('mode = "none"', 'mode = "tdx"'), "attestation.mrtd",
            'mode = "tdx" needs at least one allowed MR_TD')
    refused(BASE.replace('mode = "none"', f'mode = "tdx"\nmrtd = ["{mrtd}"]'), "attestation.pccs_url",
            'mode = "tdx" needs a collateral source: pccs_url or collateral_cache')
    refused(BASE.replace('mode = "none"', f'mode = "tdx"\nmrtd = ["{mrtd}"]\ntcb_statuses = []\n'
                                          'pccs_url = "https://pccs.example"'),
            "attestation.tcb_statuses", 'mode = "tdx" needs at least one accepted TCB status')
    ok = parse(BASE.replace('mode = "none"', f'mode = "tdx"\nmrtd = ["{mrtd}"]\n'
                                             'collateral_cache = "collateral"\n'
                                             f'[attestation.rtmr_pins]\nrtmr1 = "{mrtd}"'))
    assert ok.attestation.collateral_cache == Path("/etc/coalitiond/collateral")
    assert ok.attestation.rtmr_pins == ((), (bytes.fromhex(mrtd),), (), ())
    other = "cd" * 48
    listed = parse(BASE.replace('mode = "none"', f'mode = "tdx"\nmrtd = ["{mrtd}"]\n'
                                                 'pccs_url = "https://pccs.example:8081"\n'
                                                 'grace_period_s = 3600\nallow_smt = false\n'
                                                 f'[attestation.rtmr_pins]\nrtmr3 = ["{mrtd}", "{other}"]'))
    assert listed.attestation.rtmr_pins[3] == (bytes.fromhex(mrtd), bytes.fromhex(other))
    assert listed.attestation.table["grace_period_s"] == 3600
    # The attestation policy's own keys are validated by its own parser, same message shape.
    refused(BASE.replace('mode = "none"', 'mode = "none"\nallow_smt = 1'),
            "attestation.allow_smt", "must be true or false")
    refused(BASE.replace('mode = "none"', 'mode = "none"\n[attestation.rtmr_pins]\nrtmr0 = []'),
            "attestation.rtmr_pins.rtmr0", "must not be empty (omit it to leave the RTMR unpinned)")
    refused(BASE.replace('mode = "none"', 'mode = "none"\n[attestation.rtmr_pins]\nrtmr4 = "00"'),
            "attestation.rtmr_pins.rtmr4", "unknown key (allowed here: rtmr0, rtmr1, rtmr2, rtmr3)")
    refused(BASE.replace('mode = "none"', 'mode = "none"\npccs_url = "pccs.example"'),
            "attestation.pccs_url", "expected an http:// or https:// URL, got 'pccs.example'")


COALITION = f"""
[coalition]
name = "acme.coalition"
modules = ["atlas"]
not_shipped = ["almanac", "chronicle", "compute"]

[[coalition.lattices]]
stable_id = "{make_id("lattice|a").hex()}"

[[coalition.organisms]]
stable_id = "{make_id("instance|o").hex()}"
role = "oracle"

[[coalition.confluences]]
name = "c1"
fingerprint = "{make_id("confluence|c1").hex()}"
"""


def test_coalition_in_a_member_config() -> None:
    c = parse(BASE + COALITION)
    assert c.coalition is not None and c.coalition.modules == ("atlas",)
    assert c.coalition.lattices[0].role == "lattice"
    assert c.coalition.organisms[0].role == "oracle"


def test_coalition_refusals(tmp_path: Path) -> None:
    refused(BASE + COALITION.replace('not_shipped = ["almanac", "chronicle", "compute"]',
                                     'not_shipped = ["almanac", "chronicle"]'),
            "coalition.modules", "module 'compute' is in neither coalition.modules nor "
            "coalition.not_shipped; state every module explicitly")
    refused(BASE + COALITION.replace('"almanac", "chronicle", "compute"]',
                                     '"almanac", "chronicle", "compute", "atlas"]'),
            "coalition.not_shipped", "module 'atlas' is also listed in coalition.modules")
    refused(BASE + COALITION.replace('modules = ["atlas"]', 'modules = ["atlas", "randomness"]'),
            "coalition.modules[1]",
            "expected one of atlas, almanac, chronicle, compute; got 'randomness'")
    refused(BASE + COALITION.replace(make_id("instance|o").hex(), make_id("lattice|a").hex()),
            "coalition.organisms[0].stable_id",
            "duplicate citizen: same stable id as coalition.lattices[0]")
    refused(BASE + COALITION + '\n[[coalition.confluences]]\nname = "c1"\nfingerprint = "'
            + "00" * 32 + '"\n',
            "coalition.confluences[1].name",
            "duplicate confluence: same name as coalition.confluences[0]")
    refused(BASE + COALITION + '\n[[coalition.confluences]]\nname = "c2"\nfingerprint = "'
            + make_id("confluence|c1").hex() + '"\n',
            "coalition.confluences[1].fingerprint",
            "duplicate confluence: same fingerprint as coalition.confluences[0]")
    refused(with_component("almanac") + COALITION, "committee.component",
            "this member serves module 'almanac', which coalition.modules does not ship")
    # A standalone file holds only [coalition]: anything else makes it a member config.
    f = tmp_path / "c.toml"
    f.write_text(COALITION + "\n[node]\n")
    with pytest.raises(ConfigError, match=r"c\.toml: network: missing required table$"):
        load_coalition(f)
    f.write_text(BASE)
    with pytest.raises(ConfigError, match=r"c\.toml: coalition: missing required table$"):
        load_coalition(f)


# --- the file and the key ---------------------------------------------------------------


@pytest.fixture
def member_dir(tmp_path: Path) -> Callable[[str], Path]:
    (tmp_path / "keys").mkdir()
    write_key_file(tmp_path / "keys" / "member.key", KEYS[0])

    def write(text: str) -> Path:
        path = tmp_path / "member.toml"
        path.write_text(text)
        return path

    return write


def test_load_config_checks_the_key(member_dir: Callable[[str], Path]) -> None:
    path = member_dir(BASE)
    c = load_config(path)
    assert c.node.key_file == path.parent / "keys" / "member.key"
    assert c.committee_spec().index_of(KEYS[0].public) == 0


def test_key_not_among_members(member_dir: Callable[[str], Path], tmp_path: Path) -> None:
    path = member_dir(BASE.replace(P[0], SigningKey(digest(b"stranger")).public.hex()))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: node.key_file: this node's public key {P[0]} (from "
        f"{tmp_path / 'keys' / 'member.key'}) is not among committee.members"
    )
    assert load_config(path, check_key=False).committee.members[1].peer_id == KEYS[1].public


def test_key_file_with_loose_permissions(member_dir: Callable[[str], Path], tmp_path: Path) -> None:
    path = member_dir(BASE)
    key = tmp_path / "keys" / "member.key"
    os.chmod(key, 0o640)
    with pytest.raises(KeyFileError) as info:
        load_config(path)
    assert str(info.value) == (f"{key}: key file mode is 0640; it must not be readable by group "
                               f"or others (run: chmod 600 {key})")


def test_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: config file not found"
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: invalid TOML: ")
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == f"{bad}: config file is not UTF-8 text"
    bad.write_text("#" * (MAX_CONFIG_FILE_BYTES + 1))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == f"{bad}: config file larger than {MAX_CONFIG_FILE_BYTES} bytes"
    dup = tmp_path / "dup.toml"
    dup.write_text(BASE.replace('name = "testnet"', 'name = "testnet"\nname = "again"'))
    with pytest.raises(ConfigError, match="invalid TOML: Cannot overwrite a value"):
        load_config(dup)


def test_snapshot_keys() -> None:
    c = parse(BASE)
    assert (c.node.snapshot_interval, c.node.snapshots_kept) == (1000, 3)
    c = parse(BASE.replace('data_dir = "data"',
                           'data_dir = "data"\nsnapshot_interval = 0\nsnapshots_kept = 16'))
    assert (c.node.snapshot_interval, c.node.snapshots_kept) == (0, 16)
    refused(BASE.replace('data_dir = "data"', 'data_dir = "data"\nsnapshots_kept = 0'),
            "node.snapshots_kept", "must be at least 1, got 0")
    refused(BASE.replace('data_dir = "data"', 'data_dir = "data"\nsnapshots_kept = 17'),
            "node.snapshots_kept", "must be at most 16, got 17")
    refused(BASE.replace('data_dir = "data"', 'data_dir = "data"\nsnapshot_interval = -1'),
            "node.snapshot_interval", "must be at least 0, got -1")


def test_state_sync_key() -> None:
    assert parse(BASE).node.state_sync is False
    c = parse(BASE.replace('data_dir = "data"', 'data_dir = "data"\nstate_sync = true'))
    assert c.node.state_sync is True
    refused(BASE.replace('data_dir = "data"', 'data_dir = "data"\nstate_sync = "yes"'),
            "node.state_sync", "expected a boolean, got a string")


def test_partial_mode_needs_an_almanac_and_a_deadline() -> None:
    text = with_component("intents")
    refused(text.replace("partial_deadline_ticks = 5\n", ""), "component.failure_mode",
            'failure_mode = "partial" needs follow_almanac and partial_deadline_ticks >= 1 '
            "(the deadline is counted in Almanac ticks)")
    refused(text.replace('failure_mode = "partial"', 'failure_mode = "stall"'),
            "component.partial_deadline_ticks", 'only meaningful with failure_mode = "partial"')
