"""DCAP collateral: fetched from a PCCS (Intel PCS v4 compatible API), cached on disk per FMSPC,
refreshed before it expires — and never fetched on the verification path (DESIGN §2.7,
research/dcap.md §1.3).

Parts:
* `assemble(...)` — pure: builds dcap-qvl's collateral JSON from the four PCCS responses,
  keeping the exact signed JSON text of TCB info and QE identity (re-serialising it would
  break Intel's signature).
* `fetch(pccs_url, fmspc)` — blocking HTTP with stdlib urllib (no new dependency; four small
  GETs a day do not justify an HTTP client library). The daemon runs it in a worker thread.
* `CollateralCache` — one JSON file per FMSPC, written atomically; `get(fmspc)` is what the
  admission gate reads (no I/O beyond the local file).
* `refresh_at(...)` and `CollateralRefresher` — when to refetch, and the trio loop doing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import trio

from ..primitives.errors import OperatorError, RemoteError
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge
from . import dcap

log = get_logger(__name__)

#: Upper bound on one PCCS response body (real ones are < 20 KiB; the PCK CRL is the largest).
MAX_RESPONSE_SIZE: Final = 1024 * 1024
HTTP_TIMEOUT_SECONDS: Final = 30.0
#: Refetch at least this often: Intel may publish new TCB data before `nextUpdate`.
REFRESH_INTERVAL: Final = 24 * 3600
#: ... and at the latest this long before the cached collateral expires.
REFRESH_MARGIN: Final = 7 * 24 * 3600
#: Inside the margin (the PCCS has nothing newer yet), ask again this often.
NEAR_EXPIRY_INTERVAL: Final = 3600
RETRY_MIN: Final = 60
RETRY_MAX: Final = 3600
#: FMSPCs one refresher follows (a committee's platforms; a handful in practice).
MAX_FMSPCS: Final = 64

_FMSPC_RE: Final = re.compile(r"^[0-9A-F]{12}$")

FETCH_FAILURES = counter("collateral_fetch_failures", "Failed PCCS collateral fetches")
FETCHES = counter("collateral_fetches", "Successful PCCS collateral fetches")
EXPIRES_AT = gauge("collateral_expires_at", "Unix time the cached collateral expires", ("fmspc",))


class CollateralError(RemoteError):
    """The PCCS sent something unusable (or could not be reached)."""


def check_fmspc(fmspc: str) -> str:
    if not _FMSPC_RE.match(fmspc):
        raise CollateralError(f"FMSPC must be 12 upper-case hex digits, got {fmspc!r}")
    return fmspc


# --------------------------------------------------------------------------------------
# Expiry of a collateral document


def _der_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER item at `pos`."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise CollateralError("CRL: unsupported DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise CollateralError("CRL: truncated DER")
    return tag, pos, end


def _der_time(tag: int, raw: bytes) -> int:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise CollateralError("CRL: nextUpdate is not a time")
    return int(datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC).timestamp())


def crl_next_update(der: bytes) -> int:
    """`nextUpdate` of a DER CRL (RFC 5280 §5.1): TBSCertList = SEQUENCE { [version],
    signature AlgorithmIdentifier, issuer Name, thisUpdate Time, nextUpdate Time, ... }."""
    try:
        _, pos, _ = _der_tlv(der, 0)  # CertificateList
        _, pos, tbs_end = _der_tlv(der, pos)  # TBSCertList
        tag, start, end = _der_tlv(der, pos)
        if tag == 0x02:  # version
            tag, start, end = _der_tlv(der, end)
        _, _, end = _der_tlv(der, end)  # issuer (after the signature algorithm above)
        tag, start, end = _der_tlv(der, end)  # thisUpdate
        tag, start, end = _der_tlv(der, end)  # nextUpdate
        if end > tbs_end:
            raise CollateralError("CRL: no nextUpdate")
        return _der_time(tag, der[start:end])
    except (IndexError, ValueError, UnicodeDecodeError):
        raise CollateralError("CRL: malformed DER") from None


def _iso(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True, slots=True)
class CollateralInfo:
    fmspc: str
    tcb_eval_data_number: int
    expires_at: int  # earliest nextUpdate of TCB info, QE identity and both CRLs


def inspect(collateral_json: str) -> CollateralInfo:
    """FMSPC, evaluation number and expiry of a collateral JSON document. Unverified."""
    try:
        d = json.loads(collateral_json)
        tcb = json.loads(d["tcb_info"])
        qe = json.loads(d["qe_identity"])
        expiry = min(
            _iso(tcb["nextUpdate"]),
            _iso(qe["nextUpdate"]),
            crl_next_update(bytes.fromhex(d["pck_crl"])),
            crl_next_update(bytes.fromhex(d["root_ca_crl"])),
        )
        return CollateralInfo(str(tcb["fmspc"]).upper(), int(tcb["tcbEvaluationDataNumber"]), expiry)
    except (KeyError, TypeError, ValueError) as e:
        raise CollateralError(f"malformed collateral: {e}") from None


# --------------------------------------------------------------------------------------
# PCCS responses → collateral JSON


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def _signed_member(body: bytes, member: str) -> tuple[str, str]:
    """The exact text of `member` in a PCS JSON response, and the response's signature."""
    text = body.decode("utf-8")
    try:
        parsed = json.loads(text)
        key = f'"{member}"'
        pos = text.index(key) + len(key)
        while text[pos] in " \t\r\n:":
            pos += 1
        value, end = json.JSONDecoder().raw_decode(text, pos)
    except (ValueError, IndexError):
        raise CollateralError(f"PCCS response has no {member!r} object") from None
    if value != parsed.get(member) or not isinstance(parsed.get("signature"), str):
        raise CollateralError(f"PCCS response {member!r} is ambiguous or unsigned")
    return text[pos:end], parsed["signature"]


def _chain(resp: HttpResponse, *names: str) -> str:
    for name in names:
        if name.lower() in resp.headers:
            return urllib.parse.unquote(resp.headers[name.lower()])
    raise CollateralError(f"PCCS response lacks the {names[0]} header")


def _crl_bytes(body: bytes) -> bytes:
    """A CRL body: raw DER, or (PCCS rootcacrl) its hex text."""
    if body[:1] == b"\x30":
        return body
    try:
        return bytes.fromhex(body.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise CollateralError("CRL response is neither DER nor hex") from None


def assemble(
    pck_crl: HttpResponse, tcb: HttpResponse, qe: HttpResponse, root_crl: HttpResponse
) -> str:
    """dcap-qvl collateral JSON (no `pck_certificate_chain`: it is per platform, §1.3)."""
    tcb_text, tcb_sig = _signed_member(tcb.body, "tcbInfo")
    qe_text, qe_sig = _signed_member(qe.body, "enclaveIdentity")
    doc = {
        "pck_crl_issuer_chain": _chain(pck_crl, "SGX-PCK-CRL-Issuer-Chain"),
        "root_ca_crl": _crl_bytes(root_crl.body).hex(),
        "pck_crl": _crl_bytes(pck_crl.body).hex(),
        "tcb_info_issuer_chain": _chain(tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"),
        "tcb_info": tcb_text,
        "tcb_info_signature": tcb_sig,
        "qe_identity_issuer_chain": _chain(qe, "SGX-Enclave-Identity-Issuer-Chain"),
        "qe_identity": qe_text,
        "qe_identity_signature": qe_sig,
    }
    text = json.dumps(doc, sort_keys=True)
    dcap.load_collateral(text)  # dcap-qvl must be able to read what we store
    return text


# --------------------------------------------------------------------------------------
# HTTP


def urllib_get(url: str) -> HttpResponse:
    """Blocking GET with a timeout and a size bound. Never call on the event loop."""
    req = urllib.request.Request(url, headers={"Accept": "*/*"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as r:
            body = r.read(MAX_RESPONSE_SIZE + 1)
            headers = {k.lower(): v for k, v in r.headers.items()}
            status = r.status
    except urllib.error.HTTPError as e:
        raise CollateralError(f"PCCS {url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise CollateralError(f"PCCS {url}: {getattr(e, 'reason', e)}") from None
    if len(body) > MAX_RESPONSE_SIZE:
        raise CollateralError(f"PCCS {url}: response larger than {MAX_RESPONSE_SIZE} bytes")
    return HttpResponse(status, headers, body)


def fetch(
    pccs_url: str, fmspc: str, *, ca: str = "platform",
    get: Callable[[str], HttpResponse] = urllib_get,
) -> str:
    """Fetch and assemble collateral for one FMSPC. Blocking."""
    check_fmspc(fmspc)
    if ca not in ("platform", "processor"):
        raise CollateralError(f"unknown PCK CA {ca!r}")
    base = pccs_url.rstrip("/")
    return assemble(
        get(f"{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"),
        get(f"{base}/tdx/certification/v4/tcb?fmspc={fmspc}"),
        get(f"{base}/tdx/certification/v4/qe/identity"),
        get(f"{base}/sgx/certification/v4/rootcacrl"),
    )


# --------------------------------------------------------------------------------------
# On-disk cache


class CollateralCache:
    """`<dir>/<FMSPC>.json`, written atomically (temp file, fsync, rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._memo: dict[str, tuple[float, Any]] = {}

    def path(self, fmspc: str) -> Path:
        return self.directory / f"{check_fmspc(fmspc)}.json"

    def read_text(self, fmspc: str) -> str | None:
        try:
            return self.path(fmspc).read_text("utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OperatorError(f"cannot read collateral cache {self.path(fmspc)}: {e.strerror}") from None

    def info(self, fmspc: str) -> CollateralInfo | None:
        text = self.read_text(fmspc)
        return None if text is None else inspect(text)

    def get(self, fmspc: str) -> Any:
        """Parsed collateral for `fmspc`, or None. Memoised until the file changes."""
        try:
            mtime = self.path(fmspc).stat().st_mtime_ns
        except (FileNotFoundError, CollateralError):
            return None
        memo = self._memo.get(fmspc)
        if memo is not None and memo[0] == mtime:
            return memo[1]
        text = self.read_text(fmspc)
        if text is None:
            return None
        parsed = dcap.load_collateral(text)
        self._memo[fmspc] = (mtime, parsed)
        return parsed

    def put(self, fmspc: str, collateral_json: str, *, now: int) -> CollateralInfo:
        """Store new collateral unless it is for another FMSPC, already expired, or older
        (lower TCB evaluation number) than what we hold — a PCCS cannot roll us back."""
        info = inspect(collateral_json)
        doc = json.loads(collateral_json)
        if doc.pop("pck_certificate_chain", None) is not None:
            # Per-platform; kept, it would override every other platform's chain (§1.3).
            collateral_json = json.dumps(doc, sort_keys=True)
        if info.fmspc != check_fmspc(fmspc):
            raise CollateralError(f"PCCS sent collateral for FMSPC {info.fmspc}, asked {fmspc}")
        if info.expires_at <= now:
            raise CollateralError(f"PCCS sent collateral that expired at {info.expires_at}")
        old = self.info(fmspc)
        if old is not None and info.tcb_eval_data_number < old.tcb_eval_data_number:
            raise CollateralError(
                f"PCCS sent TCB evaluation number {info.tcb_eval_data_number}, "
                f"older than the cached {old.tcb_eval_data_number}"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{fmspc}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(collateral_json)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(fmspc))
        except BaseException:
            # Never leave a half-written temp file behind; the old cache file is untouched.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        EXPIRES_AT.labels(fmspc=fmspc).set(info.expires_at)
        return info


# --------------------------------------------------------------------------------------
# Refresh schedule (pure) and loop (trio)


def refresh_at(info: CollateralInfo | None, fetched_at: int | None) -> int:
    """When to refetch: now if we have nothing; otherwise a day after the last fetch, but
    never later than REFRESH_MARGIN before expiry."""
    if info is None or fetched_at is None:
        return 0
    due = min(fetched_at + REFRESH_INTERVAL, info.expires_at - REFRESH_MARGIN)
    if due <= fetched_at:
        # Already inside the margin and the PCCS had nothing newer: poll, don't spin.
        due = fetched_at + NEAR_EXPIRY_INTERVAL
    return due


def retry_delay(failures: int) -> int:
    """Exponential backoff after `failures` consecutive failures, capped."""
    return int(min(RETRY_MAX, RETRY_MIN * 2 ** max(0, failures - 1)))


async def fetch_in_thread(pccs_url: str, fmspc: str) -> str:
    """`fetch` in a worker thread (urllib blocks), so the event loop keeps running."""
    return await trio.to_thread.run_sync(lambda: fetch(pccs_url, fmspc))


class CollateralRefresher:
    """Keeps the cache fresh for a set of FMSPCs. Fetches run in worker threads.

    `wall` is the unix clock (injected so tests can tie it to trio's MockClock).
    """

    def __init__(
        self,
        cache: CollateralCache,
        pccs_url: str,
        fmspcs: Iterable[str],
        *,
        wall: Callable[[], float],
        fetcher: Callable[[str, str], Awaitable[str]] | None = None,
    ) -> None:
        self.cache = cache
        self.pccs_url = pccs_url
        self.fmspcs = sorted({check_fmspc(f) for f in fmspcs})
        if len(self.fmspcs) > MAX_FMSPCS:
            raise OperatorError(f"more than {MAX_FMSPCS} FMSPCs to follow")
        self._wall = wall
        # Injected in tests: a worker thread would let trio's MockClock jump while it runs.
        self._fetch = fetcher or fetch_in_thread
        self._fetched_at: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._next: dict[str, int] = {}

    def due(self, fmspc: str) -> int:
        if fmspc in self._next:
            return self._next[fmspc]
        return refresh_at(self.cache.info(fmspc), self._fetched_at.get(fmspc))

    async def refresh_one(self, fmspc: str) -> bool:
        now = int(self._wall())
        try:
            text = await self._fetch(self.pccs_url, fmspc)
            info = self.cache.put(fmspc, text, now=now)
        except (CollateralError, RemoteError) as e:
            failures = self._failures.get(fmspc, 0) + 1
            self._failures[fmspc] = failures
            self._next[fmspc] = now + retry_delay(failures)
            FETCH_FAILURES.inc()
            log.warning("collateral fetch failed", fmspc=fmspc, error=str(e), retry_in=retry_delay(failures))
            return False
        self._failures.pop(fmspc, None)
        self._fetched_at[fmspc] = now
        self._next.pop(fmspc, None)
        FETCHES.inc()
        log.info("collateral refreshed", fmspc=fmspc, tcb_eval=info.tcb_eval_data_number,
                 expires_at=info.expires_at)
        return True

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            for fmspc in self.fmspcs:
                if self.due(fmspc) <= int(self._wall()):
                    await self.refresh_one(fmspc)
            if not started:
                task_status.started()
                started = True
            nearest = min((self.due(f) for f in self.fmspcs), default=None)
            if nearest is None:
                return
            await trio.sleep(max(1.0, nearest - self._wall()))
