"""Plain Ethereum JSON-RPC over HTTP (httpx, trio): the EVM anchor sink's only link to a chain.

Why not `web3`: see docs/decisions.md ("EVM client: eth-account + plain JSON-RPC"). The
dozen methods the sink needs are one POST each; signing is `eth_account`'s, ABI encoding
`eth_abi`'s.

`JsonRpc(urls)` tries its URLs in order on every call and sticks to the first that answers.
Every failure is an `RpcError` whose message is one line naming the URL and the cause:
`RPC http://127.0.0.1:8545: cannot connect (node down?): …`, `… no answer within 10 s`, `… HTTP 502`,
`… eth_call: execution reverted (code 3)`. An error object from the node (`RpcCallError`)
carries the node's `code` and `data` (revert data) for the caller to decode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import httpx
import trio

from .anchors import AnchorPublishError

#: One request's whole bound (connect, send, answer).
DEFAULT_RPC_TIMEOUT_S: Final = 10.0
#: Largest JSON-RPC answer we read; larger is an error (a log query the caller must page).
MAX_RPC_RESPONSE_BYTES: Final = 4 * 1024 * 1024
#: How much of a node's error message we quote.
MAX_RPC_ERROR_TEXT: Final = 200
MAX_RPC_URLS: Final = 8


class RpcError(AnchorPublishError):
    """One JSON-RPC call failed on every URL (the sink retries)."""


class RpcCallError(RpcError):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, message: str, code: int, data: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def _one_line(text: str) -> str:
    """Printable text on one line, cut to MAX_RPC_ERROR_TEXT (nodes quote raw bytes)."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())[:MAX_RPC_ERROR_TEXT]


class JsonRpc:
    """JSON-RPC 2.0 over HTTP POST, one request per call, over one or more URLs."""

    def __init__(self, urls: Sequence[str], *, timeout: float = DEFAULT_RPC_TIMEOUT_S) -> None:
        if not 1 <= len(urls) <= MAX_RPC_URLS:
            raise AnchorPublishError(f"1..{MAX_RPC_URLS} RPC URLs, got {len(urls)}")
        self.urls = tuple(urls)
        self.timeout = timeout
        self._preferred = 0
        self._id = 0
        #: One connection pool for the object's life (a fresh client per call costs ~60 ms
        #: of TLS context set-up); created in the trio run that first calls.
        self._client: httpx.AsyncClient | None = None

    async def call(self, method: str, *params: Any) -> Any:
        """The `result` of `method(params)`; RpcError (RpcCallError for a node's error
        object) naming the last URL tried."""
        last: RpcError | None = None
        n = len(self.urls)
        for k in range(n):
            i = (self._preferred + k) % n
            try:
                result = await self._call_one(self.urls[i], method, list(params))
            except RpcCallError:
                raise  # the node answered: another URL would say the same
            except RpcError as e:
                last = e
                continue
            self._preferred = i
            return result
        assert last is not None
        raise last

    async def _call_one(self, url: str, method: str, params: list[Any]) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method,
                           "params": params}).encode()
        data = b""
        status: int | None = None
        with trio.move_on_after(self.timeout):
            try:
                if self._client is None:
                    self._client = httpx.AsyncClient(timeout=self.timeout)
                async with self._client.stream("POST", url, content=body, headers={
                        "content-type": "application/json"}) as resp:
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_RPC_RESPONSE_BYTES:
                            raise RpcError(f"RPC {url}: {method}: answer larger than "
                                           f"{MAX_RPC_RESPONSE_BYTES} bytes")
                    status = resp.status_code
            except httpx.TimeoutException:
                status = None
            except httpx.ConnectError as e:
                raise RpcError(f"RPC {url}: cannot connect (node down?): "
                               f"{_one_line(str(e) or type(e).__name__)}") from None
            except (httpx.HTTPError, httpx.InvalidURL) as e:
                raise RpcError(f"RPC {url}: {type(e).__name__}: {_one_line(str(e))}"
                               ) from None
        if status is None:
            raise RpcError(f"RPC {url}: no answer within {self.timeout:g} s")
        if not 200 <= status < 300:
            raise RpcError(f"RPC {url}: HTTP {status}: "
                           f"{_one_line(data.decode('utf-8', 'replace'))}")
        try:
            answer = json.loads(data)
        except ValueError:
            raise RpcError(f"RPC {url}: {method}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise RpcError(f"RPC {url}: {method}: the answer is not a JSON-RPC object")
        error = answer.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise RpcError(f"RPC {url}: {method}: malformed error object")
            code = error.get("code")
            msg = _one_line(str(error.get("message", "")))
            raw = error.get("data")
            return_data = raw if isinstance(raw, str) and raw.startswith("0x") else None
            raise RpcCallError(f"RPC {url}: {method}: {msg} (code {code})",
                               code if isinstance(code, int) else 0, return_data)
        if "result" not in answer:
            raise RpcError(f"RPC {url}: {method}: the answer has no result")
        return answer["result"]


def hex_int(value: Any, what: str) -> int:
    """An RPC quantity (`0x…`) as int; RpcError when it is not one."""
    if not (isinstance(value, str) and value.startswith("0x")):
        raise RpcError(f"{what}: expected a hex quantity, got {_one_line(repr(value))}")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcError(f"{what}: expected a hex quantity, got {_one_line(value)}") from None


def hex_bytes(value: Any, what: str) -> bytes:
    if not (isinstance(value, str) and value.startswith("0x")):
        raise RpcError(f"{what}: expected hex data, got {_one_line(repr(value))}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RpcError(f"{what}: expected hex data") from None
