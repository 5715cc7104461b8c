"""C2SP signed notes and checkpoints: the Go reference vector, our format, every refusal."""

from __future__ import annotations

import base64

import pytest

from coalitiond.log.checkpoint import (
    Checkpoint,
    CheckpointError,
    add_signature,
    key_id,
    key_name,
    sign_note,
    split_note,
    verify_checkpoint,
    verify_note,
)
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.errors import LocalError

# golang.org/x/mod/sumdb/note's documented example (the signed-note spec's reference
# implementation): key, text and the exact signed note it produces.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_NOTE = GO_TEXT + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUg"
                     "YN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
CP = Checkpoint(size=7, root=bytes(range(32)), committee_id=b"\xab" * 32, epoch=2, height=11,
                block_digest=b"\xcd" * 32)


def _go_key() -> SigningKey:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == 1
    return SigningKey(raw[1:])


def test_key_id_and_signature_match_the_go_reference() -> None:
    key = _go_key()
    name, hash_hex, vk = GO_VKEY.split("+")
    assert base64.b64decode(vk)[1:] == key.public
    assert key_id(name, key.public).hex() == hash_hex
    # ed25519 is deterministic: our signer must produce the reference note byte for byte.
    assert sign_note(GO_TEXT, name, key) == GO_NOTE
    assert verify_note(GO_NOTE, name, key.public) == GO_TEXT
    with pytest.raises(CheckpointError, match=r"^signature by PeterNeumann does not verify$"):
        verify_note(GO_NOTE.replace("cryptography", "cryptographY"), name, key.public)


def test_checkpoint_text_is_pinned() -> None:
    assert CP.text() == (
        "coalitiond/" + "ab" * 32 + "\n"
        "7\n"
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
        "committee " + "ab" * 32 + "\n"
        "epoch 2\n"
        "height 11\n"
        "block " + "cd" * 32 + "\n")


def test_sign_and_verify_round_trip_and_cosignatures() -> None:
    note = CP.sign(KEY)
    assert verify_checkpoint(note, KEY.public) == CP
    name = key_name(CP.origin, KEY.public)
    assert note.endswith("\n") and f"\n\n\u2014 {name} " in note
    # Another member cosigns the byte-identical body; each key verifies its own line and
    # ignores the other's (signed-note rule: unknown keys are ignored).
    both = add_signature(note, key_name(CP.origin, OTHER.public), OTHER)
    assert verify_checkpoint(both, KEY.public) == CP
    assert verify_checkpoint(both, OTHER.public) == CP
    assert len(split_note(both)[1]) == 2


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda n: n.replace("\n7\n", "\n8\n"), "^signature by .* does not verify$"),
    (lambda n: n.replace("\n7\n", "\n07\n"), r"^checkpoint tree size '07' is not a canonical decimal$"),
    (lambda n: n.replace("epoch 2", "epoch  2"), r"^checkpoint epoch ' 2' is not a canonical decimal$"),
    (lambda n: n.replace("height 11", "Height 11"), r"^checkpoint line 'Height 11' should start with 'height '$"),
    (lambda n: n.replace("coalitiond/ab", "coalitiond/ac", 1), r"^checkpoint origin .* does not match its committee line$"),
    (lambda n: n.replace("block cd", "block CD"), "^checkpoint block must be 64 lowercase hex characters$"),
    (lambda n: n.replace("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "AAEC"), "^checkpoint root must be 32 bytes in standard base64$"),
    (lambda n: n.replace("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "!!"), "^checkpoint root is not base64$"),
    (lambda n: n.replace("height 11\n", "height 11\nextra\n"), "^checkpoint has 8 lines, expected 7$"),
    (lambda n: n.replace("\n\n", "\n"), "^note has no blank line before its signatures$"),
    (lambda n: n[:-1], "^note signatures must end with a newline$"),
    (lambda n: n.replace("\u2014 ", "- "), "^note signature line 1 does not start with '— '$"),
    (lambda n: n.rsplit(" ", 1)[0] + " ###\n", "^note signature line 1: invalid base64$"),
    (lambda n: n.rsplit(" ", 1)[0] + " AAAA\n", "^note signature line 1: too short$"),
    (lambda n: n.replace("epoch 2", "epoch\t2"), "^note text holds a control character$"),
    (lambda n: n + n.split("\n\n")[1] * 100, "^note has 101 signatures, at most 100$"),
    (lambda n: n + " " * 70000, r"^note of \d+ characters exceeds 65536$"),
])
def test_malformed_notes_are_refused_with_the_exact_reason(mutate: object, message: str) -> None:
    note = CP.sign(KEY)
    assert callable(mutate)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(mutate(note), KEY.public)


def test_signature_by_another_key_is_not_accepted() -> None:
    note = CP.sign(OTHER)
    with pytest.raises(CheckpointError, match=r"^note carries no signature by coalitiond/(ab){32}/[0-9a-f]{64}$"):
        verify_checkpoint(note, KEY.public)
    # Same name and key id but a forged signature: refused, not skipped.
    text, (sig,) = split_note(CP.sign(KEY))
    forged = text + "\n\u2014 " + sig.name + " " + base64.b64encode(
        sig.key_id + bytes(64)).decode() + "\n"
    with pytest.raises(CheckpointError, match=r"does not verify$"):
        verify_checkpoint(forged, KEY.public)
    with pytest.raises(CheckpointError, match=r"^public key must be 32 bytes$"):
        verify_checkpoint(note, b"short")


def test_signing_refuses_bad_names_and_texts() -> None:
    with pytest.raises(LocalError, match=r"without spaces or"):
        sign_note("a\n", "bad name", KEY)
    with pytest.raises(LocalError, match=r"^note text must end with a newline$"):
        sign_note("a", "name", KEY)
    with pytest.raises(LocalError, match=r"^checkpoint: root, committee id and block digest"):
        Checkpoint(1, b"short", b"\x00" * 32, 0, 1, b"\x00" * 32).text()
