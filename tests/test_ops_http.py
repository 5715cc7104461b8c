"""The operator HTTP surface over a real socket, served by hypercorn on trio."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import trio

from coalitiond.ops.http import (
    CBOR,
    JSON,
    MAX_QUERY_PARAMS,
    HttpError,
    OpsApp,
    Response,
    data_response,
    json_response,
    jsonable,
    serve_ops,
)
from coalitiond.primitives.encoding import decode

pytestmark = pytest.mark.live


async def _get(address: str, path: str) -> tuple[int, bytes]:
    host, port = address.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_status_metrics_health_and_readiness() -> None:
    ready = False
    state: dict[str, Any] = {"height": 7}
    app = OpsApp(status=lambda: state, ready=lambda: ready)
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(serve_ops, app, "127.0.0.1:0")
        status, body = await _get(address, "/status")
        assert (status, json.loads(body)) == (200, {"height": 7})
        status, body = await _get(address, "/readyz")
        assert (status, json.loads(body)) == (503, {"ready": False})
        ready = True
        assert (await _get(address, "/readyz"))[0] == 200
        assert (await _get(address, "/healthz"))[0] == 200
        status, body = await _get(address, "/metrics")
        assert status == 200 and b"coalitiond_build_info" in body
        status, body = await _get(address, "/nope")
        assert status == 404 and b"no route /nope" in body
        nursery.cancel_scope.cancel()


async def test_non_get_methods_are_refused() -> None:
    app = OpsApp(status=dict, ready=lambda: True)
    assert (await app.route("POST", "/status", b""))[0] == 405
    assert (await app.route("GET", "/status", b"x" * 5000))[0] == 414


async def test_async_and_prefix_handlers_get_parameters_and_the_rest_of_the_path() -> None:
    app = OpsApp(status=dict, ready=lambda: True)

    async def echo(query: Mapping[str, str]) -> Response:
        await trio.lowlevel.checkpoint()
        return data_response({"q": dict(query), "raw": b"\x01\xff"}, query.get("format", "json"))

    app.add_route("/v1/echo", echo)
    app.add_prefix_route("/v1/state/", lambda rest, q: json_response({"rest": rest, "q": dict(q)}))
    status, ctype, body = await app.route("GET", "/v1/echo", b"a=1&a=2&b=")
    assert (status, ctype) == (200, JSON)
    assert json.loads(body) == {"q": {"a": "2", "b": ""}, "raw": "01ff"}  # bytes as hex
    status, ctype, body = await app.route("GET", "/v1/echo", b"format=cbor")
    assert (status, ctype) == (200, CBOR)
    assert decode(body) == {"q": {"format": "cbor"}, "raw": b"\x01\xff"}
    status, _, body = await app.route("GET", "/v1/state/entry", b"index=3")
    assert json.loads(body) == {"rest": "entry", "q": {"index": "3"}}
    with pytest.raises(ValueError, match="already taken"):
        app.add_route("/v1/echo", echo)


async def test_handler_errors_map_to_statuses_with_a_one_line_message() -> None:
    app = OpsApp(status=dict, ready=lambda: True)

    def absent(_: Mapping[str, str]) -> Response:
        raise HttpError(404, "no entry 9")

    def bad(_: Mapping[str, str]) -> Response:
        raise ValueError("limit: must be an unsigned decimal integer")

    def bug(_: Mapping[str, str]) -> Response:
        raise KeyError("secret detail")

    app.add_route("/absent", absent)
    app.add_route("/bad", bad)
    app.add_route("/bug", bug)
    assert await app.route("GET", "/absent", b"") == json_response({"error": "no entry 9"}, 404)
    status, _, body = await app.route("GET", "/bad", b"")
    assert status == 400 and json.loads(body)["error"].startswith("limit:")
    status, _, body = await app.route("GET", "/bug", b"")
    assert status == 500 and b"secret" not in body and b"KeyError" in body
    many = "&".join(f"p{i}=1" for i in range(MAX_QUERY_PARAMS + 1)).encode()
    assert (await app.route("GET", "/absent", many))[0] == 400


def test_jsonable_renders_bytes_keys_and_tuples() -> None:
    assert jsonable({b"\xab": (1, b"\x00"), 7: None, "s": [True]}) == {
        "ab": [1, "00"], "7": None, "s": [True]}


async def test_a_busy_address_is_one_operator_error_naming_it() -> None:
    """Something else listens on the metrics address: serving fails with an OperatorError
    naming `node.metrics` and the address (the CLI's one line), not hypercorn's traceback."""
    import socket

    from coalitiond.primitives.errors import OperatorError

    app = OpsApp(status=dict, ready=lambda: True)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BaseException) as raised:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_ops, app, f"127.0.0.1:{port}")
    error: BaseException = raised.value
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    assert isinstance(error, OperatorError), repr(raised.value)
    assert str(error) == f"node.metrics 127.0.0.1:{port}: cannot listen: Address already in use"
