"""`coalitiond submit --config CLIENT.toml --kind K --body JSON`: publish to a feed committee
and wait until the command is finalised (or refused)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import trio

from ..commands.client import EnvelopeSigner, publish
from ..components.executor import CommandOutcome
from ..node.client import (
    CONNECT_TIMEOUT_S,
    REPLY_TIMEOUT_S,
    CommitteeClient,
    load_client_config,
)
from ..primitives.errors import OperatorError
from ..primitives.keys import load_key_file

NAME = "submit"
HELP = "sign and submit a command (feed: publish KIND BODY) and wait for its outcome"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="client configuration")
    parser.add_argument("--kind", required=True, help="feed entry kind")
    parser.add_argument("--body", required=True, help="entry body, as JSON")
    parser.add_argument("--no-wait", action="store_true",
                        help="return once a member accepted it (exit 0), without waiting "
                             "for finality")
    add_timeout_argument(parser)


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """`--timeout S` for the client commands (submit, tail)."""
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help=f"seconds to wait for a first member link and for each reply "
                             f"(default {CONNECT_TIMEOUT_S:g} to connect, "
                             f"{REPLY_TIMEOUT_S:g} per reply)")


def client_timeouts(timeout: float | None) -> dict[str, float]:
    """`CommitteeClient.open` keyword arguments for `--timeout` (none: the defaults)."""
    if timeout is None:
        return {}
    if not (timeout > 0 and timeout != float("inf")):  # as `status --timeout`
        raise OperatorError(f"--timeout must be a positive number of seconds, got {timeout}")
    return {"connect_timeout": timeout, "reply_timeout": timeout}


def run(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.body)
    except json.JSONDecodeError as e:
        raise OperatorError(f"--body: not valid JSON: {e}") from None
    timeouts = client_timeouts(args.timeout)
    config = load_client_config(args.config)
    result = trio.run(_submit, config, args.kind, body, not args.no_wait, timeouts)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["accepted"] and result.get("status", "applied") == "applied" else 1


async def _submit(config: Any, kind: str, body: Any, wait: bool,
                  timeouts: dict[str, float]) -> dict[str, Any]:
    key = load_key_file(config.key_file)
    # Nonces must grow per client across invocations: microseconds since the epoch do,
    # without a local counter file (docs/components.md, dedup window).
    signer = EnvelopeSigner(key, config.committee.committee_id, time.time_ns() // 1000)
    envelope = signer.sign([publish(kind, body)])
    async with CommitteeClient.open(config, **timeouts) as client:
        ack, outcome = await client.submit(envelope.raw, wait=wait)
    result: dict[str, Any] = {"envelope_id": ack.envelope_id.hex(), "accepted": ack.accepted}
    if not ack.accepted:
        result["reason"] = ack.reason
        return result
    if outcome is not None:
        first = outcome.outcomes[0] if outcome.outcomes else None
        result.update(height=outcome.height, log_index=outcome.log_index)
        if first is not None:
            o = CommandOutcome.from_wire(first)
            result.update(status=o.status, entry_index=o.entry_index)
            if o.reason is not None:
                result.update(reason=o.reason, detail=o.detail)
    return result
