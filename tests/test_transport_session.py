"""The sans-IO link session, without sockets: bytes in, bytes out."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_transport_helpers import keys

from coalitiond.primitives.committee import network_id
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.errors import LocalError
from coalitiond.transport import framing as fr
from coalitiond.transport.framing import CloseReason
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.session import (
    Closed,
    HandshakeDone,
    Limits,
    MessageReceived,
    PingReceived,
    Session,
    State,
    identity_proof,
)

NET = network_id("session-test")
A, B = keys(2, salt=9)


def sess(key: SigningKey, initiator: bool, **kw: object) -> Session:
    rec = PeerRecord(key.public, NET, 1, 1, 1_700_000_000).sign(key)
    return Session(initiator=initiator, identity=key, network_id=NET, signed_record=rec,
                   **kw)  # type: ignore[arg-type]


def pair(**kw: object) -> tuple[Session, Session]:
    a, b = sess(A, True, **kw), sess(B, False, **kw)
    a.initiate()
    assert b.receive_data(a.data_to_send()) == []
    (done_a,) = a.receive_data(b.data_to_send())
    (done_b,) = b.receive_data(a.data_to_send())
    assert isinstance(done_a, HandshakeDone) and done_a.peer.peer_id == B.public
    assert isinstance(done_b, HandshakeDone) and done_b.peer.peer_id == A.public
    return a, b


def test_in_memory_handshake_and_messages_both_ways() -> None:
    a, b = pair()
    assert a.handshake_hash == b.handshake_hash and a.state is State.OPEN
    a.send_message(b"")
    a.send_message(b"q" * 200_000)
    assert b.receive_data(a.data_to_send()) == [MessageReceived(b""), MessageReceived(b"q" * 200_000)]
    b.send_message(b"r")
    b.send_ping()
    assert a.receive_data(b.data_to_send()) == [MessageReceived(b"r"), PingReceived()]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=70_000), min_size=1, max_size=4), st.integers(0, 2**32))
def test_any_split_of_the_stream_reassembles(messages: list[bytes], seed: int) -> None:
    a, b = pair()
    for m in messages:
        a.send_message(m)
    wire = a.data_to_send()
    rng = random.Random(seed)
    got = []
    pos = 0
    while pos < len(wire):
        step = rng.randint(1, 70_000)
        got += b.receive_data(wire[pos : pos + step])
        pos += step
    assert got == [MessageReceived(m) for m in messages]


def test_close_is_authenticated_after_the_handshake() -> None:
    a, b = pair()
    a.close(CloseReason.SHUTDOWN, "bye")
    (ev,) = b.receive_data(a.data_to_send())
    assert ev == Closed(int(CloseReason.SHUTDOWN), "bye", True, True, "shutdown")
    with pytest.raises(LocalError, match="send on a closed link"):
        a.send_message(b"x")


def test_transport_frame_before_handshake_is_a_protocol_error() -> None:
    b = sess(B, False)
    (ev,) = b.receive_data(fr.encode_frame(fr.FRAME_TRANSPORT, b"\x00" * 20))
    assert isinstance(ev, Closed)
    assert (ev.reason, ev.detail) == (CloseReason.PROTOCOL,
                                      "transport frame before the handshake ended")
    code, _ = fr.decode_close_body(b.data_to_send()[3:])
    assert code == CloseReason.PROTOCOL


def test_unknown_frame_type_is_malformed() -> None:
    b = sess(B, False)
    (ev,) = b.receive_data(b"\x07\x00\x00")
    assert isinstance(ev, Closed) and (ev.reason, ev.detail) == (CloseReason.MALFORMED,
                                                                 "unknown frame type 0x07")


def test_handshake_frame_after_handshake_and_unknown_record_kind() -> None:
    a, b = pair()
    (ev,) = b.receive_data(fr.encode_frame(fr.FRAME_HANDSHAKE, b"x"))
    assert isinstance(ev, Closed) and ev.detail == "handshake frame after the handshake ended"
    a, b = pair()
    a._encrypt_record(b"\x55")
    (ev,) = b.receive_data(a.data_to_send())
    assert isinstance(ev, Closed) and (ev.reason, ev.detail) == (CloseReason.MALFORMED,
                                                                 "unknown record kind 0x55")


def test_malformed_hello_and_garbage_proof() -> None:
    b = sess(B, False)
    a = sess(A, True)
    a._write_handshake(b"\xff")  # a hello that is not CBOR
    (ev,) = b.receive_data(a.data_to_send())
    assert isinstance(ev, Closed) and ev.reason is CloseReason.MALFORMED
    assert ev.detail.startswith("hello: ")


def test_local_message_limit_is_a_local_error() -> None:
    a, _ = pair(limits=Limits(max_message=10))
    with pytest.raises(LocalError, match="message of 11 bytes exceeds 10"):
        a.send_message(b"x" * 11)


def test_a_refused_third_handshake_message_gets_an_encrypted_close() -> None:
    """wire.md §3: the responder refuses the initiator's proof (here: a signature over
    another static key) with an encrypted CLOSE, which the initiator — already split —
    reads as authenticated. Before, this went out as a cleartext CLOSE_NOTICE."""

    class Forger(Session):
        def _proof(self) -> bytes:
            return identity_proof(self.identity, self.network_id, b"\x00" * 32,
                                  self._signed_record)

    a = Forger(initiator=True, identity=A, network_id=NET,
               signed_record=PeerRecord(A.public, NET, 1, 1, 1_700_000_000).sign(A))
    b = sess(B, False)
    a.initiate()
    b.receive_data(a.data_to_send())
    (done,) = a.receive_data(b.data_to_send())
    assert isinstance(done, HandshakeDone) and a.state is State.OPEN
    (refused,) = b.receive_data(a.data_to_send())
    assert isinstance(refused, Closed) and refused.reason is CloseReason.BAD_SIGNATURE
    out = b.data_to_send()
    assert out[0] == fr.FRAME_TRANSPORT  # encrypted, not a 0x03 notice
    (ev,) = a.receive_data(out)
    assert isinstance(ev, Closed) and ev.authenticated and ev.by_peer
    assert ev.reason is CloseReason.BAD_SIGNATURE
    assert ev.detail.startswith("identity ") and "did not sign this Noise static key" in ev.detail


def test_an_unknown_close_code_is_labelled_other_and_keeps_its_number() -> None:
    """Peers cannot mint metric series: any code this version does not know is "other"."""
    a, b = pair()
    a._encrypt_record(bytes((fr.REC_CLOSE,)) + (4242).to_bytes(2, "big") + b"newer")
    (ev,) = b.receive_data(a.data_to_send())
    assert isinstance(ev, Closed)
    assert (ev.code, ev.label, ev.detail) == (4242, "other", "code 4242: newer")
    c = sess(B, False)
    (notice,) = c.receive_data(fr.encode_frame(fr.FRAME_CLOSE_NOTICE, b"\xff\xff"))
    assert isinstance(notice, Closed) and notice.label == "other"


def test_rekey_follows_the_message_with_nonce_65535() -> None:
    """wire.md §4: the sender rekeys right after the message sent with nonce 65535 (the
    counter then reads 65536), not after nonce 0; the receiver does the same."""
    a, b = pair(limits=Limits(rekey_interval=1 << 16))
    assert a._send is not None and b._recv is not None
    for _ in range(65535):  # nonces 0 … 65534
        a.send_ping()
    b.receive_data(a.data_to_send())
    assert (a.rekeys, b.rekeys, a._send.n) == (0, 0, 65535)
    a.send_message(b"nonce 65535")
    assert (a.rekeys, a._send.n) == (1, 65536)
    assert b.receive_data(a.data_to_send()) == [MessageReceived(b"nonce 65535")]
    assert b.rekeys == 1
    a.send_message(b"after")  # decrypts only because both sides rekeyed at the same point
    assert b.receive_data(a.data_to_send()) == [MessageReceived(b"after")]
