"""The shape of the package (docs/architecture.md): modules stay small unless they say why at
their top,
and every package says its one job. The import rules between packages are import-linter
contracts in pyproject.toml, checked by `make lint`."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "coalitiond"
#: Lines a module may have before its docstring must say why it is long.
MAX_LINES = 600
REASON = "Why this module is long:"


def test_no_module_is_long_without_a_reason_at_its_top() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        paragraphs = (ast.get_docstring(ast.parse(text)) or "").split("\n\n")
        # The reason opens the docstring, right under its title line: read first, not found.
        if lines > MAX_LINES and not (len(paragraphs) > 1
                                      and paragraphs[1].startswith(REASON)):
            unexplained.append(f"{path.relative_to(REPO)} ({lines} lines)")
    assert not unexplained, (f"over {MAX_LINES} lines without '{REASON}' opening the "
                             f"module docstring: {', '.join(unexplained)}")


def test_every_package_says_its_one_job() -> None:
    silent = [str(init.parent.relative_to(REPO)) for init in sorted(PACKAGE.rglob("__init__.py"))
              if not (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "")]
    assert not silent, f"packages without a docstring saying their job: {silent}"
