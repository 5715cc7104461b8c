"""`coalitiond status --config CLIENT.toml`: every member's status as JSON.

Members that cannot be reached within a few seconds are listed as unreachable rather than
left out, so an operator sees the whole committee."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Final

import trio

from ..node.client import ClientConfig, CommitteeClient, load_client_config
from ..primitives.errors import OperatorError

NAME = "status"
HELP = "show the status of every committee member (unreachable ones too)"

#: Default of `--timeout`: how long to wait for links to the members not yet connected, and
#: for each member's answer.
REACH_TIMEOUT_S: Final = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="client configuration")
    parser.add_argument("--timeout", type=float, default=REACH_TIMEOUT_S, metavar="S",
                        help="seconds to wait for a link to each member and for its answer "
                             f"(default {REACH_TIMEOUT_S:g}); a member that misses it is "
                             "listed as unreachable")


def run(args: argparse.Namespace) -> int:
    config = load_client_config(args.config)
    if not args.timeout > 0:
        raise OperatorError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    statuses = trio.run(_status, config, args.timeout)
    print(json.dumps(statuses, sort_keys=True, indent=2))
    return 0 if all(s.get("reachable", True) for s in statuses) else 1


async def _status(config: ClientConfig, timeout: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with CommitteeClient.open(config, connect_timeout=timeout,
                                    reply_timeout=timeout) as client:
        members = client.committee.members
        with trio.move_on_after(timeout):
            await client.manager.wait_until(lambda: len(client.members()) == len(members))
        connected = set(client.members())
        for index, peer in enumerate(members):
            status: dict[str, Any] | None = None
            if peer in connected:
                with trio.move_on_after(timeout):
                    status = await client.status(peer)
            out.append(status if status is not None else
                       {"member": index, "peer_id": peer.hex(), "reachable": False})
    return out
