"""`coalitiond evm-keygen --out PATH`: write a new EVM (secp256k1) account key for a Chronicle
member's anchor posts and print its address (docs/chronicle.md §7)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..components.chronicle.evm_keys import (
    generate_evm_key,
    load_evm_key_file,
    write_evm_key_file,
)

NAME = "evm-keygen"
HELP = "write a new EVM account key file (mode 0600) for anchor posts and print its address"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="key file to create")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    write_evm_key_file(args.out, generate_evm_key(), overwrite=args.force)
    print(load_evm_key_file(args.out).address)
    return 0
