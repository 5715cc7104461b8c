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
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from ..primitives.errors import OperatorError
from ..primitives.logs import configure

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
    # Every command logs to stderr (stdout is for results: JSON, ids); `run` reconfigures
    # from the member's [node] log settings.
    configure("auto", "warning")
    try:
        return int(args._run(args))
    except OperatorError as e:
        print(f"coalitiond: error: {e}", file=sys.stderr)
        return EXIT_OPERATOR
    except BaseExceptionGroup as group:
        # Raised inside trio nurseries, an operator's problem arrives wrapped: show it as
        # the one line it is, and let anything else (a bug) keep its traceback.
        operator_errors, rest = group.split(OperatorError)
        if operator_errors is None or rest is not None:
            raise
        first = _leaves(operator_errors)[0]
        print(f"coalitiond: error: {first}", file=sys.stderr)
        return EXIT_OPERATOR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `coalitiond tail ... | head`: the reader left; say nothing more and stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def entry_point() -> None:
    sys.exit(main())
