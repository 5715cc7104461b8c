"""`coalitiond run --config PATH`: run one committee member until SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from ..config import load_config
from ..primitives.keys import load_key_file
from ..primitives.logs import configure

NAME = "run"
HELP = "run one committee member (config -> key -> store -> transport -> consensus)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="member configuration")
    parser.add_argument("--guard-lost", action="store_true",
                        help="this member's signer guard was lost or restored from a backup: "
                             "also abstain until a certificate shows where the committee is "
                             "(every start asks the peers what this member signed first; "
                             "docs/protocol.md §8)")


def run(args: argparse.Namespace) -> int:
    from ..ops.daemon import run_member

    config = load_config(args.config)
    configure(config.node.log_format, config.node.log_level)  # type: ignore[arg-type]
    key = load_key_file(config.node.key_file)
    trio.run(lambda: run_member(config, key, guard_lost=args.guard_lost))
    return 0
