"""Signed client envelopes: encoding, golden vector, the ACL and every stateless refusal."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import (
    ENVELOPE_TAG,
    MAX_ACL_CLIENTS,
    MAX_ARG_KEY_LEN,
    MAX_ARGS_KEYS,
    MAX_COMMANDS_PER_ENVELOPE,
    MAX_ENVELOPE_SIZE,
    MAX_OP_LEN,
    Acl,
    BadSignature,
    Command,
    CommandRefused,
    Envelope,
    EnvelopeTooLarge,
    MalformedEnvelope,
    NotAdmitted,
    WrongCommittee,
    check_envelope,
    signed_payload,
)
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import LocalError, OperatorError, RemoteError

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(b"\x42" * 32)
COMMITTEE = b"\x11" * 32
ACL = Acl.allow([KEY.public, OTHER.public])

# Pinned with DESIGN §2.2's golden-vector rule: change these only with a schema bump.
GOLDEN_PUBLIC = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
GOLDEN_ENVELOPE = (
    "8768656e76656c6f70650158201111111111111111111111111111111111111111111111111111111111111111"
    "582003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8078182677075626c6973"
    "68a264626f6479a26470616972676574682d7573646576616c75651904d2646b696e64657072696365584"
    "03c683101d1d04e34a1ee8c5d3885bae878778acc231057688ac26b86455eee07658c27a175b5ea4a34f298"
    "7271da518770bcf793491dc89e100d6947c23b070a"
)
GOLDEN_ID = "2c449943867703745aab7218e63b512d88882af73d11c71993074723d71d2f7c"


def golden() -> Envelope:
    return Envelope.sign(KEY, COMMITTEE, 7, [publish("price", {"pair": "eth-usd", "value": 1234})])


def wire(**over: Any) -> list[Any]:
    """A well-formed, correctly signed envelope as a CBOR array, with fields overridden."""
    env = golden()
    fields = {"tag": "envelope", "schema": 1, "committee": COMMITTEE, "client": KEY.public,
              "nonce": 7, "commands": [c.to_wire() for c in env.commands],
              "signature": env.signature}
    fields.update(over)
    return list(fields.values())


def test_golden_vector() -> None:
    env = golden()
    assert KEY.public.hex() == GOLDEN_PUBLIC
    assert env.raw.hex() == GOLDEN_ENVELOPE
    assert env.envelope_id.hex() == GOLDEN_ID
    assert check_envelope(COMMITTEE, ACL, bytes.fromhex(GOLDEN_ENVELOPE)) == env


def test_payload_slice_equals_reencoding() -> None:
    env = golden()
    assert env.payload == signed_payload(COMMITTEE, KEY.public, 7, env.commands)
    assert env.payload == encode(wire()[:-1])


def test_signature_is_over_domain_tag() -> None:
    env = golden()
    assert env.signature == KEY.sign(ENVELOPE_TAG, env.payload)
    assert ENVELOPE_TAG == b"coalitiond/client-envelope/v1"


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_commands = st.lists(
    st.builds(Command,
              st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
              st.dictionaries(st.text(min_size=1, max_size=MAX_ARG_KEY_LEN), _values,
                              max_size=5)),
    min_size=1, max_size=8)


@settings(max_examples=80, deadline=None, print_blob=True)
@given(commands=_commands, nonce=st.integers(1, 2**64 - 1))
def test_sign_check_round_trip(commands: list[Command], nonce: int) -> None:
    env = Envelope.sign(KEY, COMMITTEE, nonce, commands)
    back = check_envelope(COMMITTEE, ACL, env.raw)
    assert back == env
    assert back.commands == tuple(commands)
    assert back.payload == signed_payload(COMMITTEE, KEY.public, nonce, commands)


# -- refusals, each with its exact reason and message -----------------------------------------


def refused(data: bytes, acl: Acl = ACL, committee: bytes = COMMITTEE) -> CommandRefused:
    with pytest.raises(CommandRefused) as info:
        check_envelope(committee, acl, data)
    assert isinstance(info.value, RemoteError)  # the submitter's fault, never ours
    return info.value


def test_forged_signature() -> None:
    raw = bytearray(golden().raw)
    raw[-1] ^= 1
    err = refused(bytes(raw))
    assert isinstance(err, BadSignature)
    assert err.reason == "bad_signature"
    assert str(err) == f"envelope signature does not verify for client {GOLDEN_PUBLIC}"


def test_signature_of_another_client() -> None:
    # OTHER is admitted, but KEY's signature does not make an envelope OTHER's.
    err = refused(encode(wire(client=OTHER.public)))
    assert isinstance(err, BadSignature)
    assert str(err) == f"envelope signature does not verify for client {OTHER.public.hex()}"


def test_tampered_command() -> None:
    err = refused(encode(wire(commands=[["publish", {"kind": "price", "body": 1}]])))
    assert err.reason == "bad_signature"


def test_wrong_committee() -> None:
    err = refused(golden().raw, committee=b"\x22" * 32)
    assert isinstance(err, WrongCommittee)
    assert err.reason == "wrong_committee"
    assert str(err) == f"envelope is for committee {'11' * 32}, this is committee {'22' * 32}"


def test_wrong_committee_is_checked_before_the_signature() -> None:
    raw = bytearray(golden().raw)
    raw[-1] ^= 1
    assert refused(bytes(raw), committee=b"\x22" * 32).reason == "wrong_committee"


def test_not_admitted() -> None:
    err = refused(golden().raw, acl=Acl.allow([OTHER.public]))
    assert isinstance(err, NotAdmitted)
    assert err.reason == "not_admitted"
    assert str(err) == f"client {GOLDEN_PUBLIC} is not admitted by this committee's ACL"


def test_acl_is_checked_before_the_signature() -> None:
    # Strangers never cost a signature verification.
    raw = bytearray(golden().raw)
    raw[-1] ^= 1
    assert refused(bytes(raw), acl=Acl.allow([OTHER.public])).reason == "not_admitted"


def test_oversize() -> None:
    err = refused(b"\x00" * (MAX_ENVELOPE_SIZE + 1))
    assert isinstance(err, EnvelopeTooLarge)
    assert err.reason == "too_large"
    assert str(err) == (f"envelope of {MAX_ENVELOPE_SIZE + 1} bytes exceeds the limit of "
                        f"{MAX_ENVELOPE_SIZE}")


_GOOD_CMD = ["publish", {"kind": "k", "body": 1}]

MALFORMED: list[tuple[str, Any, str]] = [
    ("not an array", {"a": 1}, "expected a 7-item array"),
    ("six items", wire()[:-1], "expected a 7-item array"),
    ("wrong tag", wire(tag="envelopes"), "wrong type tag"),
    ("schema 2", wire(schema=2), "unsupported schema 2 (this member speaks 1)"),
    ("schema true", wire(schema=True), "unsupported schema True (this member speaks 1)"),
    ("short committee", wire(committee=b"\x11" * 31), "committee id must be 32 bytes"),
    ("text client", wire(client=KEY.public.hex()), "client key must be 32 bytes"),
    ("nonce 0", wire(nonce=0), "nonce must be an integer >= 1"),
    ("negative nonce", wire(nonce=-1), "nonce must be an integer >= 1"),
    ("boolean nonce", wire(nonce=True), "nonce must be an integer >= 1"),
    ("no commands", wire(commands=[]),
     f"commands must be an array of 1..{MAX_COMMANDS_PER_ENVELOPE} items"),
    ("too many commands", wire(commands=[_GOOD_CMD] * (MAX_COMMANDS_PER_ENVELOPE + 1)),
     f"commands must be an array of 1..{MAX_COMMANDS_PER_ENVELOPE} items"),
    ("command not a pair", wire(commands=[_GOOD_CMD, ["publish"]]),
     "command 1 must be a 2-item array [op, args]"),
    ("uppercase op", wire(commands=[["Publish", {}]]),
     f"command 0: op must match [a-z][a-z0-9_]* and be at most {MAX_OP_LEN} chars"),
    ("long op", wire(commands=[["p" * (MAX_OP_LEN + 1), {}]]),
     f"command 0: op must match [a-z][a-z0-9_]* and be at most {MAX_OP_LEN} chars"),
    ("args not a map", wire(commands=[["publish", [1, 2]]]), "command 0: args must be a map"),
    ("integer arg key", wire(commands=[["publish", {1: "x"}]]),
     f"command 0: args keys must be text of 1..{MAX_ARG_KEY_LEN} chars"),
    ("empty arg key", wire(commands=[["publish", {"": "x"}]]),
     f"command 0: args keys must be text of 1..{MAX_ARG_KEY_LEN} chars"),
    ("too many arg keys", wire(commands=[["publish", {f"k{i}": i for i in range(MAX_ARGS_KEYS + 1)}]]),
     f"command 0: args has more than {MAX_ARGS_KEYS} keys"),
    ("short signature", wire(signature=b"\x00" * 63), "signature must be 64 bytes"),
]


@pytest.mark.parametrize(("obj", "message"), [(o, m) for _, o, m in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed(obj: Any, message: str) -> None:
    err = refused(encode(obj))
    assert isinstance(err, MalformedEnvelope)
    assert err.reason == "malformed"
    assert str(err) == f"malformed envelope: {message}"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input"),
    (golden().raw + b"\x00", "1 trailing bytes after offset 196"),
    # A non-shortest head for the nonce 7 (0x18 0x07 instead of 0x07).
    (golden().raw.replace(b"\x07\x81\x82", b"\x18\x07\x81\x82", 1),
     "non-shortest integer or length encoding at offset 79"),
    (b"\x9f\xff", "indefinite-length item at offset 0"),
], ids=["empty", "trailing", "non-canonical", "indefinite"])
def test_not_deterministic_cbor(data: bytes, message: str) -> None:
    err = refused(data)
    assert isinstance(err, MalformedEnvelope)
    assert str(err) == f"malformed envelope: {message}"


def test_every_single_byte_flip_is_refused() -> None:
    """No mutation of a signed envelope is admitted (signature, structure or committee)."""
    raw = golden().raw
    for i in range(len(raw)):
        mutated = bytearray(raw)
        mutated[i] ^= 0x01
        with pytest.raises(CommandRefused):
            check_envelope(COMMITTEE, ACL, bytes(mutated))


# -- ACL ----------------------------------------------------------------------------------------


def test_acl_admits_ticket_clients_only_when_it_recognises_an_issuer() -> None:
    stranger = SigningKey(b"\x05" * 32)
    env = Envelope.sign(stranger, COMMITTEE, 1, [Command("publish", {"kind": "k", "body": 1})])
    with_issuer = Acl(frozenset([KEY.public]), frozenset([b"\x01" * 32]))
    with_issuer.admit(env, ticket_clients={stranger.public})
    with pytest.raises(NotAdmitted) as info:
        with_issuer.admit(env)
    assert str(info.value).endswith("(no valid ticket from a recognised issuer has been "
                                    "admitted for it)")
    # Without a recognised issuer, the ticket-admitted set counts for nothing.
    with pytest.raises(NotAdmitted):
        Acl.allow([KEY.public]).admit(env, ticket_clients={stranger.public})
    with pytest.raises(OperatorError, match="ticket issuer root must be 32 bytes"):
        Acl(frozenset([KEY.public]), frozenset([b"\x01" * 31]))


def test_acl_bounds_and_key_lengths() -> None:
    with pytest.raises(OperatorError) as info:
        Acl.allow([b"\x01" * 31])
    assert str(info.value) == "ACL client key must be 32 bytes, got 31"
    too_many = [i.to_bytes(32, "big") for i in range(MAX_ACL_CLIENTS + 1)]
    with pytest.raises(OperatorError) as info:
        Acl.allow(too_many)
    assert str(info.value) == (f"ACL lists {MAX_ACL_CLIENTS + 1} client keys, the limit is "
                               f"{MAX_ACL_CLIENTS}")
    with pytest.raises(OperatorError) as info:
        Acl.from_hex(["zz"])
    assert str(info.value) == "ACL client key 'zz' is not hex"
    assert Acl.from_hex([KEY.public.hex()]) == Acl.allow([KEY.public])


def test_acl_digest_ignores_order() -> None:
    assert Acl.allow([KEY.public, OTHER.public]).digest() == \
        Acl.allow([OTHER.public, KEY.public]).digest()
    assert Acl.allow([KEY.public]).digest() != Acl.allow([OTHER.public]).digest()


# -- the signing side refuses to build what members would refuse --------------------------------


def test_sign_limits_are_local_errors() -> None:
    with pytest.raises(LocalError, match="nonce 0 outside"):
        Envelope.sign(KEY, COMMITTEE, 0, [publish("k", 1)])
    with pytest.raises(LocalError, match=r"an envelope holds 1\.\.1024 commands"):
        Envelope.sign(KEY, COMMITTEE, 1, [])
    with pytest.raises(LocalError, match="committee id must be 32 bytes"):
        Envelope.sign(KEY, b"\x11", 1, [publish("k", 1)])
    with pytest.raises(LocalError, match="exceeds 65536"):
        Envelope.sign(KEY, COMMITTEE, 1, [publish("k", b"\x00" * MAX_ENVELOPE_SIZE)])


def test_signer_increments_nonces_and_packs() -> None:
    signer = EnvelopeSigner(KEY, COMMITTEE, next_nonce=5)
    assert signer.command("publish", kind="a", body=1).nonce == 5
    envelopes = signer.sign_all([publish("k", i) for i in range(2500)])
    assert [len(e.commands) for e in envelopes] == [1024, 1024, 452]
    assert [e.nonce for e in envelopes] == [6, 7, 8]
    big = [publish("k", b"\x00" * 20_000) for _ in range(7)]
    packed = signer.sign_all(big)
    assert [len(e.commands) for e in packed] == [3, 3, 1]
    assert all(len(e.raw) <= MAX_ENVELOPE_SIZE for e in packed)
    assert signer.next_nonce == 12
    with pytest.raises(LocalError, match="cannot fit an envelope"):
        signer.sign_all([publish("k", b"\x00" * MAX_ENVELOPE_SIZE)])


# -- fuzz: whatever arrives, the answer is an envelope or a CommandRefused ------------------------


@settings(max_examples=300, deadline=None, print_blob=True)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    with pytest.raises(CommandRefused):
        check_envelope(COMMITTEE, ACL, data)


@settings(max_examples=150, deadline=None, print_blob=True)
@given(st.lists(_values, min_size=7, max_size=7), st.data())
def test_random_structures_are_refused_cleanly(items: list[Any], data: st.DataObject) -> None:
    # Keep a plausible prefix sometimes, so the fuzzer reaches the inner checks.
    if data.draw(st.booleans()):
        items[:5] = ["envelope", 1, COMMITTEE, KEY.public, 1]
    with pytest.raises(CommandRefused):
        check_envelope(COMMITTEE, ACL, encode(items))
