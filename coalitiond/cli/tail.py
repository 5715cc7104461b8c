"""`coalitiond tail --config CLIENT.toml --from HEIGHT [--follow]`: print finalised blocks
and their entries as JSON lines, checking every certificate and the chain as it goes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from ..commands.envelope import Envelope
from ..log.chain import ChainVerifier
from ..log.records import FinalizedBlock
from ..node.client import (
    ClientConfig,
    CommitteeClient,
    RefusedByMember,
    load_client_config,
)
from ..primitives.errors import CoalitiondError, RemoteError
from .submit import add_timeout_argument, client_timeouts

NAME = "tail"
HELP = "print finalised blocks and entries, verifying each certificate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="client configuration")
    parser.add_argument("--from", dest="from_height", type=int, default=1,
                        help="first height to print (default 1)")
    parser.add_argument("--follow", action="store_true", help="keep printing new blocks")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many blocks")
    add_timeout_argument(parser)


def block_json(fb: FinalizedBlock) -> dict[str, Any]:
    b = fb.block
    cert = fb.finalization or fb.notarization
    entries = []
    for raw in b.commands:
        try:
            env = Envelope.decode(raw)
            entries.append({"client": env.client.hex(), "nonce": env.nonce,
                            "commands": [{"op": c.op, "args": _jsonable(c.args)}
                                         for c in env.commands]})
        except CoalitiondError as e:
            entries.append({"undecodable": str(e)})
    return {"height": b.height, "view": b.view, "digest": b.digest.hex(),
            "proposer": b.proposer, "state_root": b.state_root.hex(),
            "executed_height": b.executed_height,
            "certificate": {"kind": cert.kind.name.lower() if cert else None,
                            "signers": list(cert.signers()) if cert else []},
            "votes_held": len(fb.votes), "entries": entries}


def _jsonable(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.hex()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def run(args: argparse.Namespace) -> int:
    timeouts = client_timeouts(args.timeout)
    config = load_client_config(args.config)
    try:
        trio.run(_tail, config, max(args.from_height, 1), args.follow, args.limit, timeouts)
    except RefusedByMember as e:
        print(f"coalitiond: {e}", file=sys.stderr)
        return 1
    except RemoteError as e:
        print(f"coalitiond: verification failed: {e}", file=sys.stderr)
        return 1
    return 0


async def _tail(config: ClientConfig, start: int, follow: bool, limit: int | None,
                timeouts: dict[str, float]) -> None:
    printed = 0
    async with CommitteeClient.open(config, **timeouts) as client:
        verifier = ChainVerifier(client.committee)
        if start > 1:
            # Anchor the chain at the block before `start`; it needs no check of its own:
            # the certified blocks after it bind it by hash.
            previous = await client.blocks(start - 1, max_blocks=1)
            if previous.blocks:
                verifier.previous = previous.blocks[0].block
        height = start
        while limit is None or printed < limit:
            reply = await client.blocks(height, wait=follow)
            for fb in reply.blocks:
                for final in verifier.feed(fb):
                    if limit is not None and printed >= limit:
                        return
                    print(json.dumps(block_json(final), sort_keys=True), flush=True)
                    printed += 1
                height = fb.height + 1
            if not follow and height > reply.tip_height:
                break
