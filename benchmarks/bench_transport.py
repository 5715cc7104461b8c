"""Transport benchmark: one link on loopback, Noise vs plain TCP with the same framing.

* throughput (messages/s, MB/s) for several message sizes, one direction, one link:
  `noise` = coalitiond's Session (XX, ChaChaPoly, chunking, rekey) over trio TCP;
  `plain` = the same frames and chunk records, unencrypted, over trio TCP;
  ratio = noise / plain.
* round-trip latency percentiles of 64-byte ping-pong over each.
* handshakes per second: full XX handshakes (with identity proofs and record checks) over
  fresh TCP connections, and in memory (crypto only).
* peak memory (tracemalloc) of a 16 MiB transfer, and the process's max RSS.

Run: `python -m benchmarks transport` (or `make bench`); `--quick` for a short run.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from coalitiond.primitives.committee import network_id
from coalitiond.primitives.crypto import SigningKey
from coalitiond.transport import framing as fr
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.session import Closed, HandshakeDone, MessageReceived, Session

NET = network_id("bench")
KEY_A = SigningKey(b"\x0a" * 32)
KEY_B = SigningKey(b"\x0b" * 32)
READ = 65539


def _session(key: SigningKey, initiator: bool) -> Session:
    rec = PeerRecord(key.public, NET, 1, 1, int(time.time())).sign(key)
    return Session(initiator=initiator, identity=key, network_id=NET, signed_record=rec)


# -- the two codecs under comparison --------------------------------------------------------


class NoiseCodec:
    def __init__(self, session: Session) -> None:
        self.s = session

    def encode(self, payload: bytes) -> bytes:
        self.s.send_message(payload)
        return self.s.data_to_send()

    def decode(self, data: bytes) -> list[bytes]:
        out = []
        for ev in self.s.receive_data(data):
            if isinstance(ev, MessageReceived):
                out.append(ev.payload)
            elif isinstance(ev, Closed):
                raise RuntimeError(f"link closed: {ev}")
        return out


class PlainCodec:
    """Same outer frames and chunk records, no encryption: the cost floor of the framing."""

    def __init__(self) -> None:
        self.buf = fr.FrameBuffer()
        self.re = fr.Reassembler.new(64 * 1024 * 1024)

    def encode(self, payload: bytes) -> bytes:
        return b"".join(fr.encode_frame(fr.FRAME_TRANSPORT, r) for r in fr.chunk_message(payload))

    def decode(self, data: bytes) -> list[bytes]:
        self.buf.feed(data)
        out = []
        while (frame := self.buf.next_frame()) is not None:
            body = frame[1]
            msg = self.re.add(body[1:], body[0] == fr.REC_MSG_END)
            if msg is not None:
                out.append(msg)
        return out


async def _handshake_pair() -> tuple[trio.SocketStream, trio.SocketStream, Session, Session]:
    client, server = _session(KEY_A, True), _session(KEY_B, False)
    sa, sb = await _socket_pair()

    async def pump(stream: trio.SocketStream, s: Session) -> None:
        if s.initiator:
            s.initiate()
            await stream.send_all(s.data_to_send())
        while s.peer is None:
            evs = s.receive_data(bytes(await stream.receive_some(READ)))
            out = s.data_to_send()
            if out:
                await stream.send_all(out)
            if any(isinstance(e, Closed) for e in evs):
                raise RuntimeError(evs)
            if any(isinstance(e, HandshakeDone) for e in evs):
                break

    async with trio.open_nursery() as n:
        n.start_soon(pump, sa, client)
        n.start_soon(pump, sb, server)
    return sa, sb, client, server


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as n:
        accepted: list[trio.SocketStream] = []

        async def acc() -> None:
            accepted.append(await listeners[0].accept())

        n.start_soon(acc)
        client = await trio.open_tcp_stream("127.0.0.1", port)
    await listeners[0].aclose()
    return client, accepted[0]


async def _pair(kind: str) -> tuple[trio.SocketStream, trio.SocketStream, object, object]:
    if kind == "noise":
        sa, sb, ca, cb = await _handshake_pair()
        return sa, sb, NoiseCodec(ca), NoiseCodec(cb)
    sa, sb = await _socket_pair()
    return sa, sb, PlainCodec(), PlainCodec()


async def throughput(kind: str, size: int, count: int) -> tuple[float, float]:
    sa, sb, tx, rx = await _pair(kind)
    payload = b"\x5a" * size
    batch = max(1, 65536 // max(size, 1))
    got = 0
    started = time.perf_counter()

    async def send() -> None:
        sent = 0
        while sent < count:
            k = min(batch, count - sent)
            await sa.send_all(b"".join(tx.encode(payload) for _ in range(k)))  # type: ignore[attr-defined]
            sent += k

    async def recv() -> None:
        nonlocal got
        while got < count:
            got += len(rx.decode(bytes(await sb.receive_some(READ))))  # type: ignore[attr-defined]

    async with trio.open_nursery() as n:
        n.start_soon(send)
        n.start_soon(recv)
    elapsed = time.perf_counter() - started
    await sa.aclose()
    await sb.aclose()
    return count / elapsed, count * size / elapsed / 1e6


async def latency(kind: str, rounds: int) -> list[float]:
    sa, sb, ca, cb = await _pair(kind)
    samples: list[float] = []

    async def echo() -> None:
        for _ in range(rounds):
            msgs: list[bytes] = []
            while not msgs:
                msgs = cb.decode(bytes(await sb.receive_some(READ)))  # type: ignore[attr-defined]
            await sb.send_all(cb.encode(msgs[0]))  # type: ignore[attr-defined]

    async with trio.open_nursery() as n:
        n.start_soon(echo)
        for _ in range(rounds):
            t0 = time.perf_counter()
            await sa.send_all(ca.encode(b"p" * 64))  # type: ignore[attr-defined]
            msgs: list[bytes] = []
            while not msgs:
                msgs = ca.decode(bytes(await sa.receive_some(READ)))  # type: ignore[attr-defined]
            samples.append(time.perf_counter() - t0)
    await sa.aclose()
    await sb.aclose()
    return samples


async def handshakes_tcp(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        sa, sb, _, _ = await _handshake_pair()
        await sa.aclose()
        await sb.aclose()
    return count / (time.perf_counter() - started)


def handshakes_memory(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        a, b = _session(KEY_A, True), _session(KEY_B, False)
        a.initiate()
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
        b.receive_data(a.data_to_send())
        assert a.peer is not None and b.peer is not None
    return count / (time.perf_counter() - started)


async def router_throughput(size: int, count: int) -> tuple[float, float, int]:
    """End to end through two ConnectionManagers: router.send -> send queue -> writer ->
    socket -> reader -> channel queue. A window keeps the sender within the send queue."""
    from coalitiond.primitives.committee import CommitteeSpec
    from coalitiond.transport.limits import KindLimit, RateLimits
    from coalitiond.transport.link import LinkTiming
    from coalitiond.transport.manager import ConnectionManager, TransportConfig

    spec = CommitteeSpec("bench", "feed", "bench", (KEY_A.public, KEY_B.public), 0)
    # This measures throughput, not the per-peer rate limits: lift them out of reach (the
    # link-wide one and the channel's own).
    lifted = KindLimit(1e9, 1e9)
    unlimited = TransportConfig(timing=LinkTiming(
        rate_messages=1e9, rate_messages_burst=1e9,
        rates=RateLimits(consensus=lifted, sync=lifted, gossip=lifted, client=lifted)))
    a = ConnectionManager(KEY_A, spec, {}, config=unlimited)
    b = ConnectionManager(KEY_B, spec, {}, config=unlimited)
    window = trio.Semaphore(128)
    payload = b"\x5a" * size
    with trio.fail_after(120):  # a benchmark that stalls must say so, not hang
        return await _router_run(a, b, size, count, window, payload)


async def _router_run(a: Any, b: Any, size: int, count: int, window: trio.Semaphore,
                      payload: bytes) -> tuple[float, float, int]:
    from coalitiond.transport.router import Channel

    dropped = 0
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        a.set_member_address(KEY_B.public, ("127.0.0.1", b.listen_port or 0))
        b.set_member_address(KEY_A.public, ("127.0.0.1", a.listen_port or 0))
        await a.wait_until(lambda: KEY_B.public in a.links)
        await b.wait_until(lambda: KEY_A.public in b.links)
        rx = b.router.receive(Channel.CONSENSUS)
        peer_b = KEY_B.public  # SigningKey.public derives the key each time: hoist it
        started = time.perf_counter()

        async def recv() -> None:
            for _ in range(count):
                await rx.receive()
                window.release()

        n.start_soon(recv)
        for _ in range(count):
            await window.acquire()
            if not await a.router.send(Channel.CONSENSUS, peer_b, payload):
                dropped += 1
                window.release()
        while window.value < 128:
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - started
        n.cancel_scope.cancel()
    return count / elapsed, count * size / elapsed / 1e6, dropped


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))] * 1e6


def _run(fn: Callable[[], Awaitable[object]]) -> object:
    return trio.run(fn)


def main(argv: list[str]) -> None:
    quick = "--quick" in argv or "--quick" in sys.argv
    scale = 0.1 if quick else 1.0
    sizes = [(64, 200_000), (1024, 100_000), (65_536, 3_000), (1024 * 1024, 200)]
    print(f"{'size':>9} | {'noise msg/s':>12} {'noise MB/s':>10} | {'plain msg/s':>12} "
          f"{'plain MB/s':>10} | {'ratio':>6}")
    for size, count in sizes:
        n = max(10, int(count * scale))
        nm, nb = trio.run(throughput, "noise", size, n)
        pm, pb = trio.run(throughput, "plain", size, n)
        print(f"{size:>9} | {nm:>12,.0f} {nb:>10.1f} | {pm:>12,.0f} {pb:>10.1f} | {nm / pm:>6.2f}")
    print("\nend to end through ConnectionManager + Router (window 128 messages):")
    for size, count in ((64, 50_000), (1024, 50_000), (65_536, 2_000)):
        n = max(10, int(count * scale))
        m, mb, dropped = trio.run(router_throughput, size, n)
        print(f"  {size:>9} B: {m:>10,.0f} msg/s {mb:>8.1f} MB/s  (dropped {dropped})")
    rounds = max(100, int(5000 * scale))
    print(f"\nround trip, 64 B ({rounds} rounds): p50 / p90 / p99 / max in µs")
    for kind in ("noise", "plain"):
        s = trio.run(latency, kind, rounds)
        print(f"  {kind:>5}: {_pct(s, .5):8.1f} {_pct(s, .9):8.1f} {_pct(s, .99):8.1f} "
              f"{max(s) * 1e6:8.1f}   (mean {statistics.mean(s) * 1e6:.1f})")
    hs = max(20, int(300 * scale))
    print(f"\nhandshakes/s (XX + identity proofs + record check), {hs} each:")
    print(f"  over fresh TCP connections: {trio.run(handshakes_tcp, hs):8.1f}")
    print(f"  in memory (crypto only):    {handshakes_memory(hs):8.1f}")
    tracemalloc.start()
    trio.run(throughput, "noise", 1024 * 1024, 16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak traced memory, 16 × 1 MiB over one noise link: {peak / 2**20:.1f} MiB; "
          f"process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
