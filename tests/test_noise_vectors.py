"""Every 25519/ChaChaPoly vector of the cacophony file, all patterns, both hash functions.

Each vector: build both HandshakeStates from the vector's keys, run the messages in order
(handshake messages alternate initiator/responder; after the handshake, transport messages
alternate too, except one-way patterns where only the initiator sends), and compare every
ciphertext and the final handshake hash.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SHARED_TESTDATA

from coalitiond.transport.noise import (
    HASHES,
    HandshakeState,
    KeyPair,
    NoiseError,
    UnsupportedProtocol,
    parse_protocol,
)

VECTOR_FILE = SHARED_TESTDATA / "noise" / "cacophony-25519-chachapoly.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTOR_FILE.read_text())["vectors"]


def _key(v: dict[str, Any], name: str) -> KeyPair | None:
    return KeyPair.from_private(bytes.fromhex(v[name])) if name in v else None


def _pub(v: dict[str, Any], name: str) -> bytes | None:
    return bytes.fromhex(v[name]) if name in v else None


def _run(v: dict[str, Any]) -> None:
    proto = parse_protocol(v["protocol_name"])
    init = HandshakeState(
        proto, initiator=True, prologue=bytes.fromhex(v["init_prologue"]),
        s=_key(v, "init_static"), e=_key(v, "init_ephemeral"), rs=_pub(v, "init_remote_static"),
        psks=[bytes.fromhex(p) for p in v.get("init_psks", [])],
    )
    resp = HandshakeState(
        proto, initiator=False, prologue=bytes.fromhex(v["resp_prologue"]),
        s=_key(v, "resp_static"), e=_key(v, "resp_ephemeral"), rs=_pub(v, "resp_remote_static"),
        psks=[bytes.fromhex(p) for p in v.get("resp_psks", [])],
    )
    msgs = v["messages"]
    i = 0
    while not init.complete:
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        payload = bytes.fromhex(msgs[i]["payload"])
        ct = sender.write_message(payload)
        assert ct.hex() == msgs[i]["ciphertext"], f"handshake message {i}"
        assert receiver.read_message(ct) == payload
        i += 1
    assert resp.complete
    assert init.handshake_hash.hex() == v["handshake_hash"]
    assert resp.handshake_hash.hex() == v["handshake_hash"]
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    turn = i % 2
    for j in range(i, len(msgs)):
        payload = bytes.fromhex(msgs[j]["payload"])
        initiator_sends = proto.one_way or (j - i + turn) % 2 == 0
        if initiator_sends:
            ct = i_send.encrypt_with_ad(b"", payload)
            assert r_recv.decrypt_with_ad(b"", ct) == payload
        else:
            ct = r_send.encrypt_with_ad(b"", payload)
            assert i_recv.decrypt_with_ad(b"", ct) == payload
        assert ct.hex() == msgs[j]["ciphertext"], f"transport message {j}"


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    _run(vector)


def test_every_vector_runs_and_none_is_skipped() -> None:
    """No vector may be silently dropped: every hash in the file is implemented."""
    hashes = {v["protocol_name"].rsplit("_", 1)[1] for v in VECTORS}
    assert hashes <= set(HASHES), hashes - set(HASHES)
    assert len(VECTORS) == 14
    patterns = {parse_protocol(v["protocol_name"]).pattern for v in VECTORS}
    assert patterns == {"NN", "NK", "KK", "XK", "IK", "XX", "IX"}


def test_tampered_handshake_ciphertext_is_refused() -> None:
    v = next(x for x in VECTORS if x["protocol_name"].startswith("Noise_XX_"))
    init = HandshakeState(v["protocol_name"], initiator=True, s=KeyPair.generate())
    resp = HandshakeState(v["protocol_name"], initiator=False, s=KeyPair.generate())
    resp.read_message(init.write_message(b"hello"))
    m2 = bytearray(resp.write_message(b"identity"))
    m2[40] ^= 1
    with pytest.raises(NoiseError, match="ChaChaPoly authentication failed"):
        init.read_message(bytes(m2))


def test_prologue_mismatch_fails_at_first_encrypted_payload() -> None:
    name = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
    init = HandshakeState(name, initiator=True, prologue=b"net-a", s=KeyPair.generate())
    resp = HandshakeState(name, initiator=False, prologue=b"net-b", s=KeyPair.generate())
    resp.read_message(init.write_message())
    with pytest.raises(NoiseError, match="ChaChaPoly authentication failed"):
        init.read_message(resp.write_message())


def test_psk_roundtrip_and_wrong_psk() -> None:
    """No psk vectors are in the file; check the modifier is consistent with itself."""
    name = "Noise_XXpsk3_25519_ChaChaPoly_SHA512"
    psk = bytes(range(32))
    init = HandshakeState(name, initiator=True, s=KeyPair.generate(), psks=[psk])
    resp = HandshakeState(name, initiator=False, s=KeyPair.generate(), psks=[psk])
    resp.read_message(init.write_message(b"a"))
    init.read_message(resp.write_message(b"b"))
    assert resp.read_message(init.write_message(b"c")) == b"c"
    assert init.handshake_hash == resp.handshake_hash
    bad = HandshakeState(name, initiator=False, s=KeyPair.generate(), psks=[b"\x01" * 32])
    init2 = HandshakeState(name, initiator=True, s=KeyPair.generate(), psks=[psk])
    bad.read_message(init2.write_message())
    init2.read_message(bad.write_message())
    with pytest.raises(NoiseError):
        bad.read_message(init2.write_message())


def test_rekey_matches_spec_definition() -> None:
    from coalitiond.transport.noise import MAX_NONCE, CipherState, cipher_encrypt

    c = CipherState(b"\x07" * 32)
    c.rekey()
    assert c.k == cipher_encrypt(b"\x07" * 32, MAX_NONCE, b"", b"\x00" * 32)[:32]


def test_unsupported_names_are_refused() -> None:
    with pytest.raises(UnsupportedProtocol, match="hash SHA3 is not implemented"):
        parse_protocol("Noise_XX_25519_ChaChaPoly_SHA3")
    with pytest.raises(UnsupportedProtocol, match="cipher AESGCM is not implemented"):
        parse_protocol("Noise_XX_25519_AESGCM_SHA256")
    with pytest.raises(UnsupportedProtocol, match="pattern 'ZZ' is not implemented"):
        parse_protocol("Noise_ZZ_25519_ChaChaPoly_SHA256")
