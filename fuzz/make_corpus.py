"""Write the seed corpus `fuzz/corpus/<harness>/` (committed; run again after a format change):

    python -m fuzz.make_corpus

Every seed is a valid (or nearly valid) input of its harness, built from the real encoders
with fixed keys, so the fuzzer starts from the accepted paths instead of only the refusals.
Deterministic: the same files on every run. Small: the largest is a few kB.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fuzz.targets import _committee, _fixed_ephemerals, _identities, _session

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _write(corpus: dict[str, list[bytes]]) -> None:
    for name, seeds in corpus.items():
        d = HERE / "corpus" / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for seed in seeds:
            (d / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def _cbor() -> list[bytes]:
    from coalitiond.primitives.encoding import encode
    from coalitiond.testing.chain import ChainBuilder

    chain = ChainBuilder(4, seed=7)
    item = chain.next([b"cmd"])
    values: list[Any] = [0, 23, 24, 255, 256, 65535, 65536, (1 << 32), (1 << 64) - 1, -1, -(1 << 64),
                         b"", b"\x00" * 24, "", "text", "ü", [], [1, [2, [3]]], {},
                         {"a": 1, "b": [b"x"]}, {1: "one", 2: "two"}, True, False, None,
                         item.block.to_wire()]
    return [encode(v) for v in values]


def _noise() -> tuple[list[bytes], list[bytes], list[bytes]]:
    from coalitiond.transport import framing as fr

    def chunks(*parts: bytes) -> bytes:
        return b"".join(len(p).to_bytes(2, "big") + p for p in parts)

    with _fixed_ephemerals():
        a, b = _session(True), _session(False)
        a.initiate()
        m1 = a.data_to_send()
        b.receive_data(m1)
        m2 = b.data_to_send()
        a.receive_data(m2)
        m3 = a.data_to_send()
    handshake = [chunks(m1), chunks(m2), chunks(m1[:10], m1[10:]), chunks(m1, m3)]
    with _fixed_ephemerals():
        a, b = _session(True), _session(False)
        payloads = [b"\x00" + b._proof(), b"\x01" + a._proof(), b"\x00", b"\x01"]
    records = [bytes((fr.REC_MSG_END,)) + b"hello", bytes((fr.REC_PING,)),
               bytes((fr.REC_MSG_PART,)) + b"x" * 40,
               bytes((fr.REC_CLOSE,)) + fr.encode_close_body(fr.CloseReason.SHUTDOWN, "bye")]
    frames = [b"\x01" + chunks(*records[:3]), b"\x01" + chunks(records[2], records[0]),
              b"\x01" + chunks(records[3]),
              b"\x00" + chunks(fr.encode_frame(fr.FRAME_TRANSPORT, b"\x00" * 32)),
              b"\x00" + chunks(fr.encode_frame(fr.FRAME_CLOSE_NOTICE,
                                               fr.encode_close_body(fr.CloseReason.SHUTDOWN,
                                                                    "x")))]
    return handshake, payloads, frames


def _wire() -> list[bytes]:
    from coalitiond.node import wire as w
    from coalitiond.testing.chain import ChainBuilder

    chain = ChainBuilder(4, seed=7)
    item = chain.next([b"cmd"])
    from coalitiond.log.records import FinalizedBlock

    fb = FinalizedBlock(item.block, item.finalization, None, tuple(item.votes), "")
    messages: list[Any] = [
        w.Submit(1, b"envelope"), w.Submitted(2, b"\x01" * 32, True, None),
        w.Submitted(3, b"\x02" * 32, False, "refused: why"),
        w.Outcome(4, 5, 6, (["applied", None, None, 0],)), w.BlocksRequest(7, 1, 64, True),
        w.Blocks(8, 9, (fb,)), w.StatusRequest(10), w.Status(11, {"height": 3}),
        w.Refused(12, "no"), w.GossipEnvelopes((b"e1", b"e2")), w.GossipObservation(b"obs"),
    ]
    out = []
    for m in messages:
        try:
            out.append(w.encode_message(m))
        except Exception as e:  # a seed the encoder refuses is left out, loudly
            print(f"make_corpus: wire seed {type(m).__name__} left out: {e}")
    return out


def _consensus() -> list[bytes]:
    from coalitiond.consensus import messages as m
    from coalitiond.consensus.types import Certificate, VoteKind
    from coalitiond.testing.chain import ChainBuilder

    chain = ChainBuilder(4, seed=7)
    committee = _committee()
    block = chain.block([b"cmd"])
    votes = chain.votes(block, VoteKind.NOTARIZE)
    cert = Certificate.from_votes(chain.votes(block, VoteKind.FINALIZE, [0, 1, 2]))
    msgs: list[Any] = [m.Proposal.sign(chain.keys[block.proposer], committee, block),
                       votes[0], m.Finalization(cert, None), m.Finalization(cert, block),
                       m.SyncRequest(3), m.NullificationsRequest(1, 4), m.RecallRequest(),
                       m.RecallAnswer(1, ())]
    msgs.append(msgs[0].header)
    return [m.encode_message(committee, x) for x in msgs]


def _peer_records() -> list[bytes]:
    from coalitiond.transport.peer_record import Departure

    a, _, net, rec_a, rec_b = _identities()
    out = [rec_a, rec_b]
    try:
        out.append(Departure(a.public, net, 1, 2, 1_700_000_100).sign(a))
    except TypeError as e:
        print(f"make_corpus: departure seed left out: {e}")
    return out


def _queries() -> list[bytes]:
    return [b"", b"from=1&limit=2", b"from=0&limit=256&size=3&format=cbor", b"index=1&size=3",
            b"old=1&new=3", b"height=1", b"from=9223372036854775807", b"wait=1&index=0",
            b"args=a165696e64657800", b"client=0x" + b"00" * 32, b"format=json&from=1&from=2"]


def _configs() -> list[bytes]:
    from coalitiond.cli.devnet import generate_devnet

    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("feed", "atlas"):
            paths = generate_devnet(3, kind, Path(tmp) / kind, 7400)
            seeds.append(paths[0].read_bytes())
    for path in sorted((REPO / "configs").glob("*.toml")):
        if path.stat().st_size <= 8192:
            seeds.append(path.read_bytes())
    return seeds


def _archives() -> list[bytes]:
    from coalitiond.cli import main
    from coalitiond.log.sqlite import Store
    from coalitiond.testing.chain import ChainBuilder

    chain = ChainBuilder(4, seed=7)
    items = [chain.next([b"cmd %d" % h]) for h in range(1, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "data"
        d.mkdir()
        with Store.open(d / "log.sqlite3", chain.committee, signing_key=chain.keys[0]) as s:
            s.append_blocks(items)
        out = Path(tmp) / "a.archive"
        if main(["export", "--data-dir", str(d), "--out", str(out)]) != 0:
            raise SystemExit("make_corpus: export failed")
        return [out.read_bytes()]


def main() -> None:
    handshake, payloads, frames = _noise()
    _write({"cbor": _cbor(), "noise_handshake": handshake, "noise_payloads": payloads,
            "transport_frames": frames, "wire": _wire(), "consensus": _consensus(),
            "peer_record": _peer_records(), "read_api_query": _queries(),
            "config": _configs(), "archive": _archives()})
    for d in sorted((HERE / "corpus").iterdir()):
        files = list(d.iterdir())
        print(f"make_corpus: {d.name}: {len(files)} seeds, "
              f"{sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
