"""One link's protocol as a sans-IO state machine (docs/wire.md has the byte layout).

Feed it the bytes the socket produced (`receive_data`), write out what `data_to_send`
returns. It performs the Noise XX handshake, checks the hello (protocol version, network),
verifies the peer's identity proof and signed peer record, asks the owner's `authorize`
callback, then carries chunked application messages, keepalive pings, typed closes and the
periodic rekey. Every refusal becomes a `Closed` event *and* a close frame in the output, so
the shell only has to flush and hang up. No clocks, no sockets: timeouts live in the shell.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..primitives.crypto import PUBLIC_KEY_LEN, SigningKey, verify
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, LocalError, SignatureError
from . import framing as fr
from .framing import CloseReason, FrameError
from .noise import CipherState, HandshakeState, KeyPair, NoiseError
from .peer_record import PeerRecord, PeerRecordError, parse_record

PROTOCOL_VERSION: Final = 1
NOISE_PROTOCOL: Final = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
HELLO_TYPE: Final = "coalitiond-hello"
PROLOGUE_TYPE: Final = "coalitiond-link"
#: Domain tag of the ed25519 signature that binds an identity to a Noise static key.
STATIC_KEY_TAG: Final = b"coalitiond/noise-static/v1"
#: Default hard maximum of one reassembled application message.
MAX_MESSAGE: Final = 4 * 1024 * 1024
#: Rekey each direction's cipher after this many transport messages (§11.3 REKEY). Both
#: sides count the same ordered stream, so no signalling is needed.
REKEY_INTERVAL: Final = 1 << 16


def prologue(network_id: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    return encode([PROLOGUE_TYPE, version, network_id])


def hello(network_id: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    return encode([HELLO_TYPE, version, network_id])


def static_key_statement(network_id: bytes, noise_static: bytes) -> bytes:
    return encode(["noise-static", network_id, noise_static])


def identity_proof(key: SigningKey, network_id: bytes, noise_static: bytes,
                   signed_record: bytes) -> bytes:
    sig = key.sign(STATIC_KEY_TAG, static_key_statement(network_id, noise_static))
    return encode([key.public, sig, signed_record])


@dataclass(frozen=True, slots=True)
class Limits:
    max_message: int = MAX_MESSAGE
    rekey_interval: int = REKEY_INTERVAL


@dataclass(frozen=True, slots=True)
class RemotePeer:
    peer_id: bytes
    record: PeerRecord
    signed_record: bytes
    noise_static: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why `authorize` refused a peer. `label` overrides the metric label (admission hooks
    name their own reasons, e.g. "tdx_expired")."""

    reason: CloseReason
    detail: str
    label: str | None = None


Authorize = Callable[[RemotePeer], Refusal | None]


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    peer: RemotePeer


@dataclass(frozen=True, slots=True)
class MessageReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A keepalive arrived (reported so the shell can rate-limit PINGs like any kind)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The link is over. `code` is a CloseReason value (or an unknown int from a newer
    peer); `by_peer` says who closed; `authenticated` is False for cleartext notices."""

    code: int
    detail: str
    by_peer: bool
    authenticated: bool
    label: str

    @property
    def reason(self) -> CloseReason | None:
        try:
            return CloseReason(self.code)
        except ValueError:
            return None


Event = HandshakeDone | MessageReceived | PingReceived | Closed


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class Session:
    def __init__(
        self,
        *,
        initiator: bool,
        identity: SigningKey,
        network_id: bytes,
        signed_record: bytes,
        authorize: Authorize | None = None,
        limits: Limits = Limits(),
        static: KeyPair | None = None,
        version: int = PROTOCOL_VERSION,
    ) -> None:
        self.initiator = initiator
        self.identity = identity
        self.network_id = network_id
        self.limits = limits
        self.version = version
        self._authorize = authorize
        self._static = static or KeyPair.generate()
        self._signed_record = signed_record
        self._hs = HandshakeState(
            NOISE_PROTOCOL, initiator=initiator, prologue=prologue(network_id, version),
            s=self._static,
        )
        self._frames = fr.FrameBuffer()
        self._out = bytearray()
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._reassembly = fr.Reassembler.new(limits.max_message)
        self.state = State.HANDSHAKE
        self.peer: RemotePeer | None = None
        self.closed: Closed | None = None
        self.rekeys = 0
        self.handshake_hash: bytes | None = None

    # -- output ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def initiate(self) -> None:
        if not self.initiator or self.state is not State.HANDSHAKE or not self._hs.my_turn:
            raise LocalError("initiate() is for a fresh initiator session")
        self._write_handshake(hello(self.network_id, self.version))

    def _write_handshake(self, payload: bytes) -> None:
        self._out += fr.encode_frame(fr.FRAME_HANDSHAKE, self._hs.write_message(payload))

    def _encrypt_record(self, record: bytes) -> None:
        assert self._send is not None
        ct = self._send.encrypt_with_ad(b"", record)
        self._out += fr.encode_frame(fr.FRAME_TRANSPORT, ct)
        if self._send.n % self.limits.rekey_interval == 0:
            self._send.rekey()
            self.rekeys += 1

    def send_message(self, payload: bytes) -> None:
        if self.state is not State.OPEN:
            raise LocalError(f"send on a {self.state.value} link")
        if len(payload) > self.limits.max_message:
            raise LocalError(f"message of {len(payload)} bytes exceeds {self.limits.max_message}")
        for record in fr.chunk_message(payload):
            self._encrypt_record(record)

    def send_ping(self) -> None:
        if self.state is State.OPEN:
            self._encrypt_record(bytes((fr.REC_PING,)))

    def close(self, reason: CloseReason, detail: str = "", label: str | None = None) -> Closed:
        """Close locally; the close frame is in `data_to_send()`. Idempotent."""
        if self.closed is not None:
            return self.closed
        body = fr.encode_close_body(reason, detail)
        if self._send is not None:
            self._encrypt_record(bytes((fr.REC_CLOSE,)) + body)
        else:
            self._out += fr.encode_frame(fr.FRAME_CLOSE_NOTICE, body)
        return self._finish(int(reason), detail, by_peer=False, authenticated=True,
                            label=label or reason.label)

    def connection_lost(self, detail: str) -> Closed:
        """The socket died without a close frame (no frame can be sent any more)."""
        if self.closed is not None:
            return self.closed
        self._out.clear()
        return self._finish(int(CloseReason.CONNECTION_LOST), detail, by_peer=True,
                            authenticated=False, label=CloseReason.CONNECTION_LOST.label)

    def _finish(self, code: int, detail: str, *, by_peer: bool, authenticated: bool,
                label: str) -> Closed:
        self.state = State.CLOSED
        self.closed = Closed(code, detail, by_peer, authenticated, label)
        return self.closed

    # -- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._frames.feed(data)
        events: list[Event] = []
        try:
            while self.closed is None:
                frame = self._frames.next_frame()
                if frame is None:
                    break
                events.extend(self._on_frame(*frame))
        except FrameError as e:
            events.append(self.close(e.reason, e.detail))
        except NoiseError as e:
            events.append(self.close(CloseReason.DECRYPT_FAILED, str(e)))
        return events

    def _on_frame(self, frame_type: int, body: bytes) -> list[Event]:
        if frame_type == fr.FRAME_CLOSE_NOTICE:
            code, detail = fr.decode_close_body(body)
            return [self._finish(code, _detail(code, detail), by_peer=True,
                                 authenticated=False, label=_label(code))]
        if self.state is State.HANDSHAKE:
            if frame_type != fr.FRAME_HANDSHAKE:
                raise FrameError(CloseReason.PROTOCOL, "transport frame before the handshake ended")
            return self._on_handshake(body)
        if frame_type != fr.FRAME_TRANSPORT:
            raise FrameError(CloseReason.PROTOCOL, "handshake frame after the handshake ended")
        return self._on_transport(body)

    def _on_handshake(self, body: bytes) -> list[Event]:
        if self._hs.my_turn:
            raise FrameError(CloseReason.PROTOCOL, "handshake message out of turn")
        payload = self._hs.read_message(body)
        index = self._hs.message_index  # messages processed so far, including this one
        if index == 1:  # responder got the hello
            self._check_hello(payload)
            self._write_handshake(self._proof())
            return []
        if index == 3:
            # Responder: message 3 authenticated, so both sides hold transport keys (the
            # initiator split when it sent it). Open first, so that every refusal of the
            # initiator's proof below — shape, signature, record, network, authorisation —
            # goes out as an encrypted CLOSE (wire.md §3), never as a cleartext notice.
            self._open()
        peer = self._check_proof(payload)
        refusal = self._authorize(peer) if self._authorize else None
        if index == 2 and refusal is None:  # initiator: answer with our proof, then open
            self._write_handshake(self._proof())
            self._open()
        if refusal is not None:
            return [self.close(refusal.reason, refusal.detail, refusal.label)]
        self.peer = peer
        return [HandshakeDone(peer)]

    def _open(self) -> None:
        self._send, self._recv = self._hs.split()
        self.handshake_hash = self._hs.handshake_hash
        self.state = State.OPEN

    def _proof(self) -> bytes:
        return identity_proof(self.identity, self.network_id, self._static.public,
                              self._signed_record)

    def _check_hello(self, payload: bytes) -> None:
        try:
            h = decode(payload, max_size=256)
        except EncodingError as e:
            raise FrameError(CloseReason.MALFORMED, f"hello: {e}") from None
        if not (isinstance(h, list) and len(h) == 3 and h[0] == HELLO_TYPE
                and isinstance(h[1], int) and isinstance(h[2], bytes)):
            raise FrameError(CloseReason.MALFORMED, "hello must be [\"coalitiond-hello\", version, network id]")
        if h[1] != self.version:
            raise FrameError(CloseReason.WRONG_VERSION,
                             f"protocol version {h[1]}, this node speaks {self.version}")
        if h[2] != self.network_id:
            raise FrameError(CloseReason.WRONG_NETWORK,
                             f"network {h[2].hex()[:16]}…, this node is on {self.network_id.hex()[:16]}…")

    def _check_proof(self, payload: bytes) -> RemotePeer:
        try:
            p = decode(payload, max_size=fr.MAX_FRAME_BODY)
        except EncodingError as e:
            raise FrameError(CloseReason.MALFORMED, f"identity proof: {e}") from None
        if not (isinstance(p, list) and len(p) == 3 and all(isinstance(x, bytes) for x in p)
                and len(p[0]) == PUBLIC_KEY_LEN):
            raise FrameError(CloseReason.MALFORMED, "identity proof must be [peer id, signature, record]")
        peer_id, sig, signed_record = p
        rs = self._hs.rs
        assert rs is not None
        try:
            verify(peer_id, STATIC_KEY_TAG, static_key_statement(self.network_id, rs), sig)
        except SignatureError:
            raise FrameError(CloseReason.BAD_SIGNATURE,
                             f"identity {peer_id.hex()[:16]}… did not sign this Noise static key") from None
        try:
            record = parse_record(signed_record)
        except SignatureError as e:
            raise FrameError(CloseReason.BAD_SIGNATURE, f"peer record: {e}") from None
        except (EncodingError, PeerRecordError) as e:
            raise FrameError(CloseReason.MALFORMED, str(e)) from None
        if record.peer_id != peer_id:
            raise FrameError(CloseReason.BAD_SIGNATURE, "peer record belongs to another identity")
        if record.network_id != self.network_id:
            raise FrameError(CloseReason.WRONG_NETWORK, "peer record names another network")
        return RemotePeer(peer_id, record, signed_record, rs)

    def _on_transport(self, body: bytes) -> list[Event]:
        assert self._recv is not None
        record = self._recv.decrypt_with_ad(b"", body)
        if self._recv.n % self.limits.rekey_interval == 0:
            self._recv.rekey()
            self.rekeys += 1
        if not record:
            raise FrameError(CloseReason.MALFORMED, "empty transport record")
        kind, data = record[0], record[1:]
        if kind in (fr.REC_MSG_PART, fr.REC_MSG_END):
            message = self._reassembly.add(data, kind == fr.REC_MSG_END)
            return [] if message is None else [MessageReceived(message)]
        if kind == fr.REC_PING:
            return [PingReceived()]
        if kind == fr.REC_CLOSE:
            code, detail = fr.decode_close_body(data)
            return [self._finish(code, _detail(code, detail), by_peer=True, authenticated=True,
                                 label=_label(code))]
        raise FrameError(CloseReason.MALFORMED, f"unknown record kind 0x{kind:02x}")


#: The metric label of a close code this version does not know. Labels come from a fixed
#: set (the CloseReason labels and this), so a peer cannot mint metric series by sending
#: arbitrary codes; the number itself is in the Closed event's detail and the log.
UNKNOWN_CODE_LABEL: Final = "other"


def _label(code: int) -> str:
    try:
        return CloseReason(code).label
    except ValueError:
        return UNKNOWN_CODE_LABEL


def _detail(code: int, detail: str) -> str:
    """An unknown code keeps its number in the detail (the label is only "other")."""
    if code in CloseReason.__members__.values():
        return detail
    return f"code {code}: {detail}"
