"""`coalitiond init --component KIND --out PATH`: write a commented member config.

The config names this node as the only member of a one-member committee, so it loads and
validates as written; the operator then adds the other members. The identity key is created
next to it (mode 0600) unless `--key` names an existing one.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

from ..config import COMPONENT_KINDS, load_config, parse_config
from ..config.template import MemberLine, TemplateInput, render_member_config
from ..primitives.crypto import SigningKey
from ..primitives.errors import OperatorError
from ..primitives.keys import load_key_file, write_key_file

NAME = "init"
HELP = "write a commented member config (and its identity key, if missing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--component", required=True, choices=COMPONENT_KINDS, metavar="KIND",
                        help=f"component kind: {', '.join(COMPONENT_KINDS)}")
    parser.add_argument("--out", required=True, type=Path, help="config file to write")
    parser.add_argument("--key", type=Path, default=None,
                        help="identity key file (default: next to the config, NAME.key); "
                             "created if missing")
    parser.add_argument("--name", default=None, help="committee name (default: the kind)")
    parser.add_argument("--network", default="coalitiond", help="network name")
    parser.add_argument("--listen", default="127.0.0.1:7000", help="HOST:PORT to listen on")
    parser.add_argument("--force", action="store_true", help="overwrite an existing config")


def _relative_to(path: Path, directory: Path) -> str:
    """`path` as written in the config: relative when it lies under the config's directory."""
    try:
        return str(path.resolve().relative_to(directory.resolve()))
    except ValueError:
        return str(path.resolve())


def load_or_create_key(path: Path) -> SigningKey:
    """Reuse the key at `path`, or create it (mode 0600) when there is none."""
    if path.exists():
        return load_key_file(path)
    key = SigningKey.generate()
    write_key_file(path, key)
    return key


def _existing_or_new(path: Path) -> tuple[SigningKey, bool]:
    """The key at `path`, or a new one not yet written (and True)."""
    if path.exists():
        return load_key_file(path), False
    return SigningKey.generate(), True


def write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not args.force:
        raise OperatorError(f"{out}: refusing to overwrite an existing config (use --force)")
    if not out.parent.is_dir():
        raise OperatorError(f"{out.parent}: directory does not exist")
    key_path: Path = args.key if args.key is not None else out.with_suffix(".key")
    keys = {key_path: _existing_or_new(key_path)}
    key = keys[key_path][0]
    clients: list[bytes] = []
    publisher_note = ""
    if args.component == "feed":
        # A feed needs at least one publisher: give it its own client key, never the member's.
        publisher_path = out.with_name(f"{out.stem}-publisher.key")
        keys[publisher_path] = _existing_or_new(publisher_path)
        clients.append(keys[publisher_path][0].public)
        publisher_note = f"; publisher key {publisher_path}"
    text = render_member_config(
        TemplateInput(
            kind=args.component,
            committee_name=args.name or args.component,
            network_name=args.network,
            key_file=_relative_to(key_path, out.parent),
            data_dir=f"{out.stem}-data",
            anchor_file=f"{out.stem}-data/anchors.jsonl",
            listen=args.listen,
            members=[MemberLine(key.public, args.listen, "me")],
            clients=clients,
        )
    )
    # Validate before anything touches the disk: a bad --listen or --name leaves no files.
    parse_config(tomllib.loads(text), out)
    for path, (new_key, is_new) in keys.items():
        if is_new:
            write_key_file(path, new_key)
    write_text_atomically(out, text)
    # Whatever we write must load, key check included.
    config = load_config(out)
    print(f"wrote {out} ({config.committee.component}/{config.committee.name}); "
          f"peer id {key.public.hex()} (key {key_path}){publisher_note}")
    return 0
