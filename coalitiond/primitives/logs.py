"""structlog, configured once per process.

JSON lines when stdout is not a terminal or when the operator asks for it (systemd, containers,
log shippers); a readable console rendering otherwise. Library code only calls
`get_logger(__name__)`; `configure` is called by the CLI entry point.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_configured = False


def configure(fmt: LogFormat = "auto", level: str = "info", *, stream: Any = None) -> None:
    global _configured
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=(structlog.PrintLoggerFactory(file=stream) if stream is not None
                        else _StderrLoggerFactory()),
        cache_logger_on_first_use=False,
    )
    _configured = True


class _StderrLogger:
    """Writes each line to whatever `sys.stderr` is *now*: a process that swaps its stderr
    (test runners, daemons redirecting output) never logs into a closed stream."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = err = critical = fatal = exception = msg


class _StderrLoggerFactory:
    def __call__(self, *args: Any) -> _StderrLogger:
        return _StderrLogger()


def get_logger(name: str, **bound: Any) -> Any:
    return structlog.get_logger(name, **bound)
