"""`coalitiond devnet --members N --component KIND --dir DIR`: a committee on loopback.

Generates the keys and member configs of an N-member committee whose members listen on
consecutive loopback ports, prints the committee's summary, then starts every member as a
`coalitiond run` process, feeds a steady stream of commands and shows live progress until
Ctrl-C (coalitiond/node/devnet.py). `--duration S` stops after S seconds, exports, verifies and
compares every member's archive, and exits 0 only if all of that holds.

Re-runnable: existing key files in DIR are reused (so peer ids stay stable across runs) and
the configs are rewritten from them, byte for byte the same when nothing changed.

Layout of DIR:

    operator.key             the devnet client key (feed publisher, ACL client, atlas card key)
    client.toml              the client configuration (`submit`, `tail`, `status`)
    member-<i>.key           member i's identity (mode 0600)
    member-<i>.toml          member i's config
    member-<i>-data/         member i's data directory
    member-<i>.log           member i's log while the devnet runs
    member-<i>.archive       member i's exported archive (after --duration)
    provider-<j>.key         compute only: the demo providers' client keys
    almanac-<i>.key/.toml    compute only: a 3-member Almanac the compute committee follows
                             for its ticks (deadlines, grant validity), started alongside
    evm-<i>.key              chronicle --anchor evm: member i's EVM account (anchor posts)
    evm-deployer.key         chronicle --anchor evm: the account that deploys the contract
    anchor-contract.txt      chronicle --anchor evm: the anchor contract's address
    anvil-state.json         chronicle --anchor evm: the local chain (anvil), kept across runs
    anvil.log                chronicle --anchor evm: anvil's output
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..config import COMPONENT_KINDS, load_config
from ..config.template import (
    EvmAnchorTemplate,
    MemberLine,
    TemplateInput,
    render_member_config,
)
from ..node.devnet_workloads import (
    DEFAULT_RATE,
    DEFAULT_RATES,
    DEVNET_CITIZENS,
    client_keys,
    provider_key_paths,
)
from ..node.evm_devchain import DEVNET_CHAIN_ID
from ..primitives.crypto import SigningKey
from ..primitives.errors import LocalError, OperatorError
from ..primitives.identity import make_id
from .init import load_or_create_key, write_text_atomically


@dataclass(frozen=True, slots=True)
class EvmAnchorInput:
    url: str
    contract: bytes
    members: tuple[bytes, ...]


NAME = "devnet"
HELP = "run an N-member committee on loopback with a steady load and live progress"

MIN_DEVNET_MEMBERS: Final = 1
#: DESIGN §1: committees have 3–15 members; a devnet of more would only measure this host.
MAX_DEVNET_MEMBERS: Final = 15
DEFAULT_BASE_PORT: Final = 7400
#: Member i listens on base_port + i and serves metrics on base_port + METRICS_OFFSET + i.
METRICS_OFFSET: Final = 100
DEVNET_NETWORK: Final = "devnet"
#: Members of the Almanac a compute devnet runs alongside (ports BASE_PORT + ALMANAC_OFFSET + i).
ALMANAC_MEMBERS: Final = 3
ALMANAC_OFFSET: Final = 20
DEVNET_ANCHOR_EVERY: Final = 200
#: Components that read ticks: the devnet runs an Almanac for them to follow.
FOLLOWS_ALMANAC: Final = ("compute",)
#: Confluences: the devnet runs CITIZENS small feed committees for them to span
#: (citizen<k>-<i>.toml, ports BASE_PORT + CITIZEN_OFFSET + CITIZEN_MEMBERS * k + i).
CONFLUENCES: Final = ("intents", "ledger")
CITIZENS: Final = 3
CITIZEN_MEMBERS: Final = 3
CITIZEN_OFFSET: Final = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=5,
                        help=f"committee size ({MIN_DEVNET_MEMBERS}..{MAX_DEVNET_MEMBERS})")
    parser.add_argument("--component", default="feed", choices=COMPONENT_KINDS, metavar="KIND",
                        help=f"component kind: {', '.join(COMPONENT_KINDS)}")
    parser.add_argument("--dir", type=Path, default=Path("devnet"), help="output directory")
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                        help="member i listens on 127.0.0.1:(BASE_PORT + i)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds, then export, verify and compare archives")
    parser.add_argument("--rate", type=float, default=None,
                        help="envelopes submitted per second (default 100; compute: 2)")
    parser.add_argument("--commands-per-envelope", type=int, default=1, metavar="K",
                        help="feed commands signed together in one envelope (default 1)")
    parser.add_argument("--generate-only", action="store_true",
                        help="write keys and configs, print the summary, start nothing")
    parser.add_argument("--anchor", choices=("file", "evm"), default="file",
                        help="chronicle: anchors to a file per member (default), or to a "
                             "contract on a local anvil chain the devnet starts (evm)")
    parser.add_argument("--byzantine", action="append", default=[], metavar="I=BEHAVIOUR",
                        help="TEST ONLY: run member I with a Byzantine behaviour of the "
                             "simulator's catalogue (e.g. 1=bad-root); repeatable up to the "
                             "committee's fault bound")


def parse_byzantine(items: list[str], members: int, fault_bound: int) -> dict[int, str]:
    """`I=BEHAVIOUR` items → {member: behaviour}; the behaviour name is checked by the member
    process (coalitiond.testing.byzantine_member), which the runtime does not import."""
    out: dict[int, str] = {}
    for item in items:
        index, sep, name = item.partition("=")
        if not sep or not index.isdigit() or not name:
            raise OperatorError(f"--byzantine {item!r}: expected I=BEHAVIOUR, e.g. 1=bad-root")
        i = int(index)
        if not 0 <= i < members:
            raise OperatorError(f"--byzantine {item!r}: member {i} is not in 0..{members - 1}")
        if i in out:
            raise OperatorError(f"--byzantine: member {i} given twice")
        out[i] = name
    if len(out) > fault_bound:
        raise OperatorError(f"--byzantine: {len(out)} Byzantine members, the committee "
                            f"tolerates {fault_bound}")
    return out


#: `--anchor evm`: anvil listens on BASE_PORT + ANVIL_OFFSET.
ANVIL_OFFSET: Final = 90


def generate_devnet(members: int, component: str, dir: Path, base_port: int, *,
                    evm_anchor: EvmAnchorInput | None = None) -> list[Path]:
    """Write (or refresh) a devnet's keys and configs; return the config paths in order."""
    if not MIN_DEVNET_MEMBERS <= members <= MAX_DEVNET_MEMBERS:
        raise OperatorError(
            f"--members must be between {MIN_DEVNET_MEMBERS} and {MAX_DEVNET_MEMBERS}, "
            f"got {members}"
        )
    if component not in COMPONENT_KINDS:
        raise OperatorError(f"unknown component kind {component!r}; "
                            f"expected one of {', '.join(COMPONENT_KINDS)}")
    span = max(members, ALMANAC_OFFSET + ALMANAC_MEMBERS) if component in FOLLOWS_ALMANAC \
        else members
    if component in CONFLUENCES:
        span = max(members, CITIZEN_OFFSET + CITIZENS * CITIZEN_MEMBERS)
    top = base_port + METRICS_OFFSET + span - 1
    if base_port < 1024 or top > 65535:
        raise OperatorError(f"--base-port {base_port} leaves ports outside 1024..65535 "
                            f"(the devnet uses up to {top})")
    try:
        dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OperatorError(f"{dir}: cannot create the devnet directory: {e.strerror}") from None

    operator = load_or_create_key(dir / "operator.key")
    providers = ([load_or_create_key(p) for p in provider_key_paths(dir)]
                 if component == "compute" else [])
    follow: bytes | None = None
    if component in FOLLOWS_ALMANAC:
        almanac_paths = _write_committee(dir, "almanac", "almanac", ALMANAC_MEMBERS,
                                         base_port + ALMANAC_OFFSET, operator, [])
        follow = load_config(almanac_paths[0], check_key=False).committee_spec().committee_id
    if component in CONFLUENCES:
        spanned = []
        for k in range(CITIZENS):
            cpaths = _write_committee(dir, f"citizen{k}", "feed", CITIZEN_MEMBERS,
                                      base_port + CITIZEN_OFFSET + CITIZEN_MEMBERS * k,
                                      operator, [operator.public], name=f"devnet-citizen{k}")
            spec = load_config(cpaths[0], check_key=False).committee_spec()
            spanned.append((f"citizen{k}", spec.committee_id, cpaths[0].name))
        paths = _write_committee(dir, "member", component, members, base_port, operator,
                                 [operator.public], spanned=spanned)
    else:
        paths = _write_committee(dir, "member", component, members, base_port, operator,
                                 client_keys(component, operator, providers), follow=follow,
                                 evm_anchor=evm_anchor)
    # `submit`, `tail` and `status` need client.toml whether or not the devnet then runs
    # (--generate-only, or members started by hand or in containers).
    from ..node.devnet import write_client_config

    write_client_config(dir)
    return paths


def citizen_configs(dir: Path) -> list[Path]:
    """The configs of the citizen feed committees a confluence devnet spans (may be none)."""
    return [dir / f"citizen{k}-{i}.toml" for k in range(CITIZENS)
            for i in range(CITIZEN_MEMBERS) if (dir / f"citizen{k}-{i}.toml").exists()]


def almanac_configs(dir: Path) -> list[Path]:
    """The configs of the Almanac a devnet runs alongside its committee (may be none)."""
    return [dir / f"almanac-{i}.toml" for i in range(ALMANAC_MEMBERS)
            if (dir / f"almanac-{i}.toml").exists()]


def _write_committee(dir: Path, prefix: str, component: str, members: int, base_port: int,
                     operator: SigningKey, clients: list[bytes], *,
                     follow: bytes | None = None, name: str | None = None,
                     spanned: list[tuple[str, bytes, str]] | None = None,
                     evm_anchor: EvmAnchorInput | None = None) -> list[Path]:
    keys = [load_or_create_key(dir / f"{prefix}-{i}.key") for i in range(members)]
    lines = [
        MemberLine(k.public, f"127.0.0.1:{base_port + i}", f"devnet-{prefix}-{i}")
        for i, k in enumerate(keys)
    ]
    citizens = [(c, make_id(c)) for c in DEVNET_CITIZENS]
    if spanned is not None:  # a confluence: the devnet's citizen feed committees
        citizens = [(label, sid) for label, sid, _ in spanned]
    paths = []
    for i in range(members):
        path = dir / f"{prefix}-{i}.toml"
        (dir / f"{prefix}-{i}-data").mkdir(exist_ok=True)
        text = render_member_config(
            TemplateInput(
                kind=component,
                committee_name=name or f"devnet-{component}",
                network_name=DEVNET_NETWORK,
                key_file=f"{prefix}-{i}.key",
                data_dir=f"{prefix}-{i}-data",
                listen=lines[i].address,
                metrics=f"127.0.0.1:{base_port + METRICS_OFFSET + i}",
                members=lines,
                clients=clients,
                citizens=citizens,
                citizen_operator=operator.public,
                anchor_file=f"{prefix}-{i}-data/anchors.jsonl",
                # Anchors every few seconds at the devnet's rate, so they show.
                anchor_every=DEVNET_ANCHOR_EVERY,
                follow_almanac=follow,
                almanac_config=None if follow is None else "almanac-0.toml",
                evm_anchor=None if evm_anchor is None else EvmAnchorTemplate(
                    evm_anchor.url, DEVNET_CHAIN_ID, evm_anchor.contract, evm_anchor.members,
                    f"evm-{i}.key", confirmations=1),
                citizen_configs=[c for _, _, c in spanned or ()],
            )
        )
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text_atomically(path, text)
        paths.append(path)
    return paths


def run(args: argparse.Namespace) -> int:
    if args.anchor == "evm":
        return _run_with_evm_anchors(args)
    return _run(args)


def _run_with_evm_anchors(args: argparse.Namespace) -> int:
    """Start anvil, deploy the anchor contract for the members' EVM keys, fund them, then
    run the devnet against it; anvil stops (its state kept in DIR) when the devnet does."""
    from ..node.evm_devchain import BlockingDevChain, prepare_evm_anchors
    from ..primitives.committee import default_fault_bound, quorum_size

    if args.component != "chronicle":
        raise OperatorError("--anchor evm: only a chronicle anchors (use --component chronicle)")
    if not MIN_DEVNET_MEMBERS <= args.members <= MAX_DEVNET_MEMBERS:
        raise OperatorError(f"--members must be between {MIN_DEVNET_MEMBERS} and "
                            f"{MAX_DEVNET_MEMBERS}, got {args.members}")
    args.dir.mkdir(parents=True, exist_ok=True)
    chain = BlockingDevChain(args.base_port + ANVIL_OFFSET, args.dir / "anvil-state.json",
                             args.dir / "anvil.log")
    chain.start()
    try:
        quorum = quorum_size(args.members, default_fault_bound(args.members))
        contract, members = prepare_evm_anchors(args.dir, chain.url, args.members, quorum)
        print(f"anvil on {chain.url} (chain {DEVNET_CHAIN_ID}); anchor contract "
              f"0x{contract.hex()}, {args.members} member accounts funded, quorum {quorum}")
        return _run(args, EvmAnchorInput(chain.url, contract, members))
    finally:
        chain.stop()


def _run(args: argparse.Namespace, evm_anchor: EvmAnchorInput | None = None) -> int:
    paths = generate_devnet(args.members, args.component, args.dir, args.base_port,
                            evm_anchor=evm_anchor)
    configs = [load_config(p) for p in paths]
    spec = configs[0].committee_spec()
    byzantine = parse_byzantine(args.byzantine, args.members, spec.fault_bound)
    # Every member must derive the same committee id, or they would never form a quorum.
    if any(c.committee_spec().committee_id != spec.committee_id for c in configs):
        raise LocalError("devnet members derived different committee ids")
    print(spec.summary())
    print(f"network {configs[0].network.name}; configs in {args.dir}")
    for i, c in enumerate(configs):
        print(f"  member {i}  {c.committee.members[i].peer_id.hex()[:16]}  "
              f"{c.node.listen}  metrics {c.node.metrics}  {paths[i]}")
    if args.generate_only:
        print(f"start each member with `coalitiond run --config {args.dir}/member-<i>.toml`")
        return 0
    followed = almanac_configs(args.dir) if args.component in FOLLOWS_ALMANAC else []
    if followed:
        almanac = load_config(followed[0], check_key=False).committee_spec()
        print(f"following Almanac {almanac.committee_id.hex()[:16]} ({len(followed)} members, "
              f"{followed[0].name} ...), started alongside for its ticks")
    if args.component in CONFLUENCES:
        followed = citizen_configs(args.dir)
        print(f"spanning {CITIZENS} citizen feed committees ({CITIZEN_MEMBERS} members each, "
              "citizen<k>-<i>.toml), started alongside; the load goes to them")
    from ..node.devnet import run_devnet

    rate = args.rate if args.rate is not None else DEFAULT_RATES.get(args.component,
                                                                     DEFAULT_RATE)
    for i, name in sorted(byzantine.items()):
        print(f"member {i} runs the Byzantine TEST behaviour {name!r} "
              f"(python -m coalitiond.testing.byzantine_member)")
    return run_devnet(args.dir, paths, duration=args.duration, rate=rate,
                      commands_per_envelope=args.commands_per_envelope, kind=args.component,
                      companions=followed, byzantine=byzantine,
                      anchor_chain=None if evm_anchor is None
                      else (evm_anchor.url, evm_anchor.contract))
