"""`coalitiond.client` against a real committee's read API: everything it returns verified
against the committee alone, and every tampered answer refused with the failure named.

Tampering goes through `httpx.MockTransport`: each request is forwarded to the real member,
and the real (CBOR) answer is decoded, changed, re-encoded and handed to the client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_read_api import SUBMISSIONS, Served, served_committee

from coalitiond.client import (
    ApiError,
    AsyncCoalitionClient,
    BadBlocks,
    BadCertificate,
    BadCheckpoint,
    BadConsistencyProof,
    BadEvidence,
    BadInclusionProof,
    BadStateRead,
    CoalitionClient,
    MalformedResponse,
    UncertifiedState,
    VerificationFailed,
)
from coalitiond.commands import Envelope
from coalitiond.components.executor import CommandOutcome
from coalitiond.config import load_config
from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import Block, Certificate
from coalitiond.crypto import SigningKey
from coalitiond.encoding import decode, encode
from coalitiond.store.sqlite import EvidenceRecord

Mutate = Callable[[Any], None]


def _flip(b: bytes, at: int = -1) -> bytes:
    out = bytearray(b)
    out[at] ^= 0x01
    return bytes(out)


@contextmanager
def tampered(s: Served, path: str, mutate: Mutate) -> Iterator[CoalitionClient]:
    """A client whose answers from `path` (a prefix) pass through `mutate` first."""
    real = httpx.Client(base_url=s.base_url)

    def handler(request: httpx.Request) -> httpx.Response:
        r = real.get(request.url.path, params=request.url.params)
        content = r.content
        if request.url.path.startswith(path) and r.status_code == 200:
            obj = decode(content)
            mutate(obj)
            content = encode(obj)
        return httpx.Response(r.status_code, headers={"content-type":
                                                      r.headers["content-type"]},
                              content=content)

    try:
        with CoalitionClient(s.base_url, s.spec, transport=httpx.MockTransport(handler)) as c:
            yield c
    finally:
        real.close()


def _verified_reads(s: Served) -> None:
    """Runs in a worker thread: the sync client against the live member."""
    # The committee comes from a member's configuration, public parts only.
    committee = load_config(s.committee.configs[2], check_key=False).committee_spec()
    assert committee == s.spec
    with CoalitionClient(s.base_url, committee) as client:
        assert client.status()["committee"]["id"] == committee.committee_id
        cp = client.checkpoint()
        assert cp.signers == (0,) and cp.size >= len(SUBMISSIONS)
        assert cp.block.digest == cp.checkpoint.block_digest
        entries = client.entries(0, 1000, cp)
        assert [e.index for e in entries] == list(range(cp.size))
        for outcome in s.outcomes:
            entry = entries[outcome.log_index]
            assert entry.height == outcome.height
            assert Envelope.decode(entry.command).envelope_id == \
                CommandOutcome.from_wire(outcome.outcomes[0]).envelope_id
        one = client.inclusion(s.outcomes[1].log_index, cp)
        assert one == entries[s.outcomes[1].log_index]

        old = client.checkpoint(s.outcomes[0].height)
        assert old.height == s.outcomes[0].height and old.size <= cp.size
        client.consistency(old, cp)

        page = client.blocks(1, 5)
        assert [fb.height for fb in page.blocks] == list(range(1, page.next))
        assert page.next >= 2 and page.head >= cp.height
        following = client.blocks(page.next, 5, after=page.blocks[-1].block)
        assert not following.blocks or following.blocks[0].height == page.next

        read = client.state("entry", {"index": 3})
        assert read.proven_leaf is not None and decode(read.proven_leaf)[2] == 3
        assert read.result["entry"]["seq"] == 3
        assert read.certified_by is not None
        assert read.certified_by.state_root == read.executor_root
        assert read.certified_height is not None and read.certified_height >= 1
        head = client.state("head")
        assert head.proven_leaf is None and head.result["count"] == s.feed_entries

        evidence = client.evidence()
        assert len(evidence) == 1 and evidence[0].member == 3

        with pytest.raises(ApiError) as refused:
            client.state("entry", {"index": 10_000})
        assert refused.value.status == 404 and "no entry 10000" in refused.value.message


async def _plant_evidence(s: Served) -> None:
    """A real equivocation by member 3 (two notarize votes in one far-away view), recorded
    in member 0's store as the member would."""
    key = s.committee.keys[3]
    view = 10**6
    statements = [Statement(SignedKind.NOTARIZE, d, sign_statement(
        key, s.spec, SignedKind.NOTARIZE, view, d)) for d in (b"\x01" * 32, b"\x02" * 32)]
    ev = Evidence.build(s.spec, view, 3, *statements)
    assert s.member.store is not None
    await s.member.store.record_event(evidence=[EvidenceRecord(
        3, s.spec.epoch, view, ev.kind.value, ev.encode())])


async def test_the_client_returns_only_what_verifies_against_the_committee(
        tmp_path: Path) -> None:
    async with served_committee(tmp_path) as s:
        await _plant_evidence(s)
        await trio.to_thread.run_sync(_verified_reads, s)
        # The async twin, on trio.
        async with AsyncCoalitionClient(s.base_url, s.spec) as client:
            cp = await client.checkpoint()
            entries = await client.entries(0, 2, cp)
            assert [e.index for e in entries] == [0, 1]
            read = await client.state("entry", {"index": 0})
            assert read.proven_leaf is not None and read.certified_by is not None


def _note_signed_by_outsider(obj: Any) -> None:
    text = obj["note"].split("\n\n")[0] + "\n"
    from coalitiond.checkpoint import Checkpoint
    outsider = SigningKey.generate()
    obj["note"] = Checkpoint.parse_text(text).sign(outsider)


def _drop_signature(obj: Any) -> None:
    cert = Certificate.decode(obj["finalization"])
    obj["finalization"] = Certificate(cert.kind, cert.epoch, cert.view, cert.digest,
                                      cert.signatures[:1]).encode()


def _corrupt_certificate(obj: Any) -> None:
    cert = Certificate.decode(obj["finalization"])
    (i, sig), *rest = cert.signatures
    obj["finalization"] = Certificate(cert.kind, cert.epoch, cert.view, cert.digest,
                                      ((i, _flip(sig)), *rest)).encode()


def _other_block(obj: Any) -> None:
    b = Block.decode(obj["block"])
    obj["block"] = Block(b.epoch, b.height, b.view + 1, b.parent, b.proposer, b.commands,
                         b.executed_height, b.state_root).encode()


def _corrupt_note_signature(obj: Any) -> None:
    text, sig = obj["note"].rsplit(" ", 1)
    sig = sig.rstrip("\n")
    obj["note"] = text + " " + ("A" if sig[10] != "A" else "B").join(
        (sig[:10], sig[11:])) + "\n"


def _each(key: str, fn: Callable[[Any], None]) -> Mutate:
    def mutate(obj: Any) -> None:
        for item in obj[key]:
            fn(item)
    return mutate


def _first(key: str, fn: Callable[[Any], None]) -> Mutate:
    return lambda obj: fn(obj[key][0])


def _set(obj: Any, key: str, value: Any) -> None:
    obj[key] = value


def _refusals(s: Served) -> None:
    """Runs in a worker thread. Each case: (path, mutation, the call, error, message)."""
    with CoalitionClient(s.base_url, s.spec) as honest:
        cp = honest.checkpoint()
        old = honest.checkpoint(s.outcomes[0].height)
    state_proof: Callable[[Any], Any] = lambda obj: obj["result"]["state_proof"]  # noqa: E731
    cases: list[tuple[str, Mutate, Callable[[CoalitionClient], Any], type[Exception], str]] = [
        ("/v1/checkpoint", _note_signed_by_outsider, lambda c: c.checkpoint(), BadCheckpoint,
         "no signature of a committee member"),
        ("/v1/checkpoint", _corrupt_note_signature, lambda c: c.checkpoint(), BadCheckpoint,
         "does not verify"),
        ("/v1/checkpoint", _drop_signature, lambda c: c.checkpoint(), BadCertificate,
         "quorum"),
        ("/v1/checkpoint", _corrupt_certificate, lambda c: c.checkpoint(), BadCertificate,
         "signature of member"),
        ("/v1/checkpoint", _other_block, lambda c: c.checkpoint(), BadCheckpoint,
         "not the block the note names"),
        ("/v1/entries", _first("entries", lambda e: _set(e, "proof", [_flip(h) for h in
                                                                      e["proof"]])),
         lambda c: c.entries(0, 10, cp), BadInclusionProof, "entry 0: inclusion proof"),
        ("/v1/entries", _each("entries", lambda e: _set(e, "leaf", _flip(e["leaf"]))),
         lambda c: c.entries(0, 10, cp), BadInclusionProof, "inclusion proof"),
        ("/v1/proof/inclusion", lambda o: _set(o, "leaf", _flip(o["leaf"])),
         lambda c: c.inclusion(1, cp), BadInclusionProof, "entry 1"),
        ("/v1/proof/consistency", lambda o: _set(o, "proof", [_flip(h) for h in o["proof"]]
                                                 or [b"\x00" * 32]),
         lambda c: c.consistency(old, cp), BadConsistencyProof, "is not a prefix"),
        ("/v1/blocks", _first("blocks", lambda b: _set(b, "votes", [
            encode([*decode(v)[:-1], _flip(decode(v)[-1])]) for v in b["votes"]])),
         lambda c: c.blocks(1, 3), BadBlocks, "block 1: the vote of member"),
        ("/v1/blocks", _each("blocks", lambda b: b["finalization"] and _corrupt_certificate(b)),
         lambda c: c.blocks(1, 3), BadCertificate, "signature of member"),
        ("/v1/blocks", _first("blocks", lambda b: (_other_block(b), _set(b, "votes", []))),
         lambda c: c.blocks(1, 3), BadCheckpoint, "block 1: its checkpoint names another"),
        ("/v1/checkpoint", lambda o: _set(o, "chain", [o["block"]]), lambda c: c.checkpoint(),
         BadCertificate, "does not link to block"),
        ("/v1/state/", lambda o: _set(state_proof(o), "leaf", _flip(state_proof(o)["leaf"])),
         lambda c: c.state("entry", {"index": 1}), BadStateRead,
         "inclusion path does not lead"),
        ("/v1/state/", lambda o: _set(o, "component_root", _flip(o["component_root"])),
         lambda c: c.state("entry", {"index": 1}), BadStateRead,
         "executor-root pieces do not hash"),
        ("/v1/state/", lambda o: _set(o["result"], "encoded", b"\x80"),
         lambda c: c.state("entry", {"index": 1}), BadStateRead, "not the proven leaf"),
        ("/v1/state/", lambda o: _corrupt_certificate(o["certified"]),
         lambda c: c.state("entry", {"index": 1}), BadCertificate, "signature of member"),
        ("/v1/state/", lambda o: _set(o, "certified", None),
         lambda c: c.state("entry", {"index": 1}), UncertifiedState, "no finalised block"),
        ("/v1/evidence", _first("evidence", lambda e: _set(e, "body", _flip(e["body"]))),
         lambda c: c.evidence(), BadEvidence, "evidence record 0"),
        ("/v1/status", lambda o: _set(o["committee"], "id", b"\x00" * 32),
         lambda c: c.status(), MalformedResponse, "another committee"),
    ]
    for path, mutate, call, error, message in cases:
        with tampered(s, path, mutate) as client, pytest.raises(error) as caught:
            call(client)
        assert message in str(caught.value), (path, str(caught.value))
        assert isinstance(caught.value, VerificationFailed)

    def not_cbor(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, content=b"{}")

    with CoalitionClient(s.base_url, s.spec, transport=httpx.MockTransport(not_cbor)) as c, \
            pytest.raises(MalformedResponse, match="expected application/cbor"):
        c.checkpoint()
    with CoalitionClient(s.base_url, s.spec) as c, pytest.raises(ApiError) as refused:
        c.blocks(0)
    assert refused.value.status == 400 and refused.value.message == "from: must be >= 1, got 0"


async def test_tampered_answers_are_refused_naming_what_did_not_verify(tmp_path: Path) -> None:
    async with served_committee(tmp_path) as s:
        await _plant_evidence(s)
        await trio.to_thread.run_sync(_refusals, s)
