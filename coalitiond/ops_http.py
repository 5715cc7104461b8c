"""The operator HTTP surface: /metrics, /healthz, /readyz, /status (and later the read API).

A small ASGI application served by hypercorn on trio (no hand-written HTTP). Routes are an
explicit table of `GET path -> handler`; a handler gets the query parameters and returns
`(status, content_type, body)`. Handlers are synchronous and cheap: they read in-memory
state the node keeps current, so a slow client never touches consensus.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import REGISTRY

Response = tuple[int, str, bytes]
Handler = Callable[[Mapping[str, str]], Response]

#: Request bodies are never read; query strings are bounded.
MAX_QUERY_BYTES: Final = 4096
JSON: Final = "application/json"


def json_response(obj: Any, status: int = 200) -> Response:
    return status, JSON, (json.dumps(obj, sort_keys=True) + "\n").encode()


def _metrics(_: Mapping[str, str]) -> Response:
    return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)


class OpsApp:
    """ASGI app with an explicit route table. `ready` and `status` are supplied by the node."""

    def __init__(self, status: Callable[[], dict[str, Any]],
                 ready: Callable[[], bool]) -> None:
        self._status = status
        self._ready = ready
        self.routes: dict[str, Handler] = {
            "/metrics": _metrics,
            "/healthz": lambda _: json_response({"ok": True}),
            "/readyz": self._readyz,
            "/status": lambda _: json_response(self._status()),
        }

    def _readyz(self, _: Mapping[str, str]) -> Response:
        ok = self._ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    def route(self, method: str, path: str, raw_query: bytes) -> Response:
        if method not in ("GET", "HEAD"):
            return json_response({"error": f"method {method} not allowed"}, 405)
        handler = self.routes.get(path)
        if handler is None:
            return json_response({"error": f"no route {path}"}, 404)
        if len(raw_query) > MAX_QUERY_BYTES:
            return json_response({"error": "query string too long"}, 414)
        query = {k: v[-1] for k, v in parse_qs(raw_query.decode("latin-1")).items()}
        try:
            return handler(query)
        except ValueError as e:  # a handler's refusal of a bad parameter
            return json_response({"error": str(e)}, 400)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, content_type, body = self.route(scope["method"], scope["path"],
                                                scope.get("query_string", b""))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})


async def serve_ops(app: OpsApp, bind: str, *,
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound addresses through `task_status`."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
