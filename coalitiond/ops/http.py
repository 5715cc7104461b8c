"""The operator HTTP surface: /metrics, /healthz, /readyz, /status, and the read API's routes.

A small ASGI application served by hypercorn on trio (no hand-written HTTP). Routes are an
explicit table of `GET path -> handler` plus a table of path prefixes (`/v1/state/` ->
handler that also gets the rest of the path). A handler gets the query parameters and returns
`(status, content_type, body)`, directly or as an awaitable: the operator routes are
synchronous and cheap (in-memory state the node keeps current), the read API's handlers
await store reads on the store's worker thread, so a slow client never touches consensus.

Error mapping, one place for every handler: `HttpError(status, message)` -> that status;
`ValueError` -> 400 (a bad parameter); anything else -> 500 with the exception's type only
(the details go to the log, not to an anonymous reader). Error bodies are always JSON
`{"error": "<one line>"}`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..primitives.encoding import encode
from ..primitives.errors import OperatorError
from ..primitives.logs import get_logger
from ..primitives.metrics import REGISTRY

log = get_logger(__name__)

Response = tuple[int, str, bytes]
Handler = Callable[[Mapping[str, str]], Response | Awaitable[Response]]
#: A prefix route's handler: (the path after the prefix, query parameters).
PrefixHandler = Callable[[str, Mapping[str, str]], Response | Awaitable[Response]]

#: Request bodies are never read; query strings are bounded.
MAX_QUERY_BYTES: Final = 4096
#: Query parameters in one request at most.
MAX_QUERY_PARAMS: Final = 32
JSON: Final = "application/json"
CBOR: Final = "application/cbor"


class HttpError(Exception):
    """A handler's refusal with a specific status (404 absent, 503 unavailable, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(obj: Any, status: int = 200) -> Response:
    return status, JSON, (json.dumps(obj, sort_keys=True) + "\n").encode()


def jsonable(obj: Any) -> Any:
    """The JSON view of a CBOR-ready value: byte strings become lowercase hex, tuples lists,
    map keys text (bytes keys hex, integer keys decimal)."""
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {(k.hex() if isinstance(k, bytes) else str(k) if not isinstance(k, str) else k):
                jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(x) for x in obj]
    return obj


def data_response(obj: Any, fmt: str = "json", status: int = 200) -> Response:
    """`obj` (a CBOR-ready value) as JSON (bytes as hex) or as deterministic CBOR."""
    if fmt == "cbor":
        return status, CBOR, encode(obj)
    return json_response(jsonable(obj), status)


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
        #: Longest prefix first when several match (see `route`).
        self.prefix_routes: dict[str, PrefixHandler] = {}

    def add_route(self, path: str, handler: Handler) -> None:
        if path in self.routes:
            raise ValueError(f"route {path} is already taken")
        self.routes[path] = handler

    def add_prefix_route(self, prefix: str, handler: PrefixHandler) -> None:
        if not prefix.endswith("/") or prefix in self.prefix_routes:
            raise ValueError(f"prefix route {prefix!r} must end with '/' and be new")
        self.prefix_routes[prefix] = handler

    def _readyz(self, _: Mapping[str, str]) -> Response:
        ok = self._ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    def _find(self, path: str) -> Callable[[Mapping[str, str]],
                                           Response | Awaitable[Response]] | None:
        handler = self.routes.get(path)
        if handler is not None:
            return handler
        for prefix in sorted(self.prefix_routes, key=len, reverse=True):
            if path.startswith(prefix):
                rest = path[len(prefix):]
                ph = self.prefix_routes[prefix]
                return lambda query: ph(rest, query)
        return None

    async def route(self, method: str, path: str, raw_query: bytes) -> Response:
        if method not in ("GET", "HEAD"):
            return json_response({"error": f"method {method} not allowed"}, 405)
        handler = self._find(path)
        if handler is None:
            return json_response({"error": f"no route {path}"}, 404)
        if len(raw_query) > MAX_QUERY_BYTES:
            return json_response({"error": "query string too long"}, 414)
        parsed = parse_qs(raw_query.decode("latin-1"), keep_blank_values=True)
        if len(parsed) > MAX_QUERY_PARAMS:
            return json_response({"error": f"more than {MAX_QUERY_PARAMS} query parameters"},
                                 400)
        query = {k: v[-1] for k, v in parsed.items()}
        try:
            result = handler(query)
            if inspect.isawaitable(result):
                result = await result
            return result
        except HttpError as e:
            return json_response({"error": str(e)}, e.status)
        except ValueError as e:  # a handler's refusal of a bad parameter
            return json_response({"error": str(e)}, 400)
        except Exception as e:
            # A bug or a damaged store: the member goes on; the reader learns nothing more.
            log.error("http.handler_failed", path=path, error=f"{type(e).__name__}: {e}")
            return json_response({"error": f"internal error ({type(e).__name__})"}, 500)

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
        status, content_type, body = await self.route(scope["method"], scope["path"],
                                                      scope.get("query_string", b""))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})


async def serve_ops(app: OpsApp, bind: str, *,
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound addresses through `task_status`. An address
    that cannot be bound (in use, not ours) is an OperatorError naming it, not a traceback."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    try:
        await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
    except* OSError as group:
        first = _leaves(group)[0]
        raise OperatorError(f"node.metrics {bind}: cannot listen: "
                            f"{getattr(first, 'strerror', None) or first}") from None


def _leaves(group: BaseExceptionGroup[OSError]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
