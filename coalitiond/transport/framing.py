"""Wire framing below and above Noise (docs/wire.md §2–§4). Pure functions, no I/O.

Outer frame on the TCP stream: `type: u8 ‖ length: u16 big-endian ‖ body[length]`.
The 16-bit length makes 65535 bytes — Noise's own maximum message size — the hard maximum
of any frame, so no peer can make us buffer more than one frame plus one read.

Inside a TRANSPORT frame, after decryption: `kind: u8 ‖ data`. Application messages larger
than one frame are chunked into MSG_PART … MSG_END records and reassembled up to
`max_message` bytes; anything beyond that is refused as oversize before it is buffered.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from ..primitives.errors import RemoteError
from .noise import MAX_MESSAGE_LEN, TAGLEN

# Outer frame types.
FRAME_HANDSHAKE: Final = 0x01
FRAME_TRANSPORT: Final = 0x02
#: A cleartext, unauthenticated close notice: only informative (logged as such), used while
#: no transport keys exist yet (a refused handshake).
FRAME_CLOSE_NOTICE: Final = 0x03
FRAME_HEADER_LEN: Final = 3
MAX_FRAME_BODY: Final = MAX_MESSAGE_LEN

# Record kinds inside an encrypted TRANSPORT frame.
REC_MSG_PART: Final = 0x10
REC_MSG_END: Final = 0x11
REC_CLOSE: Final = 0x12
REC_PING: Final = 0x13
#: Largest chunk of application data one transport frame carries: 65535 − tag − kind byte.
MAX_CHUNK: Final = MAX_MESSAGE_LEN - TAGLEN - 1
#: Close details are truncated to this many UTF-8 bytes (they are for logs, not for code).
MAX_CLOSE_DETAIL: Final = 200


class CloseReason(enum.IntEnum):
    """Typed close reasons (u16 on the wire). Labels are the lowercase names."""

    NORMAL = 0
    WRONG_NETWORK = 1
    WRONG_VERSION = 2
    UNKNOWN_PEER = 3
    UNAUTHORISED = 4
    BAD_SIGNATURE = 5
    OVERSIZE = 6
    MALFORMED = 7
    HANDSHAKE_TIMEOUT = 8
    READ_TIMEOUT = 9
    DECRYPT_FAILED = 10
    DUPLICATE_LINK = 11
    TOO_SLOW = 12
    RATE_LIMITED = 13
    SHUTDOWN = 14
    PROTOCOL = 15
    #: Never sent: recorded locally when the socket died without a close frame.
    CONNECTION_LOST = 16
    #: An anonymous reader that sent no request for `reader_idle_timeout` lost its slot to
    #: a newcomer (docs/wire.md §8 "Reader admission").
    IDLE = 17

    @property
    def label(self) -> str:
        return self.name.lower()


class FrameError(RemoteError):
    """Bytes from the peer that break the framing rules; carries the close reason."""

    def __init__(self, reason: CloseReason, detail: str) -> None:
        super().__init__(f"{reason.label}: {detail}")
        self.reason = reason
        self.detail = detail


def encode_frame(frame_type: int, body: bytes) -> bytes:
    if len(body) > MAX_FRAME_BODY:
        # Our own bug: every caller chunks first.
        raise ValueError(f"frame body of {len(body)} bytes exceeds {MAX_FRAME_BODY}")
    return struct.pack(">BH", frame_type, len(body)) + body


def encode_close_body(reason: CloseReason, detail: str) -> bytes:
    raw = detail.encode("utf-8")[:MAX_CLOSE_DETAIL]
    return struct.pack(">H", int(reason)) + raw.decode("utf-8", "ignore").encode("utf-8")


def decode_close_body(body: bytes) -> tuple[int, str]:
    """(code, detail). Unknown codes are kept as ints: a newer peer may know more reasons."""
    if len(body) < 2:
        raise FrameError(CloseReason.MALFORMED, "close body shorter than 2 bytes")
    (code,) = struct.unpack(">H", body[:2])
    return code, body[2 : 2 + MAX_CLOSE_DETAIL].decode("utf-8", "replace")


class FrameBuffer:
    """Accumulates stream bytes and yields whole frames (type, body).

    Consumed frames only advance an offset; the buffer is compacted on the next `feed`, so
    one read holding many small frames costs O(bytes), not O(frames × bytes).
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> tuple[int, bytes] | None:
        pos = self._pos
        if len(self._buf) - pos < FRAME_HEADER_LEN:
            return None
        frame_type, length = struct.unpack_from(">BH", self._buf, pos)
        if frame_type not in (FRAME_HANDSHAKE, FRAME_TRANSPORT, FRAME_CLOSE_NOTICE):
            raise FrameError(CloseReason.MALFORMED, f"unknown frame type 0x{frame_type:02x}")
        start = pos + FRAME_HEADER_LEN
        end = start + length
        if len(self._buf) < end:
            return None
        self._pos = end
        return frame_type, bytes(self._buf[start:end])


def chunk_message(payload: bytes) -> list[bytes]:
    """Plaintext records (kind ‖ data) carrying one application message."""
    if not payload:
        return [bytes((REC_MSG_END,))]
    out = []
    for start in range(0, len(payload), MAX_CHUNK):
        piece = payload[start : start + MAX_CHUNK]
        last = start + MAX_CHUNK >= len(payload)
        out.append(bytes((REC_MSG_END if last else REC_MSG_PART,)) + piece)
    return out


@dataclass(slots=True)
class Reassembler:
    """Joins MSG_PART … MSG_END records; refuses a message above `max_message` bytes."""

    max_message: int
    _parts: list[bytes]
    _size: int = 0

    @classmethod
    def new(cls, max_message: int) -> Reassembler:
        return cls(max_message, [])

    def add(self, data: bytes, last: bool) -> bytes | None:
        self._size += len(data)
        if self._size > self.max_message:
            raise FrameError(
                CloseReason.OVERSIZE,
                f"message exceeds {self.max_message} bytes (at least {self._size})",
            )
        self._parts.append(data)
        if not last:
            return None
        message = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return message
