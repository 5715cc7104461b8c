"""`coalitiond advisory --config CHRONICLE-CLIENT.toml --confluence FP --citizen ID
(--new-stable-id ID | --new-content-hash H) …`: file a citizen-bump advisory as a Chronicle
entry of kind `advisory` (docs/confluences.md §7) and wait for its outcome.

Prints the outcome as one JSON line (as `submit` does). Exit 0 applied, 1 refused, 2 bad
arguments or configuration.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import trio

from ..commands.client import EnvelopeSigner
from ..commands.envelope import Command
from ..components.chronicle.records import EvidencePointer
from ..components.confluence.advisory import citizen_bump
from ..components.executor import CommandOutcome
from ..node.client import CommitteeClient, load_client_config
from ..primitives.errors import OperatorError
from ..primitives.keys import load_key_file

NAME = "advisory"
HELP = "file a citizen-bump advisory (a Chronicle entry of kind advisory) for a confluence"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="client configuration of the Chronicle committee")
    parser.add_argument("--confluence", required=True, help="the confluence's fingerprint (hex)")
    parser.add_argument("--citizen", required=True, help="the citizen's stable id until now")
    parser.add_argument("--new-stable-id", default=None, help="its new stable id (hex)")
    parser.add_argument("--old-content-hash", default=None, help="its pinned content hash")
    parser.add_argument("--new-content-hash", default=None, help="its new content hash")
    parser.add_argument("--note", default="", help="free text for readers")
    parser.add_argument("--pointer", action="append", default=[],
                        help="COMMITTEE:HEIGHT:DIGEST where the change is visible (repeat)")


def _id(flag: str, text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise OperatorError(f"--{flag}: not hex: {text!r}") from None
    if len(value) != 32:
        raise OperatorError(f"--{flag}: expected 32 bytes (64 hex), got {len(value)}")
    return value


def _pointer(text: str) -> EvidencePointer:
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) < 1:
        raise OperatorError(f"--pointer: expected COMMITTEE:HEIGHT:DIGEST, got {text!r}")
    committee, digest = _id("pointer", parts[0]), _id("pointer", parts[2])
    assert committee is not None and digest is not None
    return EvidencePointer(committee, int(parts[1]), digest)


def build(args: argparse.Namespace) -> Command:
    confluence, citizen = _id("confluence", args.confluence), _id("citizen", args.citizen)
    assert confluence is not None and citizen is not None
    return citizen_bump(confluence, citizen,
                        new_stable_id=_id("new-stable-id", args.new_stable_id),
                        old_content_hash=_id("old-content-hash", args.old_content_hash),
                        new_content_hash=_id("new-content-hash", args.new_content_hash),
                        note=args.note, pointers=[_pointer(p) for p in args.pointer])


def run(args: argparse.Namespace) -> int:
    command = build(args)
    config = load_client_config(args.config)
    result = trio.run(_submit, config, command)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["accepted"] and result.get("status") == "applied" else 1


async def _submit(config: Any, command: Command) -> dict[str, Any]:
    key = load_key_file(config.key_file)
    signer = EnvelopeSigner(key, config.committee.committee_id, time.time_ns() // 1000)
    envelope = signer.sign([command])
    async with CommitteeClient.open(config) as client:
        ack, outcome = await client.submit(envelope.raw, wait=True)
    result: dict[str, Any] = {"envelope_id": ack.envelope_id.hex(), "accepted": ack.accepted}
    if not ack.accepted:
        result["reason"] = ack.reason
    elif outcome is not None and outcome.outcomes:
        o = CommandOutcome.from_wire(outcome.outcomes[0])
        result.update(height=outcome.height, status=o.status, entry_index=o.entry_index)
        if o.reason is not None:
            result.update(reason=o.reason, detail=o.detail)
    return result
