"""Where a Chronicle member hands its committed anchors (SPEC §3.3): sinks and the publisher.

The anchors themselves are consensus state (`components.chronicle`); publishing them is each
member's own side effect, outside the state machine, so it may fail, retry and resume.

Every sink publishes the same JSON object per anchor (keys sorted, no spaces):

    {"committee": "<64 hex>", "digest": "<64 hex>", "upto_seq": <int>}

* `FileAnchorSink(path)`: appends it as one line and fsyncs. On start it reads the file's last
  line and skips every anchor at or below that `upto_seq`, so re-publishing after a restart
  writes nothing twice. A torn last line (a crash mid-write: no final newline) is cut off.
* `HttpAnchorSink(url)`: POSTs it with `Content-Type: application/json`; any 2xx answer is
  success. The receiver deduplicates by (committee, upto_seq): after a restart a member
  re-sends anchors the receiver may already hold.
* `EvmAnchorSink` (`evm_sink.py`): posts to the committee's `ChronicleAnchors` contract from
  this member's own account; resumes from chain state.

`AnchorPublisher` owns a sink and a bounded queue: `offer(anchors)` never blocks; when the
queue is full it counts and logs the overflow, stops queueing, and `run()` later catches up
by reading the component's `anchors` read. `run()` publishes strictly in `upto_seq` order and
retries a failing sink with doubling delays capped at `max_backoff` (trio time only).
"""

from __future__ import annotations

import abc
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from ...consensus.types import MAX_COMMAND_SIZE
from ...primitives.encoding import decode
from ...primitives.errors import EncodingError, LocalError, OperatorError, RemoteError
from ...primitives.identity import ID_LEN
from ...primitives.logs import get_logger
from ...primitives.metrics import counter, gauge
from ..executor import BlockResult
from . import config
from .records import ANCHOR_TYPE, ChronicleAnchor, MalformedAnchor

log = get_logger(__name__)

#: Anchors waiting in memory; more than this and the publisher catches up from the state.
DEFAULT_QUEUE_CAPACITY: Final = 1_024
MAX_QUEUE_CAPACITY: Final = 1_000_000
DEFAULT_INITIAL_BACKOFF_S: Final = 0.5
DEFAULT_MAX_BACKOFF_S: Final = 60.0
#: Whole-request bound of one HTTP publish (connect, send, answer).
DEFAULT_HTTP_TIMEOUT_S: Final = 10.0
MAX_HTTP_TIMEOUT_S: Final = 300.0
#: How much of an error answer's body we quote in the error message.
MAX_ERROR_BODY: Final = 200
#: One JSON line is ~150 bytes; reading this much of the file's tail finds the last one.
_TAIL_BYTES: Final = 4_096
#: What a torn (partly written) anchor line can look like: a prefix of our JSON.
_ANCHOR_FRAGMENT: Final = re.compile(rb'\{[a-z0-9_":,]*')
#: Anchors one catch-up read asks for (the component caps it too).
CATCH_UP_PAGE: Final = 256

PUBLISHED = counter("anchors_published_total", "Chronicle anchors handed to the anchor sink")
FAILURES = counter("anchor_publish_failures_total", "Failed anchor publish attempts (retried)")
DROPPED = counter("anchor_offers_dropped_total",
                  "Anchors not queued because the queue was full (published later by "
                  "catch-up from the component state)")
PUBLISHED_UPTO = gauge("anchor_published_upto_seq", "upto_seq of the last anchor published")
LAG_ENTRIES = gauge("anchor_lag_entries",
                    "Entries covered by committed anchors that this member has not yet "
                    "published (highest committed upto_seq - highest published upto_seq)")
LAG_ALERT_ENTRIES = gauge("anchor_lag_alert_entries",
                          "The configured alert threshold for coalitiond_anchor_lag_entries "
                          "(component.anchor_sink.lag_alert_entries)")
LAG_ALERT = gauge("anchor_lag_alert", "1 while coalitiond_anchor_lag_entries is above "
                  "coalitiond_anchor_lag_alert_entries, else 0")


class AnchorPublishError(RemoteError):
    """One publish attempt failed (I/O, HTTP status, timeout); the publisher retries."""


# ---------------------------------------------------------------------------------------
# The JSON form


def anchor_json(anchor: ChronicleAnchor, committee_id: bytes) -> dict[str, Any]:
    return {"committee": committee_id.hex(), "digest": anchor.digest.hex(),
            "upto_seq": anchor.upto_seq}


def anchor_line(anchor: ChronicleAnchor, committee_id: bytes) -> bytes:
    return (json.dumps(anchor_json(anchor, committee_id), sort_keys=True,
                       separators=(",", ":")) + "\n").encode("ascii")


def parse_anchor_json(obj: Any) -> tuple[bytes, ChronicleAnchor]:
    """(committee id, anchor) from the JSON object; MalformedAnchor if it is not one."""
    if not (isinstance(obj, dict) and set(obj) == {"committee", "digest", "upto_seq"}):
        raise MalformedAnchor("anchor JSON: expected {committee, digest, upto_seq}")
    committee, dig, upto = obj["committee"], obj["digest"], obj["upto_seq"]
    try:
        committee_id, digest = bytes.fromhex(committee), bytes.fromhex(dig)
    except (TypeError, ValueError):
        raise MalformedAnchor("anchor JSON: committee and digest must be hex") from None
    if not (len(committee_id) == ID_LEN and len(digest) == ID_LEN and isinstance(upto, int)
            and not isinstance(upto, bool) and upto >= 0):
        raise MalformedAnchor("anchor JSON: committee and digest are 32 bytes, upto_seq an "
                              "unsigned integer")
    return committee_id, ChronicleAnchor(upto, digest)


# ---------------------------------------------------------------------------------------
# Sinks


class AnchorSink(abc.ABC):
    @abc.abstractmethod
    async def publish(self, anchor: ChronicleAnchor, committee_id: bytes) -> None:
        """Publish one anchor; AnchorPublishError if this attempt failed (retry later)."""

    def resume_after(self) -> int:
        """The highest upto_seq this sink is known to hold already (-1: nothing known)."""
        return -1

    async def prepare(self) -> None:
        """Check the destination and learn what it holds, before the first publish (and
        again after a failure); AnchorPublishError if it cannot be reached now."""
        return None


class FileAnchorSink(AnchorSink):
    """One JSON line per anchor, appended and fsynced; idempotent across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._committee: bytes | None = None
        self.last_upto_seq = -1
        self._load()

    def _load(self) -> None:
        """Read the last complete line; cut a torn tail left by a crash mid-write, but only
        once the rest is known to be an anchor file (never damage someone else's file)."""
        try:
            with open(self.path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - _TAIL_BYTES)
                f.seek(start)
                tail = f.read()
                cut = tail.rfind(b"\n") + 1  # 0 when the tail holds no complete line
                complete, torn = tail[:cut], tail[cut:]
                if torn and (start > 0 and not complete):
                    raise OperatorError(f"{self.path}: last line longer than {_TAIL_BYTES} "
                                        "bytes: not an anchor file")
                if complete:
                    self._parse_last(complete[:-1].rsplit(b"\n", 1)[-1])
                if torn:
                    if not _ANCHOR_FRAGMENT.fullmatch(torn):
                        raise OperatorError(f"{self.path}: last line is not an anchor; not an "
                                            "anchor file?")
                    log.warning("anchors.file.torn_tail", path=str(self.path),
                                dropped=len(torn))
                    f.truncate(start + cut)
                    f.flush()
                    os.fsync(f.fileno())
        except FileNotFoundError:
            return
        except OSError as e:
            raise OperatorError(f"{self.path}: cannot read the anchor file: {e.strerror}"
                                ) from None

    def _parse_last(self, line: bytes) -> None:
        try:
            self._committee, anchor = parse_anchor_json(json.loads(line))
        except (ValueError, MalformedAnchor) as e:
            raise OperatorError(f"{self.path}: last line is not an anchor ({e}); not an "
                                "anchor file?") from None
        self.last_upto_seq = anchor.upto_seq

    def resume_after(self) -> int:
        return self.last_upto_seq

    async def publish(self, anchor: ChronicleAnchor, committee_id: bytes) -> None:
        if self._committee is not None and self._committee != committee_id:
            raise OperatorError(f"{self.path}: holds anchors of committee "
                                f"{self._committee.hex()}, not {committee_id.hex()}")
        if anchor.upto_seq <= self.last_upto_seq:
            return
        await trio.to_thread.run_sync(self._append, anchor_line(anchor, committee_id))
        self._committee = committee_id
        self.last_upto_seq = anchor.upto_seq

    def _append(self, line: bytes) -> None:
        created = not self.path.exists()
        try:
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if created:
                # The new file's directory entry must be durable too.
                fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise AnchorPublishError(f"{self.path}: cannot append the anchor: {e.strerror}"
                                     ) from None


class HttpAnchorSink(AnchorSink):
    """POST the anchor's JSON to `url`; 2xx is success."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_HTTP_TIMEOUT_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise OperatorError(f"anchor sink url {url!r}: must start with http:// or https://")
        if not 0 < timeout <= MAX_HTTP_TIMEOUT_S:
            raise OperatorError(f"anchor sink timeout: must be in (0, {MAX_HTTP_TIMEOUT_S}] s")
        self.url = url
        self.timeout = timeout

    async def publish(self, anchor: ChronicleAnchor, committee_id: bytes) -> None:
        body = json.dumps(anchor_json(anchor, committee_id), sort_keys=True,
                          separators=(",", ":")).encode("ascii")
        status: int | None = None
        detail = b""
        with trio.move_on_after(self.timeout) as scope:
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client, \
                        client.stream("POST", self.url, content=body,
                                      headers={"content-type": "application/json"}) as resp:
                    status = resp.status_code
                    if not 200 <= status < 300:
                        async for chunk in resp.aiter_bytes():
                            detail += chunk
                            if len(detail) >= MAX_ERROR_BODY:
                                break
            except httpx.TimeoutException:
                status = None
            except (httpx.HTTPError, httpx.InvalidURL) as e:
                raise AnchorPublishError(f"POST {self.url}: {type(e).__name__}: {e}") from None
        if status is None or scope.cancelled_caught:
            raise AnchorPublishError(f"POST {self.url}: no answer within {self.timeout:g} s")
        if not 200 <= status < 300:
            text = detail[:MAX_ERROR_BODY].decode("utf-8", "replace").replace("\n", " ")
            raise AnchorPublishError(f"POST {self.url}: HTTP {status}"
                                     + (f": {text}" if text else ""))


def make_sink(sink: config.AnchorSink, *, member_index: int | None = None,
              quorum: int | None = None, committee_size: int | None = None) -> AnchorSink:
    """The sink a member's `[component.anchor_sink]` names (`evm` needs this member's index
    and the committee's quorum)."""
    if sink.kind == "file":
        if sink.path is None:
            raise OperatorError("component.anchor_sink.path: required for the file sink")
        return FileAnchorSink(sink.path)
    if sink.kind == "http":
        if sink.url is None:
            raise OperatorError("component.anchor_sink.url: required for the http sink")
        return HttpAnchorSink(sink.url)
    if sink.kind == "evm":
        from .evm_keys import load_evm_key_file
        from .evm_rpc import JsonRpc
        from .evm_sink import EvmAnchorSink

        if member_index is None or quorum is None:
            raise LocalError("make_sink: the evm sink needs member_index and quorum")
        if sink.key_file is None or sink.url is None or sink.chain_id is None \
                or sink.contract is None:
            raise OperatorError("component.anchor_sink: the evm sink needs url, chain_id, "
                                "contract, members and key_file")
        if committee_size is not None and len(sink.members) != committee_size:
            raise OperatorError(f"component.anchor_sink.members: {len(sink.members)} "
                                f"addresses for a committee of {committee_size} members "
                                "(one per member, in member order)")
        return EvmAnchorSink(JsonRpc((sink.url, *sink.fallback_urls)),
                             load_evm_key_file(sink.key_file), chain_id=sink.chain_id,
                             contract=sink.contract, members=sink.members, me=member_index,
                             quorum=quorum, confirmations=sink.confirmations)
    raise OperatorError(f"component.anchor_sink.kind: unknown sink {sink.kind!r}")


# ---------------------------------------------------------------------------------------
# Feeding the publisher


def anchors_in(result: BlockResult) -> list[ChronicleAnchor]:
    """The anchors a Chronicle committed in one executed block: its `end_block` entries,
    which the executor names by the block digest."""
    return [ChronicleAnchor.decode(entry.data) for entry in result.entries
            if entry.envelope_id == result.digest and _is_anchor(entry.data)]


def _is_anchor(data: bytes) -> bool:
    try:
        obj = decode(data, max_size=MAX_COMMAND_SIZE)
    except EncodingError:
        return False
    return isinstance(obj, list) and bool(obj) and obj[0] == ANCHOR_TYPE


AnchorReader = Callable[[int], Sequence[ChronicleAnchor]]


def query_reader(query: Callable[[str, Mapping[str, Any]], Any]) -> AnchorReader:
    """An `AnchorReader` over a component (or executor) `query`: the anchors whose upto_seq
    is at least `since`, one page."""
    def read(since: int) -> list[ChronicleAnchor]:
        page = query("anchors", {"since": since, "limit": CATCH_UP_PAGE})
        return [ChronicleAnchor(a["upto_seq"], a["digest"]) for a in page["anchors"]]
    return read


class AnchorPublisher:
    """Publishes a Chronicle's anchors through one sink, in order, never losing one."""

    def __init__(self, sink: AnchorSink, committee_id: bytes, read_anchors: AnchorReader, *,
                 capacity: int = DEFAULT_QUEUE_CAPACITY,
                 initial_backoff: float = DEFAULT_INITIAL_BACKOFF_S,
                 max_backoff: float = DEFAULT_MAX_BACKOFF_S,
                 lag_alert_entries: int = config.DEFAULT_LAG_ALERT_ENTRIES) -> None:
        if len(committee_id) != ID_LEN:
            raise LocalError(f"committee id must be {ID_LEN} bytes")
        if not 0 < capacity <= MAX_QUEUE_CAPACITY:
            raise LocalError(f"anchor queue capacity must be 1..{MAX_QUEUE_CAPACITY}")
        if not 0 < initial_backoff <= max_backoff:
            raise LocalError("anchor publish backoff: need 0 < initial <= max")
        if lag_alert_entries < 1:
            raise LocalError("anchor lag alert threshold: need >= 1 entry")
        self.sink = sink
        self.committee_id = committee_id
        self.read_anchors = read_anchors
        self.capacity = capacity
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._queue: deque[ChronicleAnchor] = deque()
        #: The last anchor published (by this process or found in the sink at start).
        self.published_upto = sink.resume_after()
        #: The highest anchor queued or published: offers at or below it are duplicates.
        self._known_upto = self.published_upto
        #: Anchors were dropped (or may exist from before this start): catch up from state.
        self.behind = True
        self._overflowed = False
        self.dropped = 0
        self.failures = 0
        self._wake = trio.Event()
        #: The highest committed anchor seen (offered or read back); the lag is measured
        #: from it.
        self.committed_upto = -1
        self.lag_alert_entries = lag_alert_entries
        self._alerting = False
        #: Set (and replaced) on every publish: `wait_published` waits on it.
        self._progress = trio.Event()
        LAG_ALERT_ENTRIES.set(lag_alert_entries)

    def offer(self, anchors: Iterable[ChronicleAnchor]) -> None:
        """Queue fresh anchors without blocking. On a full queue: count and log, stop
        queueing, and let `run` catch up from the component's state."""
        for anchor in anchors:
            self._saw_committed(anchor.upto_seq)
            if anchor.upto_seq <= self._known_upto:
                continue
            if not self.behind and len(self._queue) >= self.capacity:
                log.warning("anchors.queue_full", upto_seq=anchor.upto_seq,
                            capacity=self.capacity)
                self.behind = self._overflowed = True
            if self.behind:
                # Catch-up reads it from the state; count it only when it is an overflow
                # (not the catch-up every start begins with).
                if self._overflowed:
                    self.dropped += 1
                    DROPPED.inc()
                continue
            self._queue.append(anchor)
            self._known_upto = anchor.upto_seq
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def lag_entries(self) -> int:
        """How many entries committed anchors cover beyond what this member published."""
        return max(0, self.committed_upto - self.published_upto)

    def _saw_committed(self, upto_seq: int) -> None:
        if upto_seq > self.committed_upto:
            self.committed_upto = upto_seq
            self._update_lag()

    def _update_lag(self) -> None:
        lag = self.lag_entries
        LAG_ENTRIES.set(lag)
        alerting = lag > self.lag_alert_entries
        LAG_ALERT.set(int(alerting))
        if alerting != self._alerting:
            self._alerting = alerting
            if alerting:
                log.warning("anchors.lagging", lag_entries=lag,
                            threshold=self.lag_alert_entries,
                            published_upto=self.published_upto,
                            committed_upto=self.committed_upto)
            else:
                log.info("anchors.caught_up", published_upto=self.published_upto)

    async def wait_published(self, upto_seq: int) -> None:
        """Return once an anchor at or above `upto_seq` is published."""
        while self.published_upto < upto_seq:
            await self._progress.wait()

    async def _prepare(self) -> None:
        """The sink's own check and resume point, retried with backoff until it answers."""
        delay = self.initial_backoff
        while True:
            try:
                await self.sink.prepare()
                break
            except AnchorPublishError as e:
                self.failures += 1
                FAILURES.inc()
                log.warning("anchors.prepare_failed", error=str(e), retry_in_s=delay)
                await trio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        resume = self.sink.resume_after()
        if resume > self.published_upto:
            self.published_upto = resume
            self._known_upto = max(self._known_upto, resume)
            self._update_lag()
            self._progress.set()
            self._progress = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        await self._prepare()
        while True:
            if self._queue:
                await self._publish(self._queue[0])
                self._queue.popleft()
            elif self.behind:
                await self._catch_up()
            else:
                self._wake = trio.Event()
                await self._wake.wait()

    async def _catch_up(self) -> None:
        read = self.read_anchors(self.published_upto + 1)
        for a in read:
            self._saw_committed(a.upto_seq)
        page = [a for a in read if a.upto_seq > self.published_upto]
        if not page:
            # No await since the read: nothing was committed in between.
            self.behind = self._overflowed = False
            self._known_upto = max(self._known_upto, self.published_upto)
            return
        for anchor in sorted(page, key=lambda a: a.upto_seq):
            await self._publish(anchor)

    async def _publish(self, anchor: ChronicleAnchor) -> None:
        if anchor.upto_seq <= self.published_upto:
            return
        delay = self.initial_backoff
        while True:
            try:
                await self.sink.publish(anchor, self.committee_id)
                break
            except AnchorPublishError as e:
                self.failures += 1
                FAILURES.inc()
                log.warning("anchors.publish_failed", upto_seq=anchor.upto_seq, error=str(e),
                            retry_in_s=delay)
                await trio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        self.published_upto = anchor.upto_seq
        self._known_upto = max(self._known_upto, anchor.upto_seq)
        self._saw_committed(anchor.upto_seq)
        self._update_lag()
        self._progress.set()
        self._progress = trio.Event()
        PUBLISHED.inc()
        PUBLISHED_UPTO.set(anchor.upto_seq)
        log.info("anchors.published", upto_seq=anchor.upto_seq, digest=anchor.digest.hex())

