"""The `coalitiond` command line.

Each sub-command lives in its own module in this package and exposes:

    NAME: str                      the sub-command name
    HELP: str                      one line for `coalitiond --help`
    def add_arguments(parser)      its arguments
    def run(args) -> int           its exit status

Modules are discovered, so adding a command never edits this file.

Exit statuses: 0 success; 1 a check failed (verify, attest, devnet agreement); 2 the operator
must fix something (usage, configuration, key files) — the message is one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from ..errors import OperatorError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_OPERATOR = 2


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coalitiond",
        description="The daemon one operator runs for one member of a coalition committee.",
    )
    parser.add_argument("--version", action="version", version=f"coalitiond {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_OPERATOR
    try:
        return int(args._run(args))
    except OperatorError as e:
        print(f"coalitiond: error: {e}", file=sys.stderr)
        return EXIT_OPERATOR
    except KeyboardInterrupt:
        return 130


def entry_point() -> None:
    sys.exit(main())
