"""Proof bundles (docs/formats.md §7): `coalitiond prove` against a real committee's read API
makes a bundle that `coalitiond verify --bundle` accepts offline; every tampered copy, and
every forgery one member's key can make, is refused with the reason named."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import trio
from test_read_api import SUBMISSIONS, served_committee

from coalitiond.cli import main
from coalitiond.consensus.types import BlockHeader, Certificate, Vote, VoteKind
from coalitiond.integrator.answers import VerificationFailed
from coalitiond.integrator.bundle import (
    MAX_BUNDLE_BYTES,
    BadBundle,
    ProofBundle,
    verify_bundle,
)
from coalitiond.log.checkpoint import Checkpoint, split_note
from coalitiond.log.records import committee_record
from coalitiond.node.member import Member
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.merkle import leaf_hash

pytestmark = pytest.mark.live

Tamper = Callable[[ProofBundle], ProofBundle]


def _flip(b: bytes, at: int = -1) -> bytes:
    out = bytearray(b)
    out[at] ^= 0x01
    return bytes(out)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def _relink(headers: list[BlockHeader], start: int) -> list[BlockHeader]:
    """Headers after `start` re-chained to the (changed) header at `start`: what a forger
    does after changing one header."""
    out = list(headers)
    for k in range(start + 1, len(out)):
        out[k] = replace(out[k], parent=out[k - 1].digest)
    return out


def _forge_root(b: ProofBundle, key: SigningKey, signers: list[tuple[int, SigningKey]]
                ) -> ProofBundle:
    """Member 0's forgery: a false (size, root) in the note (signed with its own key), in the
    certifier header, the chain re-linked, and a finalization signed by `signers`."""
    cp = Checkpoint.parse_text(split_note(b.note)[0])
    false_root = bytes(32)
    k = next(i for i, h in enumerate(b.headers) if h.height == b.certifier)
    headers = list(b.headers)
    headers[k] = replace(headers[k], log_root=false_root)
    headers = _relink(headers, k)
    last = headers[-1]
    votes = [Vote.sign(sk, b.committee, i, VoteKind.FINALIZE, last.view, last.digest)
             for i, sk in signers]
    return replace(b, note=replace(cp, root=false_root).sign(key), headers=tuple(headers),
                   finalization=Certificate.from_votes(votes))


async def test_a_bundle_from_a_live_committee_verifies_offline_and_tampering_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with served_committee(tmp_path) as s:
        config = str(s.committee.configs[0])
        last = len(SUBMISSIONS) - 1   # one log entry per envelope
        await _log_certified_through(s.member, max(o.height for o in s.outcomes))
        for index in (0, last):
            out = tmp_path / f"entry-{index}.bundle"
            argv = ("prove", "--url", s.base_url, "--config", config, "--index", str(index),
                    "--out", str(out))
            code, line = await trio.to_thread.run_sync(partial(_cli, capsys, *argv))
            assert code == 0, line
            assert f"OK: entry {index} " in line
        code, line = await trio.to_thread.run_sync(partial(
            _cli, capsys, "prove", "--url", s.base_url, "--config", config, "--index",
            "100000", "--out", str(tmp_path / "never.bundle")))
        assert code == 1 and "not in the newest certified checkpoint" in line, line
        assert not (tmp_path / "never.bundle").exists()
    # Offline from here: the committee is gone. A member that cannot be reached is the
    # operator's problem (exit 2), not a failed check.
    code, _ = _cli(capsys, "prove", "--url", s.base_url, "--config", config, "--index", "0",
                   "--out", str(tmp_path / "never.bundle"))
    assert code == 2 and not (tmp_path / "never.bundle").exists()
    _offline_checks(tmp_path, s.spec, s.committee.keys, capsys)


async def _log_certified_through(member: Member, height: int) -> None:
    """Wait until a stored block commits to the log as of `height` (blocks carry the roots
    of a height already executed, so the newest checkpoint lags the head)."""
    assert member.store is not None
    while True:
        head = member.height
        if await member.store.run(lambda s: s.block(s.height).executed_height) >= height:
            return
        await member.wait_until(lambda m, head=head: m.height > head)


def _offline_checks(tmp_path: Path, spec: CommitteeSpec, keys: list[SigningKey],
                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "entry-0.bundle"
    data = path.read_bytes()
    good = verify_bundle(data, spec.committee_id)
    b = good.bundle
    assert (b.index, good.position) == (0, 0)
    assert good.certifier.roots.log_root == good.checkpoint.root
    assert len(b.finalization.signatures) >= spec.quorum

    # The CLI: one line saying what was proved; pinned by id or by config; exit codes.
    code, line = _cli(capsys, "verify", "--bundle", str(path), "--committee-id",
                      spec.committee_id.hex())
    assert code == 0 and line.count("\n") == 1 and ": OK: entry 0 " in line, line
    assert f"committee {spec.committee_id.hex()}" in line and "not pinned" not in line
    code, line = _cli(capsys, "verify", "--bundle", str(path))
    assert code == 0 and "committee not pinned" in line
    code, line = _cli(capsys, "verify", "--bundle", str(tmp_path / "entry-0.bundle"),
                      "--committee-id", "ab" * 32)
    assert code == 1 and "FAILED: committee: the bundle is for committee" in line
    code, line = _cli(capsys, "verify", "--bundle", str(tmp_path / "missing.bundle"))
    assert code == 2

    other = CommitteeSpec(spec.network_name, spec.component_kind, spec.component_name,
                          (*(k.public for k in keys[1:]), SigningKey.generate().public),
                          spec.fault_bound, spec.epoch, spec.component_config_digest)
    cert = b.finalization
    q_minus_one = replace(cert, signatures=cert.signatures[:spec.quorum - 1])
    bad_sig = replace(cert, signatures=((cert.signatures[0][0],
                                         _flip(cert.signatures[0][1])),
                                        *cert.signatures[1:]))
    doubled = replace(cert, signatures=tuple((i, cert.signatures[0][1])
                                             for i, _ in cert.signatures))
    k_cert = next(i for i, h in enumerate(b.headers) if h.height == b.certifier)
    certifier_root_changed = list(b.headers)
    certifier_root_changed[k_cert] = replace(b.headers[k_cert], log_root=bytes(32))
    cp = Checkpoint.parse_text(split_note(b.note)[0])
    outsider = SigningKey.generate()

    e = b.entry_header
    invented = encode(["entry", 1, e.epoch, e.height, e.digest, 0, b"invented command"])
    own_tree = replace(cp, size=1, root=leaf_hash(invented)).sign(keys[0])
    cases: list[tuple[str, Tamper, str]] = [
        # The forgery a single member's key makes: its own tree, holding an invented entry,
        # signed in a note on top of the real chain and quorum finalization. Everything but
        # the certified root verifies; the certifier block refuses it.
        ("a member's note over its own tree with an invented entry",
         lambda x: replace(x, index=0, leaf=invented, proof=(), note=own_tree),
         "the note says size 1 .* commits to size"),
        ("flip a proof hash", lambda x: replace(x, proof=(_flip(x.proof[0]), *x.proof[1:])),
         "inclusion proof does not lead to the certified root"),
        ("swap the entry for another", lambda x: replace(
            x, leaf=verify_bundle((tmp_path / f"entry-{len(SUBMISSIONS) - 1}.bundle")
                                  .read_bytes()).bundle.leaf),
         "inclusion proof does not lead"),
        ("another index", lambda x: replace(x, index=x.index + 1),
         "inclusion proof does not lead"),
        ("an index beyond the tree", lambda x: replace(x, index=10**6),
         "outside the certified tree"),
        ("drop a certificate signature (q - 1 left)",
         lambda x: replace(x, finalization=q_minus_one),
         f"signatures, quorum is {spec.quorum}"),
        ("a certificate signature that does not verify",
         lambda x: replace(x, finalization=bad_sig), "does not verify"),
        ("one member's signature under every index",
         lambda x: replace(x, finalization=doubled), "does not verify"),
        ("the certifier's log root changed",
         lambda x: replace(x, headers=tuple(certifier_root_changed)),
         "does not link|is not a finalize certificate"),
        ("the certifier's root changed, the chain re-linked",
         lambda x: replace(x, headers=tuple(_relink(certifier_root_changed, k_cert))),
         "is not a finalize certificate|does not verify"),
        ("a false root in the note, signed by a member",
         lambda x: replace(x, note=replace(cp, root=bytes(32)).sign(keys[0])),
         "the note says size .* the finalised block .* commits to size"),
        ("a false size in the note, signed by a member",
         lambda x: replace(x, note=replace(cp, size=cp.size + 1).sign(keys[1])),
         "commits to size"),
        ("a note signed by no member",
         lambda x: replace(x, note=cp.sign(outsider)), "no signature of a committee member"),
        ("a note of another height",
         lambda x: replace(x, note=replace(cp, height=cp.height + 1).sign(keys[0])),
         r"headers\[0\]: is not the block the note names"),
        ("the note's block swapped for another header, the note re-signed to name it",
         lambda x: replace(x, headers=(replace(x.headers[0], proposer=x.headers[0].proposer
                                               + 1), *x.headers[1:]),
                           note=replace(cp, block_digest=replace(
                               x.headers[0], proposer=x.headers[0].proposer + 1).digest)
                           .sign(keys[0])),
         r"headers\[1\]: block .* does not link to block"),
        ("no certifier among the headers", lambda x: replace(x, certifier=cp.height),
         "would rest on one member's signature"),
        ("the last header dropped", lambda x: replace(x, headers=x.headers[:-1]),
         "is not a finalize certificate|would rest on one member"),
        ("another block's header for the entry",
         lambda x: replace(x, entry_header=x.headers[-1]),
         "entry header: is not the block the entry names"),
        ("another committee's config", lambda x: replace(x, committee=other),
         "checkpoint of committee .* expected"),
        ("one member forges root, chain and a certificate of its own signature",
         lambda x: _forge_root(x, keys[0], [(0, keys[0])]),
         f"1 signatures, quorum is {spec.quorum}"),
        ("one member forges with q - 1 colluders short of quorum",
         lambda x: _forge_root(x, keys[0], list(enumerate(keys))[:spec.quorum - 1]),
         f"signatures, quorum is {spec.quorum}"),
    ]
    for name, tamper, reason in cases:
        with pytest.raises(VerificationFailed) as refused:
            verify_bundle(tamper(b).encode())
        assert re.search(reason, str(refused.value)), (name, str(refused.value))

    # Byte-level damage: refused before anything is interpreted.
    byte_cases: list[tuple[str, bytes, str]] = [
        ("truncated file", data[:-7], "not deterministic CBOR"),
        ("empty file", b"", "not deterministic CBOR"),
        ("oversize file", data + bytes(MAX_BUNDLE_BYTES), "exceeds"),
        ("trailing bytes", data + b"\x00", "not deterministic CBOR"),
        ("another type tag", encode(["archive", 1, *decode(data)[2:]]),
         "not a proof bundle"),
        ("a field missing", encode(decode(data)[:-1]), "not a proof bundle"),
        ("a header that is not a header", encode([*decode(data)[:7], [b"x"],
                                                  *decode(data)[8:]]),
         r"headers\[0\]"),
        ("a committee record of the wrong shape",
         encode([*decode(data)[:2], ["committee", 1], *decode(data)[3:]]), "committee:"),
    ]
    for name, raw, reason in byte_cases:
        with pytest.raises(BadBundle) as refused:
            verify_bundle(raw)
        assert re.search(reason, str(refused.value)), (name, str(refused.value))

    # The CLI refuses with the reason on one line, exit 1.
    for name, raw in (("truncated", data[:-7]), ("oversize", data + bytes(MAX_BUNDLE_BYTES)),
                      ("forged", _forge_root(b, keys[0], [(0, keys[0])]).encode())):
        bad = tmp_path / f"{name}.bundle"
        bad.write_bytes(raw)
        code, line = _cli(capsys, "verify", "--bundle", str(bad))
        assert code == 1 and line.count("\n") == 1 and ": FAILED: " in line, (name, line)
    # The bundle's own committee record is what it is for: pinning another id refuses it.
    assert committee_record(b.committee) == committee_record(spec)
