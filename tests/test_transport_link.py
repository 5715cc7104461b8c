"""Links over real TCP on 127.0.0.1: the handshake, and every refusal with its exact reason.

A "raw" client drives a hand-made Session over a socket so that it can misbehave; the
server is a real ConnectionManager. Every test runs under MockClock(autojump).
"""

from __future__ import annotations

import itertools
import struct

import pytest
import trio
import trio.testing
from test_transport_helpers import (
    committee,
    keys,
    metric,
    raw_client,
    read_until_closed,
    start_nodes,
    wait_close,
    wall_clock,
)

from coalitiond.primitives.committee import network_id
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.transport import framing as fr
from coalitiond.transport.framing import CloseReason
from coalitiond.transport.link import LinkTiming
from coalitiond.transport.manager import ConnectionManager, TransportConfig
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.router import Channel
from coalitiond.transport.session import (
    PROTOCOL_VERSION,
    Closed,
    Limits,
    Session,
    State,
    identity_proof,
)

pytestmark = pytest.mark.live

A, B, C = keys(3)
SPEC = committee([A, B])
NET = SPEC.network_id


def client_session(key: SigningKey = B, *, net: bytes = NET, version: int = PROTOCOL_VERSION,
                   limits: Limits | None = None) -> Session:
    rec = PeerRecord(key.public, net, 1, 1, int(wall_clock())).sign(key)
    return Session(initiator=True, identity=key, network_id=net, signed_record=rec,
                   version=version, limits=limits or Limits())


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    got = b""
    while chunk := await stream.receive_some(65539):
        got += chunk
    return got


async def serve(nursery: trio.Nursery, **kw: object) -> ConnectionManager:
    (node,) = await start_nodes(nursery, [A], SPEC, **kw)  # type: ignore[arg-type]
    assert node.listen_port is not None
    return node


async def test_handshake_between_two_members_and_a_message(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        a, b = await start_nodes(n, [A, B], SPEC)
        await a.wait_until(lambda: B.public in a.links)
        await b.wait_until(lambda: A.public in b.links)
        # Both ends kept the same link (tie-break) and agree on the handshake hash.
        assert a.links[B.public].session.handshake_hash == b.links[A.public].session.handshake_hash
        assert a.links[B.public].peer.record.peer_id == B.public
        assert await a.router.send(Channel.CONSENSUS, B.public, b"vote")
        sender, payload = await b.router.receive(Channel.CONSENSUS).receive()
        assert (sender, payload) == (A.public, b"vote")
        assert await b.router.broadcast(Channel.SYNC, b"x" * 200_000) == 1
        assert await a.router.receive(Channel.SYNC).receive() == (B.public, b"x" * 200_000)
        # The peer records travelled in the handshake.
        assert a.catalog is not None and B.public in a.catalog
        n.cancel_scope.cancel()


async def test_wrong_network_is_refused_with_its_reason(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        before = metric("transport_refused_total", reason="wrong_network")
        s = client_session(net=network_id("another-net"))
        _, peer, events = await raw_client(node.listen_port or 0, s)
        assert peer is None
        (closed,) = events
        assert closed.reason is CloseReason.WRONG_NETWORK and closed.by_peer
        assert not closed.authenticated  # a cleartext notice, before any key exists
        assert closed.detail.startswith("network ")
        await wait_close(node, "wrong_network")
        assert metric("transport_refused_total", reason="wrong_network") == before + 1
        n.cancel_scope.cancel()


async def test_wrong_protocol_version_is_refused(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        _, peer, (closed,) = await raw_client(node.listen_port or 0, client_session(version=2))
        assert peer is None and closed.reason is CloseReason.WRONG_VERSION
        assert closed.detail == "protocol version 2, this node speaks 1"
        n.cancel_scope.cancel()


async def test_unknown_peer_without_reader_slots(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n, config=TransportConfig(max_readers=0))
        before = metric("transport_refused_total", reason="unknown_peer")
        s = client_session(C)
        stream, peer, events = await raw_client(node.listen_port or 0, s)
        assert peer is not None  # the initiator finishes first; the responder refuses after
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.UNKNOWN_PEER and closed.authenticated
        assert closed.detail == "not a committee member and all 0 anonymous reader slots are taken"
        await wait_close(node, "unknown_peer")
        assert metric("transport_refused_total", reason="unknown_peer") == before + 1
        n.cancel_scope.cancel()


async def test_admission_hook_refuses_with_its_own_label(autojump_clock: object) -> None:
    seen: list[tuple[bytes, int]] = []

    def admission(peer_id: bytes, record: PeerRecord, now: int) -> str | None:
        seen.append((peer_id, now))
        return None if record.tickets.get("tdx") == b"ok" else "tdx_missing"

    async with trio.open_nursery() as n:
        node = await serve(n, admission=admission)
        before = metric("transport_refused_total", reason="tdx_missing")
        s = client_session()
        stream, _, events = await raw_client(node.listen_port or 0, s)
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.UNAUTHORISED
        assert closed.detail == "admission refused: tdx_missing"
        assert closed.label == "unauthorised"  # the wire carries the typed code
        await wait_close(node, "tdx_missing")
        assert metric("transport_refused_total", reason="tdx_missing") == before + 1
        assert seen == [(B.public, int(wall_clock()))]
        n.cancel_scope.cancel()


async def test_recheck_admission_drops_links_that_now_fail(autojump_clock: object) -> None:
    valid = {"ok": True}

    def admission(peer_id: bytes, record: PeerRecord, now: int) -> str | None:
        return None if valid["ok"] else "tdx_expired"

    async with trio.open_nursery() as n:
        a, b = await start_nodes(n, [A, B], SPEC, admission=admission)
        await a.wait_until(lambda: B.public in a.links)
        await b.wait_until(lambda: A.public in b.links)
        valid["ok"] = False
        assert a.recheck_admission() == [B.public]
        await b.wait_until(lambda: any(c.label == "unauthorised" for _, c in b.closes))
        (_, closed) = next(x for x in b.closes if x[1].label == "unauthorised")
        assert closed.by_peer and closed.detail == "admission refused: tdx_expired"
        n.cancel_scope.cancel()


class ClaimsAnotherIdentity(Session):
    """Signs its Noise static key with its own key but claims member B's PeerId."""

    def _proof(self) -> bytes:
        sig = self.identity.sign(b"coalitiond/noise-static/v1",
                                 encode(["noise-static", self.network_id, self._static.public]))
        return encode([B.public, sig, self._signed_record])


async def test_peer_claiming_another_members_identity_fails(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        before = metric("transport_refused_total", reason="bad_signature")
        rec = PeerRecord(B.public, NET, 1, 1, int(wall_clock())).sign(B)  # a real, replayed record
        s = ClaimsAnotherIdentity(initiator=True, identity=C, network_id=NET, signed_record=rec)
        stream, _, events = await raw_client(node.listen_port or 0, s)
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.BAD_SIGNATURE
        assert closed.detail == f"identity {B.public.hex()[:16]}… did not sign this Noise static key"
        await wait_close(node, "bad_signature")
        assert metric("transport_refused_total", reason="bad_signature") == before + 1
        assert B.public not in node.links
        n.cancel_scope.cancel()


async def test_replayed_identity_proof_of_a_member_fails(autojump_clock: object) -> None:
    """The attacker replays B's genuine proof (B's signature over B's static key) with its
    own Noise static key: the signature does not cover the attacker's key."""
    real = client_session(B)
    genuine = identity_proof(B, NET, real._static.public, real._signed_record)

    class Replayer(Session):
        def _proof(self) -> bytes:
            return genuine

    async with trio.open_nursery() as n:
        node = await serve(n)
        s = Replayer(initiator=True, identity=C, network_id=NET, signed_record=real._signed_record)
        stream, _, events = await raw_client(node.listen_port or 0, s)
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.BAD_SIGNATURE
        n.cancel_scope.cancel()


async def test_replayed_handshake_fails(autojump_clock: object) -> None:
    """Record a client's handshake bytes, replay them on a new connection: the responder
    picks a fresh ephemeral key, so the replayed third message cannot decrypt."""
    async with trio.open_nursery() as n:
        node = await serve(n)
        port = node.listen_port or 0
        s = client_session()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        s.initiate()
        msg1 = s.data_to_send()
        await stream.send_all(msg1)
        while s.state is not State.OPEN:  # until msg2 is processed
            s.receive_data(bytes(await stream.receive_some(65539)))
        msg3 = s.data_to_send()
        await stream.send_all(msg3)
        await node.wait_until(lambda: B.public in node.links)
        before = metric("transport_refused_total", reason="decrypt_failed")
        replay = await trio.open_tcp_stream("127.0.0.1", port)
        await replay.send_all(msg1)
        await replay.send_all(msg3)
        got = await read_to_eof(replay)
        # Server's msg2 (handshake frame), then a cleartext close notice.
        notice_at = 3 + struct.unpack(">H", got[1:3])[0]
        assert got[notice_at] == fr.FRAME_CLOSE_NOTICE
        code, detail = fr.decode_close_body(got[notice_at + 3:])
        assert (CloseReason(code), detail) == (CloseReason.DECRYPT_FAILED,
                                               "ChaChaPoly authentication failed")
        await wait_close(node, "decrypt_failed")
        assert metric("transport_refused_total", reason="decrypt_failed") == before + 1
        n.cancel_scope.cancel()


async def test_tampered_ciphertext_closes_the_link(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        s = client_session()
        stream, peer, _ = await raw_client(node.listen_port or 0, s)
        assert peer is not None
        await node.wait_until(lambda: B.public in node.links)
        s.send_message(bytes([Channel.CONSENSUS]) + b"hello")
        frame = bytearray(s.data_to_send())
        frame[-1] ^= 0x80
        await stream.send_all(bytes(frame))
        await node.wait_until(lambda: B.public not in node.links)
        _, closed = node.closes[-1]
        assert closed.reason is CloseReason.DECRYPT_FAILED and not closed.by_peer
        n.cancel_scope.cancel()


async def refused_after(node: ConnectionManager, messages: list[bytes],
                        limits: Limits | None = None) -> Closed:
    """Connect as member B, send `messages` (channel byte included), return the close we
    got; also check the server logged and counted the same refusal."""
    s = client_session(limits=limits)
    stream, _, events = await raw_client(node.listen_port or 0, s)
    for m in messages:
        s.send_message(m)
    await stream.send_all(s.data_to_send())
    _, closed = await read_until_closed(stream, s, events)
    assert (await wait_close(node, closed.label)).detail == closed.detail
    return closed


async def test_oversize_message_is_refused(autojump_clock: object) -> None:
    limit = 200_000
    cfg = TransportConfig(limits=Limits(max_message=limit))
    async with trio.open_nursery() as n:
        node = await serve(n, config=cfg)
        before = metric("transport_refused_total", reason="oversize")
        closed = await refused_after(node, [bytes([Channel.SYNC]) + b"\x00" * (limit + 1)],
                                     Limits(max_message=10 * limit))
        assert closed.reason is CloseReason.OVERSIZE
        assert closed.detail.startswith(f"message exceeds {limit} bytes")
        assert metric("transport_refused_total", reason="oversize") == before + 1
        n.cancel_scope.cancel()


async def test_malformed_cbor_on_discovery_is_refused(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        before = metric("transport_refused_total", reason="malformed")
        closed = await refused_after(node, [b"\x00" + b"\xa2\x01\x01\x01"])  # map lacks a value
        assert closed.reason is CloseReason.MALFORMED
        assert closed.detail.startswith("discovery message: ")
        assert metric("transport_refused_total", reason="malformed") == before + 1
        n.cancel_scope.cancel()


async def test_unknown_channel_is_refused(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        closed = await refused_after(node, [b"\x09payload"])
        assert (closed.reason, closed.detail) == (CloseReason.MALFORMED, "unknown channel 9")
        n.cancel_scope.cancel()


async def test_handshake_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        before = metric("transport_refused_total", reason="handshake_timeout")
        stream = await trio.open_tcp_stream("127.0.0.1", node.listen_port or 0)
        started = trio.current_time()
        got = await read_to_eof(stream)
        assert trio.current_time() - started == pytest.approx(10.0, abs=0.5)
        assert got[0] == fr.FRAME_CLOSE_NOTICE
        code, detail = fr.decode_close_body(got[3:])
        assert (CloseReason(code), detail) == (CloseReason.HANDSHAKE_TIMEOUT,
                                               "no handshake within 10.0s")
        await wait_close(node, "handshake_timeout")
        assert metric("transport_refused_total", reason="handshake_timeout") == before + 1
        n.cancel_scope.cancel()


async def test_read_timeout_closes_a_silent_peer(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        s = client_session()
        stream, _, events = await raw_client(node.listen_port or 0, s)
        # We never send a keepalive; the server's pings arrive but its reads time out.
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.READ_TIMEOUT
        assert closed.detail == "nothing received for 30.0s"
        n.cancel_scope.cancel()


async def test_rate_limit(autojump_clock: object) -> None:
    cfg = TransportConfig(timing=LinkTiming(rate_messages=10, rate_messages_burst=20))
    async with trio.open_nursery() as n:
        node = await serve(n, config=cfg)
        before = metric("transport_refused_total", reason="rate_limited")
        closed = await refused_after(node, [bytes([Channel.CLIENT]) + b"spam"] * 50)
        assert (closed.reason, closed.detail) == (CloseReason.RATE_LIMITED,
                                                  "more than 10 messages/s")
        assert metric("transport_refused_total", reason="rate_limited") == before + 1
        n.cancel_scope.cancel()


async def test_reader_may_not_use_member_channels(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        s = client_session(C)
        stream, _, events = await raw_client(node.listen_port or 0, s)
        await node.wait_until(lambda: C.public in node.links)
        assert node.reader_links() == [C.public]
        s.send_message(bytes([Channel.CLIENT]) + b"query")
        await stream.send_all(s.data_to_send())
        assert await node.router.receive(Channel.CLIENT).receive() == (C.public, b"query")
        s.send_message(bytes([Channel.CONSENSUS]) + b"vote")
        await stream.send_all(s.data_to_send())
        _, closed = await read_until_closed(stream, s, events)
        assert (closed.reason, closed.detail) == (CloseReason.UNAUTHORISED,
                                                  "channel consensus is for members only")
        n.cancel_scope.cancel()


async def test_rekey_after_a_bounded_number_of_messages(autojump_clock: object) -> None:
    cfg = TransportConfig(limits=Limits(rekey_interval=8))
    async with trio.open_nursery() as n:
        a, b = await start_nodes(n, [A, B], SPEC, config=cfg)
        await a.wait_until(lambda: B.public in a.links)
        await b.wait_until(lambda: A.public in b.links)
        rx = b.router.receive(Channel.CONSENSUS)
        for i in range(100):
            assert await a.router.send(Channel.CONSENSUS, B.public, i.to_bytes(2, "big"))
            assert await rx.receive() == (A.public, i.to_bytes(2, "big"))
        assert a.links[B.public].session.rekeys >= 100 // 8
        assert b.links[A.public].session.rekeys >= 100 // 8
        n.cancel_scope.cancel()


async def test_future_dated_gossip_is_dropped_and_a_forged_record_closes(
        autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        s = client_session()
        stream, _, events = await raw_client(node.listen_port or 0, s)
        await node.wait_until(lambda: B.public in node.links)
        before = metric("transport_discovery_rejected_total", reason="future_clock")
        future = PeerRecord(C.public, NET, 1, 1, int(wall_clock()) + 100).sign(C)
        s.send_message(b"\x00" + encode(["announce", future]))
        fresh = PeerRecord(C.public, NET, 1, 2, int(wall_clock())).sign(C)
        s.send_message(b"\x00" + encode(["announce", fresh]))
        await stream.send_all(s.data_to_send())
        assert node.catalog is not None
        await node.wait_until(lambda: C.public in node.catalog)  # type: ignore[operator]
        assert metric("transport_discovery_rejected_total", reason="future_clock") == before + 1
        got = node.catalog.get(C.public)
        assert got is not None and got.counter == 2 and B.public in node.links
        # A record whose signature does not verify: the neighbour forwarded garbage.
        from coalitiond.primitives.encoding import decode

        body, _sig = decode(PeerRecord(C.public, NET, 1, 3, int(wall_clock())).sign(C))
        s.send_message(b"\x00" + encode(["announce", encode([body, bytes(64)])]))
        await stream.send_all(s.data_to_send())
        _, closed = await read_until_closed(stream, s, events)
        assert closed.reason is CloseReason.BAD_SIGNATURE
        assert closed.detail == "gossiped record: bad coalitiond/peer-record/v1 signature"
        n.cancel_scope.cancel()


async def test_future_dated_handshake_record_keeps_the_link(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        before = metric("transport_discovery_rejected_total", reason="future_clock")
        rec = PeerRecord(B.public, NET, 1, 1, int(wall_clock()) + 3600).sign(B)
        s = Session(initiator=True, identity=B, network_id=NET, signed_record=rec)
        _, peer, _ = await raw_client(node.listen_port or 0, s)
        assert peer is not None
        await node.wait_until(lambda: B.public in node.links)
        assert metric("transport_discovery_rejected_total", reason="future_clock") == before + 1
        assert node.catalog is not None and B.public not in node.catalog
        n.cancel_scope.cancel()


async def test_both_dial_one_link_survives_by_the_tie_break(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        a, b = await start_nodes(n, [A, B], SPEC)
        await a.wait_until(lambda: B.public in a.links)
        await b.wait_until(lambda: A.public in b.links)
        la, lb = a.links[B.public], b.links[A.public]
        # The surviving link was initiated by the smaller PeerId, seen the same from both ends.
        smaller_is_a = A.public < B.public
        assert la.initiator is smaller_is_a and lb.initiator is not smaller_is_a
        # Idle far beyond the read timeout: keepalives hold the same link up.
        await trio.sleep(300)
        assert a.links[B.public] is la and b.links[A.public] is lb
        n.cancel_scope.cancel()


async def test_send_to_unknown_peer_and_broadcast_skips_readers(autojump_clock: object) -> None:
    async with trio.open_nursery() as n:
        node = await serve(n)
        s = client_session(C)  # a reader
        _conn = await raw_client(node.listen_port or 0, s)  # keep the socket open
        await node.wait_until(lambda: C.public in node.links)
        assert await node.router.send(Channel.CONSENSUS, B.public, b"x") is False
        assert await node.router.broadcast(Channel.CONSENSUS, b"x") == 0
        assert await node.router.send(Channel.CLIENT, C.public, b"answer") is True
        with pytest.raises(Exception, match="channel 0 is reserved"):
            await node.router.send(Channel.DISCOVERY, C.public, b"x")
        n.cancel_scope.cancel()


async def test_a_refused_member_is_redialed_with_growing_backoff(autojump_clock: object) -> None:
    refusals: list[float] = []

    def admission(peer_id: bytes, record: PeerRecord, now: int) -> str | None:
        refusals.append(trio.current_time())
        return "tdx_missing"

    async with trio.open_nursery() as n:
        (a,) = await start_nodes(n, [A], SPEC, admission=admission)
        (b,) = await start_nodes(n, [B], SPEC)
        b.set_member_address(A.public, ("127.0.0.1", a.listen_port or 0))
        a.set_member_address(B.public, ("127.0.0.1", b.listen_port or 0))
        await trio.sleep(120)
        # Both directions are refused every time; with exponential backoff (cap 30 s) that
        # is a handful of attempts in two minutes, not hundreds.
        assert 4 <= len(refusals) <= 30, len(refusals)
        gaps = [y - x for x, y in itertools.pairwise(refusals)]
        assert max(gaps) >= 10
        assert not a.links and not b.links
        n.cancel_scope.cancel()


async def test_dialed_member_answered_by_another_is_refused(autojump_clock: object) -> None:
    spec = committee([A, B, C])
    async with trio.open_nursery() as n:
        a, c = await start_nodes(n, [A, C], spec)
        a.set_member_address(B.public, ("127.0.0.1", c.listen_port or 0))  # wrong address
        closed = await wait_close(a, "unknown_peer")
        assert closed.detail == f"dialed {B.public[:4].hex()}, answered by {C.public[:4].hex()}"
        assert B.public not in a.links
        n.cancel_scope.cancel()
