"""PCCS collateral: assembled from a local HTTP server (stdlib http.server on 127.0.0.1)
serving the real test collateral the way a PCCS does, cached on disk per FMSPC, refreshed
before expiry on trio's MockClock, and never rolled back."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import SHARED_TESTDATA

from coalitiond.attestation import collateral as C
from coalitiond.attestation import dcap
from coalitiond.primitives.metrics import sample_value

TDX = SHARED_TESTDATA / "tdx"
REAL = json.loads((TDX / "tdx_quote_collateral.json").read_text())
QUOTE = (TDX / "tdx_quote").read_bytes()
FMSPC = "B0C06F000000"
NOW = 1752919234
ISSUED = 1750329147
EXPIRES = 1752919235


def pccs_routes(col: dict) -> dict[str, tuple[int, dict[str, str], bytes]]:
    q = urllib.parse.quote
    return {
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
            200, {"SGX-PCK-CRL-Issuer-Chain": q(col["pck_crl_issuer_chain"])},
            bytes.fromhex(col["pck_crl"])),
        f"/tdx/certification/v4/tcb?fmspc={FMSPC}": (
            200, {"TCB-Info-Issuer-Chain": q(col["tcb_info_issuer_chain"])},
            ('{"tcbInfo": ' + col["tcb_info"] + ', "signature": "' + col["tcb_info_signature"] + '"}').encode()),
        "/tdx/certification/v4/qe/identity": (
            200, {"SGX-Enclave-Identity-Issuer-Chain": q(col["qe_identity_issuer_chain"])},
            ('{"enclaveIdentity":' + col["qe_identity"] + ',"signature":"' + col["qe_identity_signature"] + '"}').encode()),
        "/sgx/certification/v4/rootcacrl": (200, {}, col["root_ca_crl"].encode()),
    }


@pytest.fixture
def pccs() -> Iterator[tuple[str, dict, list[str]]]:
    routes = pccs_routes(REAL)
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            status, headers, body = routes.get(self.path, (404, {}, b"not found"))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_from_local_pccs_verifies_the_real_quote(pccs: tuple[str, dict, list[str]]) -> None:
    url, _, hits = pccs
    text = C.fetch(url, FMSPC)
    doc = json.loads(text)
    for key in ("tcb_info", "qe_identity", "pck_crl", "root_ca_crl", "tcb_info_signature",
                "pck_crl_issuer_chain", "tcb_info_issuer_chain"):
        assert doc[key] == REAL[key], key
    assert "pck_certificate_chain" not in doc
    assert dcap.verify(QUOTE, text, NOW).tcb_status == "UpToDate"
    assert len(hits) == 4


def test_fetch_errors(pccs: tuple[str, dict, list[str]]) -> None:
    url, routes, _ = pccs
    with pytest.raises(C.CollateralError, match="FMSPC must be 12 upper-case hex digits, got 'b0c06f000000'"):
        C.fetch(url, FMSPC.lower())
    with pytest.raises(C.CollateralError, match=r"PCCS .*/tdx/certification/v4/tcb\?fmspc=90C06F000000: HTTP 404"):
        C.fetch(url, "90C06F000000")
    status, headers, body = routes["/tdx/certification/v4/qe/identity"]
    routes["/tdx/certification/v4/qe/identity"] = (status, {}, body)
    with pytest.raises(C.CollateralError, match="PCCS response lacks the SGX-Enclave-Identity-Issuer-Chain header"):
        C.fetch(url, FMSPC)
    routes["/tdx/certification/v4/qe/identity"] = (status, headers, b'{"signature":"00"}')
    with pytest.raises(C.CollateralError, match="PCCS response has no 'enclaveIdentity' object"):
        C.fetch(url, FMSPC)
    with pytest.raises(C.CollateralError, match=r"PCCS http://127\.0\.0\.1:1/"):
        C.fetch("http://127.0.0.1:1", FMSPC)


def test_crl_next_update_and_inspect() -> None:
    assert C.crl_next_update(bytes.fromhex(REAL["pck_crl"])) == EXPIRES
    info = C.inspect(json.dumps(REAL))
    assert info == C.CollateralInfo(FMSPC, 17, EXPIRES)
    with pytest.raises(C.CollateralError, match="CRL: truncated DER"):
        C.crl_next_update(b"\x30\x03\x30\x01")
    with pytest.raises(C.CollateralError, match="CRL: malformed DER"):
        C.crl_next_update(b"\x30")


def test_cache_put_get_and_refusals(tmp_path: Path) -> None:
    cache = C.CollateralCache(tmp_path / "cache")
    assert cache.get(FMSPC) is None
    # A per-platform PCK chain is stripped before caching.
    v5 = json.loads((TDX / "tdx_quote_td15ex_collateral.json").read_text())
    assert "pck_certificate_chain" in v5
    info = cache.put(FMSPC, json.dumps(v5), now=1794008710)
    assert info.tcb_eval_data_number == 20
    assert "pck_certificate_chain" not in json.loads(cache.path(FMSPC).read_text())
    assert cache.get(FMSPC) is cache.get(FMSPC)  # memoised while the file is unchanged
    assert sample_value("coalitiond_collateral_expires_at", {"fmspc": FMSPC}) == info.expires_at
    with pytest.raises(C.CollateralError, match="PCCS sent TCB evaluation number 17, older than the cached 20"):
        cache.put(FMSPC, json.dumps(REAL), now=NOW)
    with pytest.raises(C.CollateralError, match=f"PCCS sent collateral that expired at {EXPIRES}"):
        C.CollateralCache(tmp_path / "other").put(FMSPC, json.dumps(REAL), now=EXPIRES)
    with pytest.raises(C.CollateralError, match="PCCS sent collateral for FMSPC B0C06F000000, asked 90C06F000000"):
        cache.put("90C06F000000", json.dumps(REAL), now=NOW)
    with pytest.raises(C.CollateralError, match="malformed collateral: "):
        cache.put(FMSPC, "{}", now=NOW)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{FMSPC}.json"]  # no temp files


def test_refresh_schedule() -> None:
    info = C.CollateralInfo(FMSPC, 17, EXPIRES)
    assert C.refresh_at(None, None) == 0
    assert C.refresh_at(info, ISSUED) == ISSUED + C.REFRESH_INTERVAL
    late = EXPIRES - C.REFRESH_MARGIN - 3600
    assert C.refresh_at(info, late) == EXPIRES - C.REFRESH_MARGIN
    inside = EXPIRES - 3600 * 24
    assert C.refresh_at(info, inside) == inside + C.NEAR_EXPIRY_INTERVAL
    assert [C.retry_delay(n) for n in (1, 2, 3, 10)] == [60, 120, 240, C.RETRY_MAX]


async def test_refresher_on_mock_clock(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    routes = pccs_routes(REAL)
    calls: list[str] = []
    failing = [False]

    def get(url: str) -> C.HttpResponse:
        path = url.removeprefix("http://pccs.test")
        calls.append(path)
        if failing[0]:
            raise C.CollateralError(f"PCCS {url}: connection refused")
        status, headers, body = routes[path]
        return C.HttpResponse(status, {k.lower(): v for k, v in headers.items()}, body)

    base = ISSUED + 100
    cache = C.CollateralCache(tmp_path)
    async def fetcher(url: str, fmspc: str) -> str:
        return C.fetch(url, fmspc, get=get)

    refresher = C.CollateralRefresher(cache, "http://pccs.test", [FMSPC],
                                      wall=lambda: base + trio.current_time(), fetcher=fetcher)
    async with trio.open_nursery() as nursery:
        await nursery.start(refresher.run)
        assert cache.get(FMSPC) is not None  # fetched before `started`
        assert len(calls) == 4
        await trio.sleep(3 * 86400 + 60)  # virtual time: three daily refreshes
        assert len(calls) == 16
        failing[0] = True
        before = sample_value("coalitiond_collateral_fetch_failures_total") or 0
        # The 4th daily refresh (at +4 d) fails; retries back off 60, 120, 240 ... capped at
        # an hour: attempts at +0, 60, 180, 420, 900, 1860, 3780, 7380, 10980 s within 4 h.
        await trio.sleep(86400 - 60 + 4 * 3600)
        assert len(calls) - 16 == 9
        assert sample_value("coalitiond_collateral_fetch_failures_total") == before + 9
        assert cache.get(FMSPC) is not None  # the good cache is untouched
        failing[0] = False
        await trio.sleep(C.RETRY_MAX + 1)
        assert refresher._failures == {}
        nursery.cancel_scope.cancel()
