"""`coalitiond attest`: verify a TDX quote or ticket offline, or produce this node's ticket.

    coalitiond attest verify --quote Q --collateral C --at UNIX [--config PATH]
    coalitiond attest quote  --config PATH [--out PATH]

`verify` prints one JSON object: the typed dcap-qvl result and the policy verdict. Exit 0 only
when admitted; 1 when refused; 2 when the operator must fix something (missing file, bad
config). Without `--config`, admitted means dcap-qvl accepts the quote with status `UpToDate`.
With `--config`, the `[attestation]` table of that TOML file is the policy (read directly
with tomllib, so this command works on any file carrying that table). Q may be a raw quote or
a ticket; binding and ticket age can only be checked for a ticket (docs/attestation.md §5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Final

from ..attestation import dcap, tsm
from ..attestation.binding import report_data
from ..attestation.dcap import AttestationRefused, DcapPolicy
from ..attestation.policy import AttestationPolicy, check_measurements, check_ticket
from ..attestation.ticket import MAX_TICKET_SIZE, Ticket, decode_ticket
from ..primitives.errors import ConfigError, OperatorError

NAME = "attest"
HELP = "verify a TDX quote/ticket against collateral, or write this node's attestation ticket"

#: Config files are small; refuse to read anything huge.
MAX_CONFIG_SIZE: Final = 1024 * 1024
#: For display only: accept every status and any TCB age, so the typed result can always be
#: printed; the verdict is then decided by a second pass under the real policy.
_SHOW_ALL: Final = DcapPolicy(
    accepted_statuses=dcap.TCB_STATUSES, grace_period_seconds=100 * 365 * 86400
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="attest_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="verify a quote or ticket file; print JSON; exit 0 iff admitted")
    v.add_argument("--quote", required=True, type=Path, help="raw TDX quote or coalitiond ticket")
    v.add_argument("--collateral", required=True, type=Path, help="collateral JSON (dcap-qvl format)")
    v.add_argument("--at", required=True, type=int, metavar="UNIX", help="verification time (unix seconds)")
    v.add_argument("--config", type=Path, help="TOML file whose [attestation] table is the policy")
    q = sub.add_parser("quote", help="inside a TD: get a quote from configfs-tsm, write the ticket")
    q.add_argument("--config", required=True, type=Path, help="member config")
    q.add_argument("--out", type=Path, help="ticket file (default: <data_dir>/attestation/tdx.ticket)")


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise OperatorError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > limit:
        raise OperatorError(f"{what} {path} is larger than {limit} bytes")
    return data


def load_policy(path: Path) -> AttestationPolicy:
    raw = _read(path, MAX_CONFIG_SIZE, "config")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), "", f"invalid TOML: {e}") from None
    if "attestation" not in doc:
        raise ConfigError(str(path), "attestation", "missing required table")
    return AttestationPolicy.from_mapping(doc["attestation"], str(path))


def _load_quote_or_ticket(path: Path) -> tuple[bytes, Ticket | None]:
    data = _read(path, MAX_TICKET_SIZE, "quote")
    if data[:1] in (b"\x04", b"\x05"):  # a raw quote starts with its version (u16 LE 4 or 5)
        return data, None
    try:
        ticket = decode_ticket(data)
    except AttestationRefused:
        return data, None  # not a ticket: let dcap-qvl say what is wrong with it as a quote
    return ticket.quote, ticket


def verify_command(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    policy = load_policy(args.config) if args.config else None
    quote, ticket = _load_quote_or_ticket(args.quote)
    collateral_text = _read(args.collateral, dcap.MAX_COLLATERAL_SIZE, "collateral")
    out: dict[str, Any] = {
        "dcap_qvl": dcap.DCAP_QVL_VERSION,
        "at": args.at,
        "input": "ticket" if ticket else "quote",
        "policy": str(args.config) if args.config else "default (dcap-qvl accepts, UpToDate)",
        "quote": None,
    }

    def refused(e: AttestationRefused) -> tuple[int, dict[str, Any]]:
        out["verdict"] = {"admitted": False, "reason": e.reason, "detail": e.detail}
        return 1, out

    try:
        collateral = dcap.load_collateral(collateral_text)
        shown = dcap.verify(quote, collateral, args.at, _SHOW_ALL)
        out["quote"] = shown.to_json_dict()
        verified = dcap.verify(quote, collateral, args.at, policy.dcap_policy() if policy else None)
        checks = ["dcap"]
        if policy is not None:
            if policy.mode == "none":
                raise AttestationRefused("mode_none", 'policy has mode = "none": nothing is admitted by attestation')
            check_measurements(policy, verified)
            checks.append("measurements")
            if ticket is not None:
                # Offline, the expected peer/network/committee are the ticket's own claims.
                expires = check_ticket(
                    policy, ticket, verified, peer_id=ticket.peer_id,
                    network_id=ticket.network_id, committee_id=ticket.committee_id,
                    epoch=ticket.epoch, now=args.at,
                )
                checks += ["binding", "ticket_age"]
                out["ticket"] = {
                    "peer": ticket.peer_id.hex(), "network": ticket.network_id.hex(),
                    "committee": ticket.committee_id.hex(), "epoch": ticket.epoch,
                    "issued_at": ticket.issued_at, "expires_at": expires,
                }
    except AttestationRefused as e:
        return refused(e)
    not_checked = [] if (policy and ticket) else ["binding", "ticket_age"]
    out["verdict"] = {
        "admitted": True, "reason": None, "checks": checks, "not_checked": not_checked,
    }
    return 0, out


def quote_command(args: argparse.Namespace) -> int:
    from ..config import load_config  # the full member config: key, network, committee
    from ..primitives.keys import load_key_file

    config = load_config(args.config)
    spec = config.committee_spec()
    key = load_key_file(config.node.key_file)
    issued_at = int(time.time())
    rd = report_data(key.public, spec.network_id, spec.committee_id, spec.epoch, issued_at)
    quote = tsm.get_quote(rd)
    ticket = Ticket(quote, key.public, spec.network_id, spec.committee_id, spec.epoch, issued_at)
    out = args.out or config.node.data_dir / "attestation" / "tdx.ticket"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_bytes(ticket.encode())
        tmp.replace(out)
    except OSError as e:
        raise OperatorError(f"cannot write ticket {out}: {e.strerror}") from None
    print(json.dumps({"ticket": str(out), "peer": key.public.hex(), "issued_at": issued_at,
                      "report_data": rd.hex(), "quote_bytes": len(quote)}))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.attest_command == "verify":
        status, out = verify_command(args)
        json.dump(out, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return status
    return quote_command(args)
