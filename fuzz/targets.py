"""Fuzz targets: one function per harness, `target(data: bytes) -> None`.

Each target feeds `data` to one decoder or parser of bytes that reach a member from outside
(a peer, a client, an HTTP reader, an operator's file) and returns when the decoder accepts
it or refuses it with its *documented* error. Anything else it raises is a finding: a crash
(an unexpected exception type), or a broken property the target checks (`Finding`: e.g. a
CBOR decoding that does not re-encode to the same bytes).

Pure Python, no atheris: `fuzz/run.py` drives these under atheris (coverage-guided),
`tests/test_fuzz_corpus.py` replays the committed seed corpus and every regression input
through them on each `make test`.

Deterministic: a target reads no clock and no randomness of its own (Noise ephemeral keys
are derived from a counter reset per input, see `_fixed_ephemerals`), so an input replays
exactly.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import ConfigError, EncodingError, OperatorError, RemoteError


class Finding(Exception):
    """A property the target checks does not hold."""


Target = Callable[[bytes], None]

#: Largest input a harness is given (libFuzzer's -max_len, `fuzz/campaign.py`): 8 KiB
#: holds every structure the decoders parse (nested CBOR, a handshake, a few frames); config
#: files and archives get the size of their largest seed and more.
MAX_INPUT: Final = 8 * 1024
MAX_INPUT_BY_HARNESS: Final = {"config": 32 * 1024, "archive": 32 * 1024}


# ---------------------------------------------------------------------- deterministic CBOR


def cbor(data: bytes) -> None:
    """`decode` accepts exactly the deterministic encodings: whatever it accepts re-encodes
    to the same bytes; everything else is an EncodingError."""
    try:
        value = decode(data)
    except EncodingError:
        return
    again = encode(value)
    if again != data:
        raise Finding(f"decode accepted {data[:64].hex()}, which re-encodes as "
                      f"{again[:64].hex()}: not the deterministic encoding")


# ---------------------------------------------------------------------- Noise and framing


@contextmanager
def _fixed_ephemerals() -> Iterator[None]:
    """Noise ephemeral keys from a counter instead of the OS: a handshake transcript, and so
    an input that depends on it, replays byte for byte. Restored afterwards."""
    from coalitiond.transport import noise

    original = noise.KeyPair.__dict__["generate"]
    counter = iter(range(1 << 30))

    def generate(cls: type[noise.KeyPair]) -> noise.KeyPair:
        seed = hashlib.sha256(b"fuzz-ephemeral/%d" % next(counter)).digest()
        return cls.from_private(seed)

    noise.KeyPair.generate = classmethod(generate)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        noise.KeyPair.generate = original  # type: ignore[method-assign]


@cache
def _identities() -> tuple[Any, Any, bytes, bytes, bytes]:
    from coalitiond.primitives.committee import network_id
    from coalitiond.primitives.crypto import SigningKey
    from coalitiond.transport.peer_record import PeerRecord

    net = network_id("fuzz")
    a, b = SigningKey(b"\x0a" * 32), SigningKey(b"\x0b" * 32)
    rec_a = PeerRecord(a.public, net, 1, 1, 1_700_000_000).sign(a)
    rec_b = PeerRecord(b.public, net, 1, 1, 1_700_000_000).sign(b)
    return a, b, net, rec_a, rec_b


def _session(initiator: bool) -> Any:
    from coalitiond.transport.noise import KeyPair
    from coalitiond.transport.session import Session

    a, b, net, rec_a, rec_b = _identities()
    key, rec = (a, rec_a) if initiator else (b, rec_b)
    static = KeyPair.from_private(hashlib.sha256(b"fuzz-static" + key.public).digest())
    return Session(initiator=initiator, identity=key, network_id=net, signed_record=rec,
                   static=static)


def _split(data: bytes) -> list[bytes]:
    """The input as up to 8 chunks: each chunk is a 2-byte big-endian length, then that many
    bytes (the last chunk takes what is left)."""
    chunks: list[bytes] = []
    while data and len(chunks) < 7:
        n = int.from_bytes(data[:2], "big")
        chunks.append(data[2 : 2 + n])
        data = data[2 + n :]
    if data:
        chunks.append(data)
    return chunks


def noise_handshake(data: bytes) -> None:
    """Raw bytes on a fresh link, to a responder and (after its message 1) to an initiator:
    `Session.receive_data` refuses anything with a close event, never an exception."""
    with _fixed_ephemerals():
        responder = _session(False)
        for chunk in _split(data):
            responder.receive_data(chunk)
        responder.data_to_send()
        initiator = _session(True)
        initiator.initiate()
        initiator.data_to_send()
        for chunk in _split(data):
            initiator.receive_data(chunk)
        initiator.data_to_send()


def noise_payloads(data: bytes) -> None:
    """Well-encrypted handshake messages with fuzzed payloads: byte 0 picks message 2 (the
    responder's proof, to the initiator) or message 3 (the initiator's, to the responder);
    the rest is the payload, encrypted by a real counterpart. What the payload checks
    refuse is a close event, never an exception."""
    from coalitiond.transport import framing as fr

    if not data:
        return
    with _fixed_ephemerals():
        initiator, responder = _session(True), _session(False)
        initiator.initiate()
        if data[0] % 2 == 0:  # message 2 forged by the responder's handshake state
            responder._hs.read_message(_frame_body(initiator.data_to_send()))
            forged = fr.encode_frame(fr.FRAME_HANDSHAKE, responder._hs.write_message(data[1:]))
            initiator.receive_data(forged)
            initiator.data_to_send()
            return
        # Message 3 forged by the initiator's handshake state after a real message 2.
        responder.receive_data(initiator.data_to_send())
        initiator._hs.read_message(_frame_body(responder.data_to_send()))
        forged = fr.encode_frame(fr.FRAME_HANDSHAKE, initiator._hs.write_message(data[1:]))
        responder.receive_data(forged)
        responder.data_to_send()


def _frame_body(stream: bytes) -> bytes:
    return stream[3:]


@cache
def _opened_pair() -> tuple[Any, Any]:
    """A deterministic pair of sessions after their handshake (built once)."""
    with _fixed_ephemerals():
        a, b = _session(True), _session(False)
        a.initiate()
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
        b.receive_data(a.data_to_send())
        return a, b


def _open_pair() -> tuple[Any, Any]:
    """A fresh copy of the opened pair: each input starts from the same state (a deep copy
    costs a third of a handshake)."""
    import copy

    pair: tuple[Any, Any] = copy.deepcopy(_opened_pair())
    return pair


def transport_frames(data: bytes) -> None:
    """After a completed handshake: byte 0 picks raw frames (header and body as they come)
    or transport records (each chunk of the rest encrypted by the real peer, so record
    kinds, message parts and close bodies are what is fuzzed). Refusals are close events."""
    from coalitiond.transport import framing as fr
    from coalitiond.transport.session import State

    if not data:
        return
    a, b = _open_pair()
    if b.state is not State.OPEN:
        raise Finding(f"the deterministic pair did not open: {b.state}")
    if data[0] % 2 == 0:
        for chunk in _split(data[1:]):
            b.receive_data(chunk)
        return
    for record in _split(data[1:]):
        if len(record) > fr.MAX_FRAME_BODY - 16:
            record = record[: fr.MAX_FRAME_BODY - 16]
        a._encrypt_record(record)
        b.receive_data(a.data_to_send())
    b.data_to_send()


# ---------------------------------------------------------------------- messages and records


def wire(data: bytes) -> None:
    """Client, sync and gossip messages (`node/wire.py`): a RemoteError or a message that
    encodes again."""
    from coalitiond.node import wire as w

    try:
        message = w.decode_message(data)
    except RemoteError:
        return
    w.encode_message(message)


@cache
def _committee() -> Any:
    from coalitiond.testing.chain import ChainBuilder

    return ChainBuilder(4, seed=7).committee


def consensus(data: bytes) -> None:
    """Consensus messages (`consensus/messages.py`): decoding and then verifying refuse with
    a RemoteError only; whatever decodes encodes again."""
    from coalitiond.consensus import messages as m

    committee = _committee()
    try:
        message = m.decode_message(committee, data)
    except RemoteError:
        return
    m.encode_message(committee, message)
    try:
        m.verify_message(committee, message)
    except RemoteError:
        return


def peer_record(data: bytes) -> None:
    """Signed peer records and departures (`transport/peer_record.py`): a RemoteError
    (PeerRecordError, EncodingError) or a record."""
    from coalitiond.transport.peer_record import parse_departure, parse_record

    for parse in (parse_record, parse_departure):
        with suppress(RemoteError):
            parse(data)


# ---------------------------------------------------------------------- read API queries


#: Every read-API route and one state read.
READ_ROUTES: Final = ("/v1/status", "/v1/checkpoint", "/v1/blocks", "/v1/entries",
                      "/v1/proof/inclusion", "/v1/proof/consistency", "/v1/evidence",
                      "/v1/state/entry", "/v1/state/since", "/v1/state/head",
                      "/v1/state/client_nonce", "/status")


@cache
def _read_app() -> tuple[Any, Any, Any]:
    """The read API over a real store of 3 certified blocks and a real feed executor."""
    from coalitiond.commands.envelope import Acl
    from coalitiond.components.executor import Executor
    from coalitiond.components.feed.component import Feed
    from coalitiond.log.sqlite import Store
    from coalitiond.testing.chain import ChainBuilder

    chain = ChainBuilder(4, seed=7)
    root = _scratch()
    store = Store.open(root / "log.sqlite3", chain.committee, signing_key=chain.keys[0])
    store.append_blocks([chain.next([b"cmd %d" % h]) for h in range(1, 4)])
    feed = Feed.from_params({"publishers": [chain.keys[0].public]})
    executor = Executor(chain.committee.committee_id, Acl.allow([chain.keys[0].public]), feed)
    return store, executor, chain.committee


def read_api_query(data: bytes) -> None:
    """A query string on every read route, through the real handlers (`OpsApp.route` with
    `ReadApi`, on a real store): the answer is never a 500, and the parameter layer
    (`parse_qs`, `_Params`, `parse_state_args`) raises only ValueError."""
    import trio

    from coalitiond.log.aio import AsyncStore
    from coalitiond.ops.http import OpsApp
    from coalitiond.ops.read_api import ReadApi, ReadSource, parse_state_args

    store, executor, committee = _read_app()
    raw = data[:5000]
    query = {k: v[-1] for k, v in parse_qs(raw.decode("latin-1"),
                                            keep_blank_values=True).items()}
    with suppress(ValueError):
        parse_state_args(query)

    async def ask() -> list[tuple[str, int, bytes]]:
        source = ReadSource(AsyncStore(store, trio.CapacityLimiter(1)), executor, committee,
                            status=dict, ready=lambda: True, diverged=lambda: None)
        local = ReadApi(source).install(OpsApp(status=dict, ready=lambda: True))
        out = []
        for route in READ_ROUTES:
            status, _, body = await local.route("GET", route, raw)
            out.append((route, status, body))
        return out

    for route, status, body in trio.run(ask):
        if status not in (200, 400, 404, 413, 414, 503):
            raise Finding(f"{route}?{raw[:200]!r}: status {status}: {body[:200]!r}")


# ---------------------------------------------------------------------- operator files


@cache
def _scratch() -> Path:
    """Where file targets write their input: `$COALITIOND_FUZZ_SCRATCH` (the campaign's work
    directory: libFuzzer ends the process without running atexit), else a directory of our
    own, memory-backed when the host has /dev/shm, removed at exit."""
    import atexit
    import os
    import shutil

    given = os.environ.get("COALITIOND_FUZZ_SCRATCH")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="coalitiond-fuzz-files-",
                                 dir=shm if shm.is_dir() else None))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def config(data: bytes) -> None:
    """A member configuration file (TOML) and a coalition file: a ConfigError (or another
    OperatorError naming the file) or a configuration."""
    from coalitiond.config import load_config
    from coalitiond.config.loader import load_coalition

    path = _scratch() / "member.toml"
    path.write_bytes(data)
    for load in (lambda p: load_config(p, check_key=False), load_coalition):
        with suppress(ConfigError, OperatorError):
            load(path)


def archive(data: bytes) -> None:
    """An archive file (`log/archive.py`): `verify_archive` refuses with AuditFailure (or
    ArchiveReadError), or verifies."""
    from coalitiond.log.archive import ArchiveReadError, read_header, verify_archive
    from coalitiond.log.audit import AuditFailure

    path = _scratch() / "fuzz.archive"
    path.write_bytes(data)
    for check in (verify_archive, read_header):
        with suppress(AuditFailure, ArchiveReadError):
            check(path)


#: Harness name -> target, in the order `make fuzz-smoke` runs them.
TARGETS: Final[dict[str, Target]] = {
    "cbor": cbor,
    "noise_handshake": noise_handshake,
    "noise_payloads": noise_payloads,
    "transport_frames": transport_frames,
    "wire": wire,
    "consensus": consensus,
    "peer_record": peer_record,
    "read_api_query": read_api_query,
    "config": config,
    "archive": archive,
}
