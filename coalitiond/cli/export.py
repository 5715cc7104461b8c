"""`coalitiond export --data-dir D --out ARCHIVE`: write the member's log as one archive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..log import Store, store_path
from ..log.archive import MAX_CONFIG_TEXT, export_archive
from ..primitives.errors import OperatorError

NAME = "export"
HELP = "export the local signed log (entries, blocks, certificates, signatures, checkpoints) as an archive"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="the member's data directory (holds log.sqlite3)")
    parser.add_argument("--out", required=True, type=Path, help="archive file to write")
    parser.add_argument("--config", type=Path, default=None,
                        help="also embed this member config file's text (for auditors)")


def run(args: argparse.Namespace) -> int:
    config_text = None
    if args.config is not None:
        try:
            config_text = args.config.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise OperatorError(f"{args.config}: cannot read the config file: {e}") from None
        if len(config_text) > MAX_CONFIG_TEXT:
            raise OperatorError(f"{args.config}: config file larger than {MAX_CONFIG_TEXT} bytes")
    # Read-only: export works while the daemon runs (WAL readers never block the writer) and
    # can never modify the log it exports.
    with Store.open(store_path(args.data_dir), read_only=True) as store:
        if store.immutable:
            print(f"coalitiond: {args.data_dir} is read-only: opened the store read-only as "
                  f"an immutable file (no write-ahead log beside it)", file=sys.stderr)
        summary = export_archive(store, args.out, config_text=config_text)
        committee = store.committee.committee_id.hex()
    print(f"exported committee {committee}: heights 1..{summary.height}, {summary.entries} "
          f"entries, {summary.evidence} evidence, root {summary.root.hex()} -> {args.out}")
    return 0
