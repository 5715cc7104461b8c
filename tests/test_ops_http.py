"""The operator HTTP surface over a real socket, served by hypercorn on trio."""

from __future__ import annotations

import json
from typing import Any

import trio

from coalitiond.ops_http import OpsApp, serve_ops


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


def test_non_get_methods_are_refused() -> None:
    app = OpsApp(status=dict, ready=lambda: True)
    assert app.route("POST", "/status", b"")[0] == 405
    assert app.route("GET", "/status", b"x" * 5000)[0] == 414
