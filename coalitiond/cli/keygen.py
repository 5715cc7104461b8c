"""`coalitiond keygen --out PATH`: write a new identity key and print its peer id."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..primitives.crypto import SigningKey
from ..primitives.keys import write_key_file

NAME = "keygen"
HELP = "write a new ed25519 identity key file (mode 0600) and print its peer id"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="key file to create")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    key = SigningKey.generate()
    write_key_file(args.out, key, overwrite=args.force)
    print(key.public.hex())
    return 0
