"""Commented member-config text, shared by `coalitiond init`, `coalitiond devnet` and the
examples in `configs/`.

The output is a starting point an operator edits, so it explains every key it writes and
shows the optional ones commented out. Whatever this module writes must load with
`config.load_config`: the callers check that right after writing, and the tests check every
kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..components.almanac.config import DEFAULT_TICK_INTERVAL_MS
from ..components.chronicle.config import DEFAULT_ANCHOR_EVERY
from ..components.feed.config import DEFAULT_FEED_MAX_BODY_BYTES
from ..components.tickets.config import (
    DEFAULT_TICKETS_MAX_CLAIMS_BYTES,
    DEFAULT_TICKETS_MAX_LIFETIME_S,
)
from ..primitives.errors import LocalError
from ..primitives.identity import make_id
from .committee import (
    COMPONENT_KINDS,
    DEFAULT_BATCH_INTERVAL_MS,
    DEFAULT_BATCH_MAX_COMMANDS,
    DEFAULT_LEADER_TIMEOUT_MS,
    DEFAULT_VIEW_TIMEOUT_MS,
)

#: Stand-in spanned citizens for a fresh confluence config: the lattices of SPEC §6's
#: example coalition, so the file loads as written and the operator sees the expected shape.
EXAMPLE_CITIZENS: tuple[tuple[str, bytes], ...] = (
    ("lattice|ethereum.mainnet", make_id("lattice|ethereum.mainnet")),
    ("lattice|base.mainnet", make_id("lattice|base.mainnet")),
)


@dataclass(frozen=True, slots=True)
class MemberLine:
    peer_id: bytes
    address: str
    operator: str = ""


@dataclass(frozen=True, slots=True)
class EvmAnchorTemplate:
    url: str
    chain_id: int
    contract: bytes
    members: Sequence[bytes]
    key_file: str
    confirmations: int = 1


@dataclass(frozen=True, slots=True)
class TemplateInput:
    kind: str
    committee_name: str
    network_name: str
    key_file: str
    data_dir: str
    listen: str
    members: Sequence[MemberLine]
    metrics: str | None = None
    bootstrap: Sequence[str] = ()
    #: Client keys allowed to submit (committee ACL) and, for a feed, to publish.
    clients: Sequence[bytes] = ()
    #: Catalogued (atlas) or spanned (intents, ledger) citizens: (comment, stable id).
    citizens: Sequence[tuple[str, bytes]] = field(default=EXAMPLE_CITIZENS)
    #: Atlas: the key allowed to publish each citizen's card (one key for all, here).
    citizen_operator: bytes | None = None
    anchor_file: str = "anchors.jsonl"
    anchor_every: int = DEFAULT_ANCHOR_EVERY
    #: A chronicle anchoring to an EVM contract instead of `anchor_file`.
    evm_anchor: EvmAnchorTemplate | None = None
    #: The Almanac this committee's component follows (its committee id), and the path of
    #: one of that Almanac's member configs (node-local: where its members are).
    follow_almanac: bytes | None = None
    almanac_config: str | None = None
    #: Confluences: member configs of the spanned citizens' feed committees (node-local).
    citizen_configs: Sequence[str] = ()


def _q(text: str) -> str:
    """A TOML basic string. JSON's escapes (\\", \\\\, \\n, \\uXXXX, …) are all valid TOML;
    TOML also forbids a raw DEL, which JSON leaves alone."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _hex_list(values: Sequence[bytes], indent: str = "  ") -> str:
    if not values:
        return "[]"
    return "[\n" + "".join(f"{indent}{_q(v.hex())},\n" for v in values) + "]"


def _follow_almanac(t: TemplateInput, what: str) -> list[str]:
    lines = [f"# Committee id (hex) of an Almanac whose ticks {what}; needs",
             "# node.almanac_config."]
    if t.follow_almanac is None:
        return [*lines, '# follow_almanac = "<64 hex>"']
    return [*lines, f"follow_almanac = {_q(t.follow_almanac.hex())}"]


def _evm_sink(e: EvmAnchorTemplate) -> list[str]:
    return [
        'kind = "evm"',
        f"url = {_q(e.url)}",
        f"chain_id = {e.chain_id}",
        f'contract = "0x{e.contract.hex()}"',
        "# Every member's EVM address (coalitiond evm-keygen), in member order.",
        "members = [" + ", ".join(f'"0x{m.hex()}"' for m in e.members) + "]",
        "# This member's EVM account key (mode 0600).",
        f"key_file = {_q(e.key_file)}",
        f"confirmations = {e.confirmations}",
    ]


def _component(t: TemplateInput) -> str:
    lines = ["[component]"]
    if t.kind == "feed":
        lines += [
            "# Client public keys (hex, from `coalitiond keygen`) allowed to publish into this",
            "# feed: 1 to 64 keys.",
            f"publishers = {_hex_list(t.clients)}",
            f"# Largest body one `publish` may carry, in bytes (default {DEFAULT_FEED_MAX_BODY_BYTES}).",
            f"# max_body_bytes = {DEFAULT_FEED_MAX_BODY_BYTES}",
            "# Committee id (hex) of an Almanac whose ticks stamp this feed's commits.",
            '# follow_almanac = "<64 hex>"   (not supported by feed/1 yet)',
        ]
    elif t.kind == "atlas":
        lines += [
            *_follow_almanac(t, "stamp card changes"),
            "",
            "# The catalogued citizens, in order; each with the one key allowed to publish",
            "# its card.",
        ]
        if t.citizen_operator is None:
            lines += [
                "citizens = []",
                "# [[component.citizens]]",
                '# stable_id = "<64 hex: the citizen\'s stable id>"',
                '# operator_key = "<64 hex: its operator\'s public key>"',
            ]
        else:
            for comment, sid in t.citizens:
                lines += [
                    "",
                    "[[component.citizens]]",
                    f"# id(\"{comment}\")",
                    f"stable_id = {_q(sid.hex())}",
                    f"operator_key = {_q(t.citizen_operator.hex())}",
                ]
    elif t.kind == "almanac":
        lines += [
            "# One tick every this many milliseconds.",
            f"tick_interval_ms = {DEFAULT_TICK_INTERVAL_MS}",
        ]
    elif t.kind == "chronicle":
        lines += [
            "# Commit an anchor every this many entries.",
            f"anchor_every = {t.anchor_every}",
            *_follow_almanac(t, "stamp entries"),
            "",
            "# Where anchors go: a file (development), an HTTP endpoint, or an EVM contract:",
            '#   kind = "http", url = "https://…"',
            '#   kind = "evm", chain_id = 1, contract = "0x<40 hex>", url = "<JSON-RPC URL>",',
            '#   members = ["0x<each member\'s EVM address>", …], key_file = "evm.key" '
            "(docs/chronicle.md §9)",
            "[component.anchor_sink]",
            *(_evm_sink(t.evm_anchor) if t.evm_anchor else
              ['kind = "file"', f"path = {_q(t.anchor_file)}"]),
        ]
    elif t.kind == "compute":
        lines += [
            *_follow_almanac(t, "measure deadlines and grants"),
        ]
    elif t.kind == "tickets":
        lines += [
            "# Client public keys (hex) allowed to issue and revoke tickets: 0 to 64 keys",
            "# (with none, the committee issues nothing). List them in [committee.acl] too.",
            f"issuers = {_hex_list(t.clients)}",
            "# Largest encoded `claims` map of one ticket, in bytes "
            f"(default {DEFAULT_TICKETS_MAX_CLAIMS_BYTES}).",
            f"# max_claims_bytes = {DEFAULT_TICKETS_MAX_CLAIMS_BYTES}",
            "# Longest validity of one ticket (expires - not_before), in seconds "
            f"(default {DEFAULT_TICKETS_MAX_LIFETIME_S}).",
            f"# max_lifetime_s = {DEFAULT_TICKETS_MAX_LIFETIME_S}",
        ]
    else:
        lines += [
            "# When a spanned citizen stalls: \"stall\" waits, \"partial\" commits what it has,",
            "# marked partial.",
            'failure_mode = "stall"',
            "# Committee id (hex) of an Almanac whose ticks stamp commits.",
            '# follow_almanac = "<64 hex>"',
            "",
            "# The spanned citizens, in order (the order is part of the confluence's",
            "# fingerprint). Optional per citizen: content_hash (pin), role (a label).",
        ]
        for comment, sid in t.citizens:
            lines += [
                "",
                "[[component.citizens]]",
                f"# id(\"{comment}\")",
                f"stable_id = {_q(sid.hex())}",
            ]
    return "\n".join(lines) + "\n"


def render_member_config(t: TemplateInput) -> str:
    """The text of a commented member config."""
    if t.kind not in COMPONENT_KINDS:
        raise LocalError(f"unknown component kind {t.kind!r}")
    metrics = (
        f"metrics = {_q(t.metrics)}"
        if t.metrics
        else '# metrics = "127.0.0.1:9100"   # the HTTP address; off when absent'
    )
    members = []
    for m in t.members:
        members += [
            "",
            "[[committee.members]]",
            f"peer_id = {_q(m.peer_id.hex())}",
            f"address = {_q(m.address)}",
        ]
        if m.operator:
            members.append(f"operator = {_q(m.operator)}")
    bootstrap = "[" + ", ".join(_q(b) for b in t.bootstrap) + "]"
    almanac_config = (
        f"# A member config of the Almanac named by component.follow_almanac.\n"
        f"almanac_config = {_q(t.almanac_config)}"
        if t.almanac_config
        else "# almanac_config = \"almanac-member.toml\"   # with component.follow_almanac"
    )
    if t.citizen_configs:
        almanac_config += ("\n# Member configs of the spanned citizens' feed committees.\n"
                           "citizen_configs = [" + ", ".join(_q(p) for p in t.citizen_configs)
                           + "]")
    elif t.kind in ("intents", "ledger"):
        almanac_config += ("\n# Member configs of the spanned citizens' feed committees, one "
                           "per citizen (required).\n"
                           '# citizen_configs = ["citizen-a-member.toml", '
                           '"citizen-b-member.toml"]')
    return f"""\
# coalitiond member configuration ({t.kind}). Every key: docs/configuration.md.
# Relative paths resolve against this file's directory.

[node]
# ed25519 identity key (mode 0600; `coalitiond keygen --out PATH` writes one).
key_file = {_q(t.key_file)}
# The member's signed log and state.
data_dir = {_q(t.data_dir)}
# Where this member accepts links from the other members.
listen = {_q(t.listen)}
# What the others dial, when it differs from listen (NAT, containers).
# advertise = "203.0.113.7:7000"
# The operator HTTP address: /metrics, /healthz, /readyz, /status and the read API
# (/v1/..., docs/api.md).
{metrics}
# "auto" (JSON unless a terminal), "json" or "console"; level debug|info|warning|error.
log_format = "auto"
log_level = "info"
{almanac_config}

[network]
# Network name; its id binds every link's handshake.
name = {_q(t.network_name)}
# Extra peers to dial at start (HOST:PORT); the committee's members are always dialled.
bootstrap = {bootstrap}

[committee]
# The component this committee serves and its name; both are part of the committee id.
component = {_q(t.kind)}
name = {_q(t.committee_name)}
epoch = 0
# Byzantine members to stay safe against (f_s). Default ceil(n/2) - 1; the quorum is
# q = ceil((n + f_s + 1) / 2) and must not exceed n.
# fault_bound = 1
# The largest encoded block (bytes) voters accept and leaders build; the same in every
# member's file. Default 2 MiB, at most 3 MiB (the largest block every member can serve).
# max_block_bytes = 2097152

[committee.timing]
leader_timeout_ms = {DEFAULT_LEADER_TIMEOUT_MS}
view_timeout_ms = {DEFAULT_VIEW_TIMEOUT_MS}
batch_max_commands = {DEFAULT_BATCH_MAX_COMMANDS}
batch_interval_ms = {DEFAULT_BATCH_INTERVAL_MS}

[committee.acl]
# Client public keys (hex) allowed to submit commands.
clients = {_hex_list(t.clients)}
# Ticket issuer roots (hex) whose tickets admit a client.
ticket_issuers = []

# The members, in order: the order fixes leader rotation and certificate indices, and must
# be identical in every member's file. Add one [[committee.members]] table per member:
# peer_id (its `coalitiond keygen` output), address (HOST:PORT), operator (a label).{chr(10).join(members)}

[attestation]
# "tdx" admits only members with a valid TDX quote; "none" is for development only.
mode = "none"
# For mode = "tdx":
# mrtd = ["<96 hex>"]
# tcb_statuses = ["UpToDate"]
# max_ticket_age_s = 86400
# pccs_url = "https://pccs.example:8081"
# collateral_cache = "collateral"
# [attestation.rtmr_pins]
# rtmr0 = "<96 hex>"

{_component(t)}"""
