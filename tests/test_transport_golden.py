"""Golden vectors for the wire encodings documented in docs/wire.md (§2, §3, §5).

If one of these changes, the wire format changed: bump PROTOCOL_VERSION and update the doc.
"""

from __future__ import annotations

from coalitiond.primitives.committee import network_id
from coalitiond.primitives.crypto import SigningKey
from coalitiond.transport import framing as fr
from coalitiond.transport.framing import CloseReason
from coalitiond.transport.peer_record import PeerRecord
from coalitiond.transport.session import hello, prologue, static_key_statement

NET = network_id("example-net")
NET_HEX = "d1fadfd1d0e9ef9e350aa62390015aeaee8fbc065e61a8efcb5fbadf60d50dba"


def test_prologue_hello_and_static_statement() -> None:
    assert NET.hex() == NET_HEX
    assert prologue(NET).hex() == "836f636f616c6974696f6e642d6c696e6b015820" + NET_HEX
    assert hello(NET).hex() == "8370636f616c6974696f6e642d68656c6c6f015820" + NET_HEX
    assert static_key_statement(NET, bytes(range(32))).hex() == (
        "836c6e6f6973652d7374617469635820" + NET_HEX + "5820" + bytes(range(32)).hex())


def test_signed_peer_record() -> None:
    k = SigningKey(bytes(32))
    r = PeerRecord(k.public, NET, 1_700_000_000_000, 1, 1_700_000_000, (("127.0.0.1", 7000),),
                   ("member",))
    assert k.public.hex() == "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    assert r.sign(k).hex() == (
        "82587a8b6b706565722d7265636f7264015820" + k.public.hex() + "5820" + NET_HEX
        + "1b0000018bcfe56800011a6553f1008182693132372e302e302e31191b5881666d656d62657280a0"
        "58405af5860fdfd1a6990281c29928a987ae93f8e56845364fa42ee838b1c35af01cddd270157ee0"
        "a387507bbdf18e4b2302014a732df1872a3a6a2ef791066d6708")


def test_frames_and_close_body() -> None:
    assert fr.encode_frame(fr.FRAME_HANDSHAKE, b"\xaa\xbb") == b"\x01\x00\x02\xaa\xbb"
    assert fr.encode_close_body(CloseReason.WRONG_NETWORK, "x") == b"\x00\x01x"
    assert fr.chunk_message(b"") == [b"\x11"]
    parts = fr.chunk_message(b"z" * (fr.MAX_CHUNK + 1))
    assert [p[0] for p in parts] == [fr.REC_MSG_PART, fr.REC_MSG_END]
    assert len(parts[0]) == 65535 - 16 and parts[1] == b"\x11z"
