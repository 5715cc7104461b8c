"""Export and offline verification: round trip through the CLI, every tampering named,
`--against` divergence reports."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coalitiond.cli import main
from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import Block, Certificate, Vote, VoteKind
from coalitiond.log import EvidenceRecord, Store, StoreCorrupt, entry_leaf
from coalitiond.log.archive import MAGIC, verify_archive
from coalitiond.log.checkpoint import Checkpoint, key_name, sign_note, split_note
from coalitiond.log.records import entry_leaves
from coalitiond.primitives.encoding import decode, encode
from coalitiond.testing.chain import ChainBuilder
from coalitiond.verify import inclusion_proof, verify_checkpoint, verify_inclusion

HEIGHTS = 6


def _evidence(chain: ChainBuilder) -> EvidenceRecord:
    """Member 3 notarised two blocks in view 2: the evidence every archive carries."""
    a, b = (Statement(SignedKind.NOTARIZE, d, sign_statement(
        chain.keys[3], chain.committee, SignedKind.NOTARIZE, 2, d))
        for d in (b"\x01" * 32, b"\x02" * 32))
    return EvidenceRecord.of(Evidence.build(chain.committee, 2, 3, a, b))


def _build(d: Path, chain: ChainBuilder, member: int, items: list[Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with Store.open(d / "log.sqlite3", chain.committee, signing_key=chain.keys[member]) as s:
        s.append_blocks(items)
        s.record_event(evidence=[_evidence(chain)])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("archives")
    chain = ChainBuilder(5)
    items = [chain.next([b"cmd %d.%d" % (h, i) for i in range(h % 3 + 1)])
             for h in range(1, HEIGHTS + 1)]
    _build(root / "a", chain, 0, items)
    _build(root / "prefix", chain, 2, items[:4])
    # A fork at height 5, same view: members 1..3 signed both sides (equivocation).
    alt = chain.block([b"the other history"], parent=items[3].block, view=items[4].block.view)
    _build(root / "fork", chain, 1,
           [*items[:4], chain.certify(alt, signers=[1, 2, 3, 4], all_votes=False)])
    for name in ("a", "prefix", "fork"):
        assert main(["export", "--data-dir", str(root / name), "--out",
                     str(root / f"{name}.arc")]) == 0
    return {"root": root, "chain": chain, "items": items, "a": root / "a.arc"}


def _frames(path: Path) -> list[Any]:
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    pos, out = len(MAGIC), []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append(decode(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def _write(path: Path, frames: list[Any], *, fix_end: bool = True) -> Path:
    body = bytearray(MAGIC)
    for f in frames[:-1]:
        data = encode(f)
        body += struct.pack(">I", len(data)) + data
    end = list(frames[-1])
    if fix_end:
        end[4] = hashlib.sha256(bytes(body)).digest()
    data = encode(end)
    path.write_bytes(bytes(body) + struct.pack(">I", len(data)) + data)
    return path


def test_export_and_verify_round_trip(world: dict[str, Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--archive", str(world["a"])]) == 0
    out = capsys.readouterr().out
    c = world["chain"].committee
    assert f"{world['a']}: OK: committee {c.committee_id.hex()} (feed/feed-test, epoch 0, n=5, " \
           f"q=4); heights 1..{HEIGHTS}, 12 entries" in out
    assert "1 evidence; checkpoints signed by member 0" in out
    assert main(["verify", "--archive", str(world["a"]), "--committee-id",
                 c.committee_id.hex()]) == 0
    rep = verify_archive(world["a"])
    assert rep.summary.signatures_checked == HEIGHTS * (4 + 10)


def test_an_integrator_checks_one_entry_from_the_archive(world: dict[str, Any]) -> None:
    frames = _frames(world["a"])
    blocks = [f for f in frames if f[0] == "block"]
    # A record carries each command once; the entry leaves are derived from the block.
    assert all(f[1] == 2 and len(f) == 7 for f in blocks)
    leaves = [e for b in blocks for e in entry_leaves(Block.decode(b[2]))]
    cp = verify_checkpoint(blocks[-1][6], world["chain"].keys[0].public)
    assert cp.size == len(leaves) and cp.height == HEIGHTS
    proof = inclusion_proof(leaves, 5)
    assert verify_inclusion(leaves[5], 5, cp.size, proof, cp.root)
    # The finalize certificate beside the checkpoint says a quorum finalised that block.
    Certificate.decode(blocks[-1][3]).verify(world["chain"].committee)


def _mutate_block(h: int, fn: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
    def apply(frames: list[Any]) -> None:
        fn(frames[h])  # frames[0] is the header, so frames[h] is height h
    return apply


def _resign(world: dict[str, Any], frame: list[Any], **changes: Any) -> None:
    """Re-sign a block's checkpoint with the exporting member's real key, changed."""
    cp = Checkpoint.parse_text(split_note(frame[6])[0])
    fields = {**{k: getattr(cp, k) for k in ("size", "root", "committee_id", "epoch", "height",
                                               "block_digest")}, **changes}
    frame[6] = Checkpoint(**fields).sign(world["chain"].keys[0])


def _forge_vote(frame: list[Any]) -> None:
    frame[5][-1][7] = bytes(64)


def _drop_cert_sig(frame: list[Any]) -> None:
    cert = decode(frame[3])
    cert[6] = cert[6][:3]
    frame[3] = encode(cert)


def _bad_cert_sig(frame: list[Any]) -> None:
    cert = decode(frame[3])
    cert[6][1][1] = cert[6][0][1]
    frame[3] = encode(cert)


def _other_signer(world: dict[str, Any]) -> Callable[[list[Any]], None]:
    def apply(frame: list[Any]) -> None:
        text, _ = split_note(frame[6])
        other = world["chain"].keys[1]
        frame[6] = sign_note(text, key_name(Checkpoint.parse_text(text).origin, other.public),
                             other)
    return apply


def _notarized_only(frame: list[Any]) -> None:
    notes = [Vote.from_wire(v) for v in frame[5] if v[2] == int(VoteKind.NOTARIZE)]
    frame[3], frame[4] = None, Certificate.from_votes(notes[:4]).encode()


def _no_certificate(frame: list[Any]) -> None:
    frame[3], frame[4] = None, None


def _legacy(frame: list[Any]) -> None:
    """Rewrite a record in the schema-1 layout, entries carried beside the block."""
    leaves = entry_leaves(Block.decode(frame[2]))
    frame[:] = ["block", frame[2], frame[3], frame[4], frame[5], leaves, frame[6]]


def _legacy_then(fn: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
    def apply(frame: list[Any]) -> None:
        _legacy(frame)
        fn(frame)
    return apply


CASES: list[tuple[str, Any, str]] = [
    ("schema-1 entry", _mutate_block(2, _legacy_then(
        lambda f: f[5].__setitem__(1, f[5][1] + b"!"))),
     r"height 2: block record does not decode: block record \(schema 1\): its entries are not "
     r"the block's entry leaves"),
    ("schema-1 missing entry", _mutate_block(2, _legacy_then(lambda f: f[5].pop())),
     r"height 2: block record does not decode: block record \(schema 1\): its entries are not "
     r"the block's entry leaves"),
    ("unknown record schema", _mutate_block(2, lambda f: f.__setitem__(1, 3)),
     r"height 2: block record does not decode: block record: schema 3, this coalitiond reads "
     r"2 \(and 1\)"),
    ("command", _mutate_block(2, lambda f: f.__setitem__(2, f[2].replace(b"cmd 2.1", b"cmd 2.X"))),
     r"height 2: finalize certificate is for view 2 digest [0-9a-f]{16}, not this block"),
    ("cert below quorum", _mutate_block(3, _drop_cert_sig),
     "height 3: finalize certificate: certificate has 3 signatures, quorum is 4"),
    ("cert bad signature", _mutate_block(3, _bad_cert_sig),
     r"height 3: finalize certificate: certificate signature of member 1 does not verify "
     r"\(finalize, view 3\)"),
    ("forged vote", _mutate_block(4, _forge_vote),
     "height 4: finalize vote of member 4 does not verify"),
    ("no certificate at the end", _mutate_block(HEIGHTS, _no_certificate),
     f"height {HEIGHTS}: never finalised: no finalize certificate at or after height {HEIGHTS}"),
    ("never finalised", _mutate_block(HEIGHTS, _notarized_only),
     f"height {HEIGHTS}: never finalised: no finalize certificate at or after "
     f"height {HEIGHTS}"),
    ("block missing", lambda fr: fr.pop(2),
     "height 2: block says height 3; the log is not contiguous"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_named(world: dict[str, Any], tmp_path: Path, name: str, mutate: Any,
                            message: str, capsys: pytest.CaptureFixture[str]) -> None:
    frames = _frames(world["a"])
    mutate(frames)
    bad = _write(tmp_path / "bad.arc", frames)
    assert main(["verify", "--archive", str(bad)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{bad}: FAILED: ")
    import re

    assert re.fullmatch(message, out.removeprefix(f"{bad}: FAILED: ")), out


def test_checkpoint_problems_are_named(world: dict[str, Any], tmp_path: Path) -> None:
    from coalitiond.log import AuditFailure

    cases: list[tuple[Callable[[list[Any]], None], str]] = [
        (lambda f: _resign(world, f, root=b"\x00" * 32),
         r"^height 5: checkpoint root 0000000000000000 is not the Merkle root of the entries "
         r"\([0-9a-f]{16}\)$"),
        (lambda f: _resign(world, f, size=3),
         "^height 5: checkpoint tree size 3, the log has 11 entries$"),
        (lambda f: _resign(world, f, height=9),
         "^height 5: checkpoint names another committee, epoch, height or block$"),
        (_other_signer(world),
         r"^height 5: checkpoint: note carries no signature by coalitiond/[0-9a-f]{64}/"
         + world["chain"].keys[0].public.hex() + "$"),
        (lambda f: f.__setitem__(6, f[6] + "\u2014 x AAAA\n"),
         r"^height 5: checkpoint: note signature line 2: too short$"),
    ]
    for mutate, message in cases:
        frames = _frames(world["a"])
        mutate(frames[5])
        bad = _write(tmp_path / "cp.arc", frames)
        with pytest.raises(AuditFailure, match=message):
            verify_archive(bad)


def test_file_level_damage_is_named(world: dict[str, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from coalitiond.log import AuditFailure

    data = world["a"].read_bytes()
    (tmp_path / "t.arc").write_bytes(data[:-10])
    with pytest.raises(AuditFailure, match=r"^archive truncated inside frame 8$"):
        verify_archive(tmp_path / "t.arc")
    (tmp_path / "m.arc").write_bytes(b"x" + data[1:])
    with pytest.raises(AuditFailure, match=r"^not a coalitiond archive \(bad magic line\)$"):
        verify_archive(tmp_path / "m.arc")
    (tmp_path / "x.arc").write_bytes(data + b"\x00")
    with pytest.raises(AuditFailure, match=r"^bytes after the archive's end record$"):
        verify_archive(tmp_path / "x.arc")
    # Evidence is not signed by the archive, only covered by the end record's digest.
    frames = _frames(world["a"])
    frames[-2][5] = b"evidence?"
    bad = _write(tmp_path / "e.arc", frames, fix_end=False)
    with pytest.raises(AuditFailure, match=r"^archive end record disagrees with its contents"):
        verify_archive(bad)
    frames = _frames(world["a"])
    frames[0][2][5] = [frames[0][2][5][0]] * 5
    with pytest.raises(AuditFailure, match=r"^archive header: committee record: committee lists "
                       r"a member twice$"):
        verify_archive(_write(tmp_path / "h.arc", frames))
    other = ChainBuilder(5, name="other").committee.committee_id.hex()
    assert main(["verify", "--archive", str(world["a"]), "--committee-id", other]) == 1
    assert capsys.readouterr().out.strip().endswith(f"FAILED: archive is for committee "
                                                    f"{world['chain'].committee.committee_id.hex()}"
                                                    f", expected {other}")
    assert main(["verify", "--archive", str(world["a"]), "--committee-id", "abc"]) == 2
    assert "coalitiond: error: --committee-id must be 64 hex characters" in \
        capsys.readouterr().err
    assert main(["verify", "--archive", str(tmp_path / "none.arc")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"coalitiond: error: {tmp_path / 'none.arc'}: cannot read the archive: No such file or "
        f"directory")


def test_against_reports_prefix_and_divergence(world: dict[str, Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = world["root"]
    assert main(["verify", "--archive", str(world["a"]), "--against",
                 str(root / "prefix.arc")]) == 0
    out = capsys.readouterr().out
    assert (f"consistent: the archives agree on heights 1..4 (8 entries); {world['a']} ends at "
            f"{HEIGHTS}, {root / 'prefix.arc'} at 4 ({root / 'prefix.arc'} is a prefix of "
            f"{world['a']})") in out
    assert main(["verify", "--archive", str(world["a"]), "--against",
                 str(root / "fork.arc")]) == 1
    out = capsys.readouterr().out
    items = world["items"]
    assert "DIVERGED at height 5: the archives agree on heights 1..4 (8 entries)" in out
    assert (f"{world['a']}: block {items[4].block.digest.hex()} (view 5); valid finalize "
            f"signatures from members [0, 1, 2, 3, 4], notarize from [0, 1, 2, 3, 4]") in out
    assert "valid finalize signatures from members [1, 2, 3, 4], notarize from []" in out
    assert ("members whose signatures stand behind both sides: [1, 2, 3, 4] "
            "(same view: equivocation)") in out
    assert f"{root / 'fork.arc'}: OK" in out  # each side is internally valid


def test_export_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         world: dict[str, Any]) -> None:
    assert main(["export", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o.arc")]) == 2
    assert "log.sqlite3: no store here" in capsys.readouterr().err
    cfg = tmp_path / "member.toml"
    cfg.write_text("[node]\nkey = 'k'\n")
    out = tmp_path / "with-config.arc"
    assert main(["export", "--data-dir", str(world["root"] / "a"), "--out", str(out),
                 "--config", str(cfg)]) == 0
    assert _frames(out)[0][4] == "[node]\nkey = 'k'\n"
    assert verify_archive(out).header.config_text == "[node]\nkey = 'k'\n"
    assert main(["export", "--data-dir", str(world["root"] / "a"), "--out", str(out),
                 "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: cannot read the config file" in capsys.readouterr().err


def test_export_refuses_a_damaged_store(world: dict[str, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    d = tmp_path / "damaged"
    d.mkdir()
    shutil.copyfile(world["root"] / "a" / "log.sqlite3", d / "log.sqlite3")
    data = bytearray((d / "log.sqlite3").read_bytes())
    body = world["items"][1].block.encode()
    at = data.find(body)
    data[at + 40] ^= 1
    (d / "log.sqlite3").write_bytes(bytes(data))
    assert main(["export", "--data-dir", str(d), "--out", str(tmp_path / "o.arc")]) == 2
    err = capsys.readouterr().err
    assert "store damaged (table blocks, height 2): stored digest does not match" in err
    assert not (tmp_path / "o.arc").exists() and not (tmp_path / "o.arc.tmp").exists()
    with pytest.raises(StoreCorrupt), Store.open(d / "log.sqlite3", read_only=True) as s:
        s.audit()
    # `verify --data-dir` names the damage as a failed check (exit 1).
    assert main(["verify", "--data-dir", str(d)]) == 1
    assert capsys.readouterr().out.strip() == (
        f"{d / 'log.sqlite3'}: FAILED: stored digest does not match the block bytes "
        f"(table blocks, height 2)")
    assert main(["verify", "--data-dir", str(world["root"] / "a")]) == 0
    assert f"{world['root'] / 'a' / 'log.sqlite3'}: OK: committee " in capsys.readouterr().out
    assert main(["verify", "--data-dir", str(d), "--against", str(world["a"])]) == 2
    assert capsys.readouterr().err.strip() == (
        "coalitiond: error: --against compares archives: use it with --archive")


def test_vote_helpers_agree_with_the_archive(world: dict[str, Any]) -> None:
    b = world["items"][0].block
    frames = _frames(world["a"])
    votes = [Vote.from_wire(v) for v in frames[1][5]]
    assert {(v.kind, v.signer) for v in votes} >= {(VoteKind.FINALIZE, i) for i in range(5)}
    assert entry_leaves(Block.decode(frames[1][2]))[0] == entry_leaf(b, 0)


def test_a_version_1_archive_with_schema_1_records_still_verifies(
        world: dict[str, Any], tmp_path: Path) -> None:
    """Archives written before records stopped carrying entries are still read: each
    schema-1 record's entries must be exactly its block's leaves (the tampering cases)."""
    frames = _frames(world["a"])
    assert frames[0][1] == 2
    frames[0][1] = 1
    for f in frames:
        if f[0] == "block":
            _legacy(f)
    old = _write(tmp_path / "v1.arc", frames)
    assert verify_archive(old).summary == verify_archive(world["a"]).summary


def test_framing_refusals_are_named(world: dict[str, Any], tmp_path: Path) -> None:
    from coalitiond.log import AuditFailure

    frames = _frames(world["a"])

    def check(fs: list[Any], message: str) -> None:
        with pytest.raises(AuditFailure, match=message):
            verify_archive(_write(tmp_path / "f.arc", fs))

    check([["header", 3, *frames[0][2:]], *frames[1:]],
          r"^archive format version 3, this coalitiond reads 1, 2$")
    check([["header", 1], *frames[1:]],
          r'^archive header: expected \["header", version, committee, signer, config\]$')
    check([[*frames[0][:3], b"\x01" * 32, None], *frames[1:]],
          r"^checkpoint signer 0101010101010101010101010101010101010101010101010101010101010101 "
          r"is not a committee member$")
    check([[*frames[0][:4], 7], *frames[1:]], r"^archive header: config must be text or null$")
    check([frames[0], ["blob"], *frames[1:]], r"^unknown archive record type 'blob'$")
    check([frames[0], [1, 2], *frames[1:]], r"^archive frame 1 has no record type$")
    check([frames[0], ["block", b"x"], *frames[1:]],
          r'^height 1: block record does not decode: block record: expected \["block", \.\.\.7 '
          r"items\]$")
    check([*frames[:-2], ["evidence", 1], frames[-1]], r"^evidence record 0 is malformed$")
    check([frames[0], frames[-2], *frames[1:-2], frames[-1]],
          r"^block record after evidence records$")
    data = bytearray(world["a"].read_bytes())
    bad = tmp_path / "big.arc"
    bad.write_bytes(bytes(data[:len(MAGIC)]) + struct.pack(">I", 2**31) + b"\x00" * 8)
    with pytest.raises(AuditFailure, match=r"^archive frame 0 claims 2147483648 bytes "
                       r"\(max 33554432\)$"):
        verify_archive(bad)
    bad.write_bytes(bytes(data[:len(MAGIC)]) + struct.pack(">I", 1) + b"\x1f")
    with pytest.raises(AuditFailure, match=r"^archive frame 0 is not deterministic CBOR: "):
        verify_archive(bad)
