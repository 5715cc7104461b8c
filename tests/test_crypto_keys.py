"""Domain-separated ed25519 (DESIGN §2.2) and identity key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.signing
import pytest

from coalitiond.primitives.crypto import SigningKey, is_valid, signing_input, verify
from coalitiond.primitives.errors import KeyFileError, LocalError, SignatureError
from coalitiond.primitives.keys import KEY_FILE_HEADER, load_key_file, write_key_file

# RFC 8032 §7.1, TEST 1 and TEST 2.
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]
TAG = b"coalitiond/test/v1"


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors_through_our_key(seed: str, public: str, message: str, signature: str) -> None:
    key = SigningKey(bytes.fromhex(seed))
    assert key.public.hex() == public
    # Our signatures are plain ed25519 over tag ‖ 0x00 ‖ message; the raw primitive agrees
    # with the RFC, and our wrapper signs exactly the prefixed bytes.
    raw = nacl.signing.SigningKey(bytes.fromhex(seed)).sign(bytes.fromhex(message)).signature
    assert raw.hex() == signature
    ours = key.sign(TAG, bytes.fromhex(message))
    nacl.signing.VerifyKey(key.public).verify(TAG + b"\x00" + bytes.fromhex(message), ours)


def test_sign_and_verify() -> None:
    key = SigningKey(bytes(range(32)))
    sig = key.sign(TAG, b"hello")
    verify(key.public, TAG, b"hello", sig)
    assert is_valid(key.public, TAG, b"hello", sig)
    assert not is_valid(key.public, TAG, b"hellp", sig)
    assert not is_valid(key.public, b"coalitiond/other/v1", b"hello", sig)
    assert not is_valid(SigningKey(bytes(32)).public, TAG, b"hello", sig)


def test_domain_separation_is_prefix_free() -> None:
    key = SigningKey(bytes(range(32)))
    # Without the NUL separator "ab" ‖ "c" would equal "a" ‖ "bc".
    assert signing_input(b"ab", b"c") != signing_input(b"a", b"bc")
    sig = key.sign(b"ab", b"c")
    assert not is_valid(key.public, b"a", b"bc", sig)


def test_verify_refusals() -> None:
    key = SigningKey(bytes(range(32)))
    sig = key.sign(TAG, b"m")
    with pytest.raises(SignatureError, match=r"^public key must be 32 bytes, got 31$"):
        verify(key.public[:31], TAG, b"m", sig)
    with pytest.raises(SignatureError, match=r"^signature must be 64 bytes, got 63$"):
        verify(key.public, TAG, b"m", sig[:63])
    with pytest.raises(SignatureError, match=r"^bad coalitiond/test/v1 signature$"):
        verify(key.public, TAG, b"x", sig)
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(SignatureError, match=r"^bad coalitiond/test/v1 signature$"):
        verify(key.public, TAG, b"m", bad)


@pytest.mark.parametrize("tag", [b"", b"a\x00b", "é".encode()])
def test_invalid_domain_tags_are_our_bug(tag: bytes) -> None:
    key = SigningKey(bytes(32))
    with pytest.raises(LocalError, match=r"^invalid domain tag"):
        key.sign(tag, b"m")
    with pytest.raises(LocalError, match=r"^invalid domain tag"):
        verify(key.public, tag, b"m", bytes(64))


def test_seed_length_and_repr() -> None:
    with pytest.raises(LocalError, match=r"^ed25519 seed must be 32 bytes$"):
        SigningKey(bytes(31))
    key = SigningKey(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key)
    assert repr(key).startswith("SigningKey(public=" + key.public.hex()[:16])
    assert SigningKey.generate().public != SigningKey.generate().public


# --- key files ----------------------------------------------------------------------------


def test_write_and_load(tmp_path: Path) -> None:
    key = SigningKey(bytes(range(32)))
    path = tmp_path / "id.key"
    old = os.umask(0)  # even a permissive umask cannot widen the file
    try:
        write_key_file(path, key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"{KEY_FILE_HEADER}\n{bytes(range(32)).hex()}\n"
    assert load_key_file(path) == key
    assert not (tmp_path / "id.key.tmp").exists()


def test_write_refusals_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    write_key_file(path, SigningKey(bytes(32)))
    with pytest.raises(KeyFileError) as info:
        write_key_file(path, SigningKey(bytes(range(32))))
    assert str(info.value) == f"{path}: refusing to overwrite an existing key file"
    # A stale, wider temporary file is narrowed before the secret goes in.
    (tmp_path / "id.key.tmp").write_text("")
    os.chmod(tmp_path / "id.key.tmp", 0o666)
    write_key_file(path, SigningKey(bytes(range(32))), overwrite=True)
    assert load_key_file(path) == SigningKey(bytes(range(32)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    missing = tmp_path / "no" / "id.key"
    with pytest.raises(KeyFileError) as info:
        write_key_file(missing, SigningKey(bytes(32)))
    assert str(info.value) == f"{missing}: cannot write key file: No such file or directory"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700 | 0o004])
def test_loose_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "id.key"
    write_key_file(path, SigningKey(bytes(32)))
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    assert str(info.value) == (f"{path}: key file mode is {mode:04o}; it must not be readable by "
                               f"group or others (run: chmod 600 {path})")


def test_owner_only_modes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    write_key_file(path, SigningKey(bytes(32)))
    os.chmod(path, 0o400)
    assert load_key_file(path) == SigningKey(bytes(32))


MALFORMED_LINE = (f"malformed key file (expected the line {KEY_FILE_HEADER!r} then 64 hex "
                  f"characters)")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", MALFORMED_LINE),
        (b"\n", MALFORMED_LINE),
        (f"{KEY_FILE_HEADER}\n".encode(), MALFORMED_LINE),
        (f"wrong-header\n{'00' * 32}\n".encode(), MALFORMED_LINE),
        (f"{KEY_FILE_HEADER}\n{'00' * 32}\nextra\n".encode(), MALFORMED_LINE),
        (f"{KEY_FILE_HEADER}\n{'00' * 31}\n".encode(),
         "malformed key file (the secret must be 64 hex characters)"),
        (f"{KEY_FILE_HEADER}\n{'zz' * 32}\n".encode(),
         "malformed key file (the secret must be 64 hex characters)"),
        (f"{KEY_FILE_HEADER}\n{'0 ' * 32}\n".encode(),
         "malformed key file (the secret must be 64 hex characters)"),
        (b"\xff\xfe binary", "malformed key file (not ASCII text)"),
    ],
)
def test_malformed_files_are_refused_with_one_line(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "id.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    assert str(info.value) == f"{path}: {problem}"


def test_missing_and_non_regular(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_key_file(tmp_path / "none.key")
    assert str(info.value) == f"{tmp_path / 'none.key'}: key file not found"
    d = tmp_path / "dir.key"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError) as info:
        load_key_file(d)
    assert str(info.value) == f"{d}: key file is not a regular file"
