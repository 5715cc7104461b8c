"""Anchor sinks (file, HTTP against a real local server) and the anchor publisher (order,
retries with bounded backoff, overflow caught up from the component, resume)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from coalitiond import config
from coalitiond.commands.envelope import Acl, Envelope
from coalitiond.components.chronicle.anchors import (
    AnchorPublisher,
    AnchorPublishError,
    AnchorSink,
    FileAnchorSink,
    HttpAnchorSink,
    anchor_line,
    anchors_in,
    make_sink,
    parse_anchor_json,
    query_reader,
)
from coalitiond.components.chronicle.component import Chronicle
from coalitiond.components.chronicle.records import ChronicleAnchor, append_command
from coalitiond.components.executor import Executor
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.errors import OperatorError

pytestmark = pytest.mark.live

COMMITTEE = b"\x33" * 32
OTHER_COMMITTEE = b"\x34" * 32
OPERATOR = SigningKey(b"\x01" * 32)


def anchor(upto: int) -> ChronicleAnchor:
    return ChronicleAnchor(upto, bytes([upto % 256]) * 32)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- file sink --------------------------------------------------------------------------------


async def test_file_sink_appends_json_lines_and_resumes_idempotently(tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    sink = FileAnchorSink(path)
    assert sink.resume_after() == -1
    for a in (anchor(2), anchor(5)):
        await sink.publish(a, COMMITTEE)
    assert path.read_bytes() == anchor_line(anchor(2), COMMITTEE) + anchor_line(anchor(5),
                                                                                COMMITTEE)
    assert lines(path)[1] == {"committee": COMMITTEE.hex(), "digest": anchor(5).digest.hex(),
                              "upto_seq": 5}
    # A restart: the sink knows where it is; re-publishing writes nothing twice.
    again = FileAnchorSink(path)
    assert again.resume_after() == 5
    for a in (anchor(2), anchor(5), anchor(8)):
        await again.publish(a, COMMITTEE)
    assert [x["upto_seq"] for x in lines(path)] == [2, 5, 8]


async def test_file_sink_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    path.write_bytes(anchor_line(anchor(2), COMMITTEE) + b'{"committee":"ab')
    sink = FileAnchorSink(path)
    assert sink.resume_after() == 2
    assert path.read_bytes() == anchor_line(anchor(2), COMMITTEE)
    await sink.publish(anchor(5), COMMITTEE)
    assert [x["upto_seq"] for x in lines(path)] == [2, 5]


async def test_file_sink_refuses_another_committees_file(tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    path.write_bytes(anchor_line(anchor(2), OTHER_COMMITTEE))
    with pytest.raises(OperatorError, match=f"holds anchors of committee "
                                            f"{OTHER_COMMITTEE.hex()}, not {COMMITTEE.hex()}"):
        await FileAnchorSink(path).publish(anchor(5), COMMITTEE)


@pytest.mark.parametrize("content", [b"hello\n", b'{"upto_seq": 1}\n', b"x" * 5000, b"\n"])
def test_file_sink_refuses_a_file_that_is_not_anchors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "anchors.jsonl"
    path.write_bytes(content)
    with pytest.raises(OperatorError, match="not an anchor file"):
        FileAnchorSink(path)


async def test_file_sink_write_failure_is_a_publish_error(tmp_path: Path) -> None:
    sink = FileAnchorSink(tmp_path / "missing-dir" / "anchors.jsonl")
    with pytest.raises(AnchorPublishError, match="cannot append the anchor"):
        await sink.publish(anchor(1), COMMITTEE)


@pytest.mark.parametrize("obj", [
    [], {"committee": "zz", "digest": "00" * 32, "upto_seq": 1},
    {"committee": "00" * 31, "digest": "00" * 32, "upto_seq": 1},
    {"committee": "00" * 32, "digest": "00" * 32, "upto_seq": -1},
    {"committee": "00" * 32, "digest": "00" * 32, "upto_seq": True},
])
def test_bad_anchor_json(obj: Any) -> None:
    with pytest.raises(Exception, match="anchor JSON"):
        parse_anchor_json(obj)


# -- HTTP sink --------------------------------------------------------------------------------


class Receiver:
    """A tiny ASGI app: /ok answers 204, /fail 500, /hang never answers."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["path"] == "/hang":
            await trio.sleep_forever()
        status = 500 if scope["path"] == "/fail" else 204
        if status == 204:
            assert dict(scope["headers"])[b"content-type"] == b"application/json"
            self.received.append(json.loads(body))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"boom\nagain" if status == 500
                    else b""})


async def _serve(nursery: trio.Nursery, app: Receiver) -> str:
    cfg = Config()
    cfg.bind = ["127.0.0.1:0"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 0.1
    (address,) = await nursery.start(serve, app, cfg)  # type: ignore[arg-type]
    return str(address)


async def test_http_sink_posts_json_and_reports_500_and_timeout() -> None:
    app = Receiver()
    async with trio.open_nursery() as nursery:
        base = await _serve(nursery, app)
        await HttpAnchorSink(base + "/ok").publish(anchor(4), COMMITTEE)
        assert app.received == [{"committee": COMMITTEE.hex(), "digest": anchor(4).digest.hex(),
                                 "upto_seq": 4}]
        with pytest.raises(AnchorPublishError, match=f"^POST {base}/fail: HTTP 500: boom again$"):
            await HttpAnchorSink(base + "/fail").publish(anchor(5), COMMITTEE)
        with pytest.raises(AnchorPublishError,
                           match=f"^POST {base}/hang: no answer within 0.3 s$"):
            await HttpAnchorSink(base + "/hang", timeout=0.3).publish(anchor(5), COMMITTEE)
        nursery.cancel_scope.cancel()


async def test_http_sink_connection_refused_is_a_publish_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(AnchorPublishError, match=f"^POST http://127.0.0.1:{port}/: Connect"):
        await HttpAnchorSink(f"http://127.0.0.1:{port}/", timeout=2).publish(anchor(1),
                                                                              COMMITTEE)


@pytest.mark.parametrize(("url", "timeout", "message"), [
    ("ftp://x", 1.0, "must start with http:// or https://"),
    ("http://x", 0.0, "timeout: must be in"),
])
def test_http_sink_bad_settings(url: str, timeout: float, message: str) -> None:
    with pytest.raises(OperatorError, match=message):
        HttpAnchorSink(url, timeout=timeout)


def test_make_sink(tmp_path: Path) -> None:
    assert isinstance(make_sink(config.AnchorSink("file", path=tmp_path / "a.jsonl")),
                      FileAnchorSink)
    http = make_sink(config.AnchorSink("http", url="http://127.0.0.1:9/anchors"))
    assert isinstance(http, HttpAnchorSink) and http.url == "http://127.0.0.1:9/anchors"
    # The evm sink: its key file must be this member's address, and one address per member.
    from coalitiond.components.chronicle.evm_keys import (
        evm_address,
        generate_evm_key,
        load_evm_key_file,
        write_evm_key_file,
    )
    from coalitiond.components.chronicle.evm_sink import EvmAnchorSink

    write_evm_key_file(tmp_path / "evm.key", generate_evm_key())
    me = evm_address(load_evm_key_file(tmp_path / "evm.key"))
    evm = config.AnchorSink("evm", url="http://127.0.0.1:9", chain_id=1,
                            contract=b"\x01" * 20, members=(b"\x02" * 20, me),
                            key_file=tmp_path / "evm.key")
    sink = make_sink(evm, member_index=1, quorum=2, committee_size=2)
    assert isinstance(sink, EvmAnchorSink) and sink.address == me
    with pytest.raises(OperatorError, match=r"^component.anchor_sink.key_file: its account "
                                            r"0x[0-9a-fA-F]{40} is not this member's address in "
                                            r"component.anchor_sink.members\[0\] "):
        make_sink(evm, member_index=0, quorum=2, committee_size=2)
    with pytest.raises(OperatorError, match=r"^component.anchor_sink.members: 2 addresses for a "
                                            r"committee of 3 members"):
        make_sink(evm, member_index=1, quorum=2, committee_size=3)


# -- publisher --------------------------------------------------------------------------------


class FlakySink(AnchorSink):
    """Records what it publishes; fails the first `failures` attempts."""

    def __init__(self, failures: int = 0, resume: int = -1) -> None:
        self.failures = failures
        self.attempts: list[tuple[float, int]] = []
        self.published: list[ChronicleAnchor] = []
        self.resume = resume
        self.changed = trio.Event()

    def resume_after(self) -> int:
        return self.resume

    async def publish(self, anchor: ChronicleAnchor, committee_id: bytes) -> None:
        assert committee_id == COMMITTEE
        self.attempts.append((trio.current_time(), anchor.upto_seq))
        if self.failures:
            self.failures -= 1
            raise AnchorPublishError("sink down")
        self.published.append(anchor)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, upto: int) -> None:
        while not self.published or self.published[-1].upto_seq < upto:
            await self.changed.wait()


def chronicle_with(entries: int, anchor_every: int = 2) -> Executor:
    ex = Executor(COMMITTEE, Acl.allow([OPERATOR.public]),
                  Chronicle.from_params({"anchor_every": anchor_every,
                                         "anchor_sink": {"kind": "file", "chain_id": None,
                                                         "contract": None},
                                         "follow_almanac": None}))
    if entries:
        env = Envelope.sign(OPERATOR, COMMITTEE, 1, [append_command("note", b"\x01" * 32, i)
                                                     for i in range(entries)])
        ex.apply_block(1, b"\xbb" * 32, [env.raw])
    return ex


def test_anchors_in_a_block_result() -> None:
    ex = chronicle_with(0)
    env = Envelope.sign(OPERATOR, COMMITTEE, 1, [append_command("note", b"\x01" * 32, i)
                                                 for i in range(5)])
    result = ex.apply_block(1, b"\xbb" * 32, [env.raw])
    assert [a.upto_seq for a in anchors_in(result)] == [1, 3]
    assert anchors_in(result) == ex.component.anchors()  # type: ignore[attr-defined]


async def test_publisher_publishes_in_order_and_retries_with_bounded_backoff(
        autojump_clock: trio.testing.MockClock) -> None:
    ex = chronicle_with(0)
    sink = FlakySink(failures=5)
    pub = AnchorPublisher(sink, COMMITTEE, query_reader(ex.query), initial_backoff=1.0,
                          max_backoff=4.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        start = trio.current_time()
        pub.offer([anchor(1), anchor(3)])
        pub.offer([anchor(1), anchor(5)])  # a duplicate is ignored
        await sink.wait_for(5)
        nursery.cancel_scope.cancel()
    assert [a.upto_seq for a in sink.published] == [1, 3, 5]
    delays = [round(t - start, 6) for t, _ in sink.attempts]
    # 1, 2, 4, 4, 4 seconds between the failed attempts: doubling, capped at max_backoff.
    assert delays == [0, 1, 3, 7, 11, 15, 15, 15]
    assert pub.failures == 5 and pub.published_upto == 5 and pub.dropped == 0


async def test_publisher_overflow_is_counted_and_caught_up_from_the_component(
        autojump_clock: trio.testing.MockClock) -> None:
    ex = chronicle_with(12)  # anchors ending at 1, 3, 5, 7, 9, 11
    committed = ex.component.anchors()  # type: ignore[attr-defined]
    sink = FlakySink()
    pub = AnchorPublisher(sink, COMMITTEE, query_reader(ex.query), capacity=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        # The start-up catch-up publishes what the state holds.
        await sink.wait_for(11)
        assert sink.published == committed
        env = Envelope.sign(OPERATOR, COMMITTEE, 2, [append_command("note", b"\x01" * 32, i)
                                                     for i in range(10)])
        fresh = anchors_in(ex.apply_block(2, b"\xcc" * 32, [env.raw]))
        assert [a.upto_seq for a in fresh] == [13, 15, 17, 19, 21]
        pub.offer(fresh)  # two fit, three overflow
        assert pub.queued == 2 and pub.dropped == 3 and pub.behind
        await sink.wait_for(21)
        nursery.cancel_scope.cancel()
    assert sink.published == committed + fresh
    assert not pub.behind and pub.dropped == 3


async def test_publisher_resumes_after_what_the_sink_holds(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    ex = chronicle_with(8)  # anchors ending at 1, 3, 5, 7
    path = tmp_path / "anchors.jsonl"
    first = ex.component.anchors()  # type: ignore[attr-defined]
    path.write_bytes(anchor_line(first[0], COMMITTEE) + anchor_line(first[1], COMMITTEE))
    sink = FileAnchorSink(path)
    pub = AnchorPublisher(sink, COMMITTEE, query_reader(ex.query))
    assert pub.published_upto == 3
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        while pub.behind:
            await trio.sleep(1)  # virtual time (autojump clock)
        nursery.cancel_scope.cancel()
    assert [x["upto_seq"] for x in lines(path)] == [1, 3, 5, 7]
    assert [parse_anchor_json(x)[1] for x in lines(path)] == first


def test_publisher_bad_settings() -> None:
    ex = chronicle_with(0)
    for kwargs in ({"capacity": 0}, {"initial_backoff": 0.0}, {"initial_backoff": 5.0,
                                                               "max_backoff": 1.0}):
        with pytest.raises(Exception, match="anchor"):
            AnchorPublisher(FlakySink(), COMMITTEE, query_reader(ex.query), **kwargs)


async def test_file_sink_a_wholly_torn_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "anchors.jsonl"
    path.write_bytes(b'{"committee":"ab')
    sink = FileAnchorSink(path)
    assert sink.resume_after() == -1 and path.read_bytes() == b""
    await sink.publish(anchor(1), COMMITTEE)
    assert path.read_bytes() == anchor_line(anchor(1), COMMITTEE)


def test_file_sink_never_cuts_a_file_that_is_not_anchors(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"dear diary\nno newline at the end")
    with pytest.raises(OperatorError, match="not an anchor file"):
        FileAnchorSink(path)
    assert path.read_bytes() == b"dear diary\nno newline at the end"


async def test_publisher_lag_metric_and_alert_threshold(
        autojump_clock: trio.testing.MockClock) -> None:
    """The lag (entries committed anchors cover beyond what was published) is exported, and
    crossing `lag_alert_entries` raises the alert gauge until the sink catches up."""
    from coalitiond.components.chronicle.anchors import LAG_ALERT, LAG_ALERT_ENTRIES, LAG_ENTRIES

    ex = chronicle_with(0)
    sink = FlakySink(failures=3)
    pub = AnchorPublisher(sink, COMMITTEE, query_reader(ex.query), initial_backoff=1.0,
                          lag_alert_entries=3)
    assert LAG_ALERT_ENTRIES._value.get() == 3
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)
        pub.offer([anchor(1), anchor(3)])
        assert pub.lag_entries == 4 and LAG_ENTRIES._value.get() == 4
        assert LAG_ALERT._value.get() == 1   # 4 > 3
        await sink.wait_for(3)
        nursery.cancel_scope.cancel()
    assert pub.failures == 3
    assert pub.lag_entries == 0 and LAG_ENTRIES._value.get() == 0
    assert LAG_ALERT._value.get() == 0
