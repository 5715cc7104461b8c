"""The shell's fast paths: store writes on the event loop when the store is idle, and
router sends that queue without yielding (so one step's messages share one write)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from coalitiond.consensus.types import VoteKind
from coalitiond.log import AsyncStore, Store
from coalitiond.primitives.errors import LocalError
from coalitiond.testing.chain import ChainBuilder
from coalitiond.transport.router import Channel, Router


class FakeLink:
    def __init__(self, accept: bool = True) -> None:
        self.frames: list[bytes] = []
        self.accept = accept

    def enqueue(self, frame: bytes) -> bool:
        if self.accept:
            self.frames.append(frame)
        return self.accept


async def open_store(tmp_path: Path) -> AsyncStore:
    chain = ChainBuilder(5)
    return await AsyncStore.open(tmp_path / "log.sqlite3", chain.committee,
                                 signing_key=chain.keys[0])


async def test_write_soon_runs_on_the_event_loop_when_the_store_is_idle(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    loop_thread = threading.get_ident()

    def write(s: Store) -> int:
        s.guard(0, 7, VoteKind.NOTARIZE, b"\x01" * 32)
        return threading.get_ident()

    assert await store.write_soon(write) == loop_thread
    assert await store.highest_signed_view(0) == 7
    await store.close()


async def test_write_soon_waits_for_a_store_call_in_progress(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_read(s: Store) -> None:
        started.set()
        release.wait(10)
        order.append("read")

    def write(s: Store) -> int:
        order.append("write")
        s.guard(0, 9, VoteKind.NOTARIZE, b"\x02" * 32)
        return threading.get_ident()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.run, slow_read)
        await trio.to_thread.run_sync(started.wait, 10)

        async def writer() -> None:
            assert await store.write_soon(write) != threading.get_ident()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # the write waits for the read: one store call at a time
        release.set()
    assert order == ["read", "write"]
    assert await store.highest_signed_view(0) == 9
    await store.close()


def test_send_nowait_and_broadcast_nowait_queue_at_once() -> None:
    members = {bytes([i]) * 32: FakeLink() for i in range(3)}
    reader = FakeLink()
    links = {**members, b"\xff" * 32: reader}
    router = Router(lambda: links, frozenset(members), max_payload=1024)
    assert router.broadcast_nowait(Channel.CONSENSUS, b"vote") == 3
    assert router.send_nowait(Channel.CLIENT, b"\xff" * 32, b"ack")
    assert not router.send_nowait(Channel.CLIENT, b"\xee" * 32, b"ack")  # not connected
    assert all(link.frames == [b"\x01vote"] for link in members.values())
    assert reader.frames == [b"\x04ack"]


def test_nowait_sends_apply_the_same_limits_as_the_async_ones() -> None:
    full = FakeLink(accept=False)
    router = Router(lambda: {b"\x01" * 32: full}, frozenset({b"\x01" * 32}), max_payload=4)
    assert router.broadcast_nowait(Channel.CONSENSUS, b"1234") == 0  # queue full: dropped
    with pytest.raises(LocalError, match="exceeds 4"):
        router.send_nowait(Channel.CONSENSUS, b"\x01" * 32, b"12345")
    with pytest.raises(LocalError, match="channel 0"):
        router.broadcast_nowait(Channel.DISCOVERY, b"x")


class _FakeTime:
    """Stands in for `time` in coalitiond.log.aio: every inline write 'takes' `step` s."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += self.step / 2
        return self.now


async def test_write_soon_leaves_the_event_loop_while_fsyncs_are_slow_and_comes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coalitiond.log.aio as aio

    store = await open_store(tmp_path)
    loop_thread = threading.get_ident()
    clock = _FakeTime(step=0.005)  # 5 ms per commit: a busy disk
    monkeypatch.setattr(aio, "time", clock)

    def write(s: Store) -> int:
        return threading.get_ident()

    threads = [await store.write_soon(write) for _ in range(6)]
    assert threads[0] == loop_thread
    assert threads[-1] != loop_thread  # the average passed INLINE_WRITE_MAX_S
    # The disk is fast again: after a while write_soon tries the loop, and stays there.
    clock.step = 0.0001
    threads = [await store.write_soon(write) for _ in range(200)]
    assert threads[-5:] == [loop_thread] * 5
    await store.close()
