"""`coalitiond fingerprint --config PATH`: print a coalition's identity as one JSON object.

Accepts a standalone coalition file (only a `[coalition]` table, like
`configs/coalition-example.toml`) or a member config with a `[coalition]` section. With
`--confluence`, prints the fingerprint of the confluence a member config serves instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import load_coalition, load_config
from ..primitives.errors import ConfigError

NAME = "fingerprint"
HELP = "print the coalition id, root, module ids and ticket issuer root as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="coalition file or member config")
    parser.add_argument("--confluence", action="store_true",
                        help="print the fingerprint of the confluence (intents, ledger) this "
                             "member config serves")


def run(args: argparse.Namespace) -> int:
    if args.confluence:
        # The fingerprint is public data: reading it must not need the secret key.
        config = load_config(args.config, check_key=False)
        fp = config.confluence_fingerprint()
        if fp is None:
            raise ConfigError(str(args.config), "committee.component",
                              f"{config.committee.component!r} is not a confluence "
                              f"(intents, ledger)")
        print(json.dumps({"confluence": fp.hex()}, indent=2))
        return 0
    coalition = load_coalition(args.config)
    print(json.dumps(coalition.fingerprint_json(), indent=2))
    return 0
