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
from test_component_almanac import filled
from test_component_atlas import CITIZENS, OPERATORS, make_atlas
from test_component_atlas import card as atlas_card
from test_component_chronicle import _filled as chronicle_filled
from test_component_compute import P2, R1, rid
from test_component_compute import Chain as ComputeChain
from test_component_compute import card as compute_card
from test_component_compute import request as compute_request
from test_component_tickets import ISSUER as TICKET_ISSUER
from test_component_tickets import make_tickets, ticket
from test_read_api import SUBMISSIONS, Served, served_committee

from coalitiond.client import (
    PROVEN_READS,
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
    StateRead,
    UncertifiedState,
    UnprovenRead,
    VerificationFailed,
)
from coalitiond.commands.envelope import Envelope
from coalitiond.components.atlas.component import publish_card
from coalitiond.components.base import BlockContext, Component
from coalitiond.components.compute.records import register_provider, submit_request
from coalitiond.components.executor import CommandOutcome
from coalitiond.components.tickets.component import issue
from coalitiond.config import load_config
from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.consensus.types import Block, Certificate
from coalitiond.log.checkpoint import Checkpoint
from coalitiond.log.sqlite import EvidenceRecord
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.identity import hash_structure
from coalitiond.primitives.merkle import MemoryTree, inclusion_path, leaf_hash

pytestmark = pytest.mark.live

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
        assert read.proven and read.unproven_fields == {}
        head = client.state("head", allow_unproven=True)
        assert not head.proven and head.proven_leaf is None
        assert head.result["count"] == s.feed_entries

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
    from coalitiond.log.checkpoint import Checkpoint
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
        # A block that carries its own finalization (a block finalised only through a
        # descendant carries none, and corrupting "its" certificate would change nothing).
        certified = next(fb.block.height for fb in honest.blocks(1).blocks
                         if fb.finalization is not None)
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
         lambda c: c.blocks(certified, 1), BadCertificate, "signature of member"),
        ("/v1/blocks", _first("blocks", lambda b: (_other_block(b), _set(b, "votes", []))),
         lambda c: c.blocks(1, 3), BadCheckpoint, "block 1: its checkpoint names another"),
        ("/v1/checkpoint", lambda o: _set(o, "chain", [Block.decode(o["block"]).header.encode()]),
         lambda c: c.checkpoint(),
         BadCertificate, "does not link to block"),
        ("/v1/state/", lambda o: _set(state_proof(o), "leaf", _flip(state_proof(o)["leaf"])),
         lambda c: c.state("entry", {"index": 1}), BadStateRead,
         "inclusion path does not lead"),
        ("/v1/state/", lambda o: _set(o, "component_root", _flip(o["component_root"])),
         lambda c: c.state("entry", {"index": 1}), BadStateRead,
         "executor-root pieces do not hash"),
        ("/v1/state/", lambda o: _set(o["result"], "encoded", b"\x80"),
         lambda c: c.state("entry", {"index": 1}), BadStateRead,
         "the result's 'encoded' is not what the proven leaf says"),
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


# ---------------------------------------------------------------------------------------
# Regressions: a single lying member (review of the client's guarantees)


def _forged_note_and_entries(s: Served, real: httpx.Client, leaves: list[bytes]
                             ) -> CoalitionClient:
    """A client talking to member 0 lying with its own key: a checkpoint note over a tree
    of `leaves` for a real certified block, and entries served from that tree.

    The committee keeps finalising while the test runs: the note names the block of height
    `cp.height`, so the forger relays the checkpoint of exactly that height (`?height=`),
    never whatever the head is by then — else the client would refuse the note for naming
    another block, not for the lie under test."""
    with CoalitionClient(s.base_url, s.spec) as honest:
        cp = honest.checkpoint()
    tree = MemoryTree([leaf_hash(leaf) for leaf in leaves])
    note = Checkpoint(len(leaves), tree.root(), s.spec.committee_id, s.spec.epoch, cp.height,
                      cp.block.digest).sign(s.committee.keys[0])

    def forge(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        if request.url.path == "/v1/checkpoint":
            assert "height" not in params, "the forger answers head reads only"
            params["height"] = str(cp.height)
        r = real.get(request.url.path, params=params)
        obj = decode(r.content)
        if request.url.path == "/v1/checkpoint":
            obj["note"] = note
        if request.url.path == "/v1/entries":
            obj["entries"] = [{"index": i, "leaf": leaf, "proof": inclusion_path(tree, i, len(
                leaves))} for i, leaf in enumerate(leaves)]
        if request.url.path == "/v1/proof/inclusion":
            i = int(request.url.params["index"])
            obj.update(leaf=leaves[i], proof=inclusion_path(tree, i, len(leaves)))
        return httpx.Response(200, headers={"content-type": "application/cbor"},
                              content=encode(obj))

    return CoalitionClient(s.base_url, s.spec, transport=httpx.MockTransport(forge))


def _lies(s: Served) -> None:
    """Runs in a worker thread: each lie of the review, refused with what did not verify."""
    real = httpx.Client(base_url=s.base_url)
    try:
        # (1) The result is not tied to the proof: a changed entry with `encoded` dropped.
        def forged_result(o: Any) -> None:
            o["result"].pop("encoded")
            o["result"]["entry"]["seq"] = 999
        with tampered(s, "/v1/state/entry", forged_result) as c, \
                pytest.raises(BadStateRead, match="the result's 'entry' is not what the proven "
                              "leaf says"):
            c.state("entry", {"index": 3})
        # ... while an honest answer that leaves out derivable fields is rebuilt in full.
        with tampered(s, "/v1/state/entry", lambda o: o["result"].pop("encoded")) as c:
            read = c.state("entry", {"index": 3})
        assert read.proven and read.result["encoded"] == read.proven_leaf
        assert read.result["entry"]["seq"] == 3 == decode(read.proven_leaf)[2]
        # A member's field that no proof covers is refused, not passed on.
        with tampered(s, "/v1/state/entry", lambda o: _set(o["result"], "trust_me", 1)) as c, \
                pytest.raises(BadStateRead, match="field 'trust_me' is not covered"):
            c.state("entry", {"index": 3})

        # (2) The honest, proven answer of index 1 for a read of index 3.
        def other_index(request: httpx.Request) -> httpx.Response:
            params = dict(request.url.params)
            if request.url.path == "/v1/state/entry":
                params["args"] = encode({"index": 1}).hex()
            r = real.get(request.url.path, params=params)
            return httpx.Response(r.status_code, headers={"content-type":
                                                          r.headers["content-type"]},
                                  content=r.content)
        with CoalitionClient(s.base_url, s.spec,
                             transport=httpx.MockTransport(other_index)) as c, \
                pytest.raises(BadStateRead, match="the proof is for entry 1, not the 3 asked"):
            c.state("entry", {"index": 3})

        # (2) A proof whose tree root is not at the entry tree's preimage position: the
        # member rewrites the whole preimage (and so its roots), with no certified block.
        def moved_tree(o: Any) -> None:
            proof = o["result"]["state_proof"]
            pre = proof["root_preimage"]
            proof["root_preimage"] = [pre[0], 1, pre[2], b"\x00" * 32, pre[3]]
            _rehash(o, hash_structure(*proof["root_preimage"]))
        with tampered(s, "/v1/state/entry", moved_tree) as c, \
                pytest.raises(BadStateRead, match="not for the entry tree of feed-state"):
            c.state("entry", {"index": 3}, allow_uncertified=True)

        def other_size(o: Any) -> None:
            proof = o["result"]["state_proof"]
            proof["root_preimage"][2] += 1
            _rehash(o, hash_structure(*proof["root_preimage"]))
        with tampered(s, "/v1/state/entry", other_size) as c, \
                pytest.raises(BadStateRead, match="tree size"):
            c.state("entry", {"index": 3}, allow_uncertified=True)

        # (3) A read without a proof does not look certified: refused unless asked for.
        with tampered(s, "/v1/state/head", lambda o: _set(o["result"], "count", 10**6)) as c:
            with pytest.raises(UnprovenRead, match="carries no state proof"):
                c.state("head")
            head = c.state("head", allow_unproven=True)
        assert not head.proven and head.proven_leaf is None and head.result["count"] == 10**6
        # A proof-carrying read stripped of its proof is refused even then.
        with tampered(s, "/v1/state/entry", lambda o: o["result"].pop("state_proof")) as c, \
                pytest.raises(BadStateRead, match="must carry a state proof"):
            c.state("entry", {"index": 3}, allow_unproven=True)

        # (4) Member 0 signs a note over a fabricated log for the real certified block: the
        # size and root are not the ones the finalised chain commits to (issue #15).
        fake = encode(["entry", 1, s.spec.epoch, 1, b"\x11" * 32, 0, b"FORGED COMMAND"])
        with _forged_note_and_entries(s, real, [fake]) as c, \
                pytest.raises(BadCheckpoint, match=r"the note says size 1 root .* commits to "
                              "size"):
            c.checkpoint()
        # ... or over the real entries with one left out (each one genuine on its own).
        with CoalitionClient(s.base_url, s.spec) as honest:
            genuine = [e.leaf for e in honest.entries(0, 1000, honest.checkpoint())]
        assert len(genuine) >= 3
        with _forged_note_and_entries(s, real, genuine[:1] + genuine[2:]) as c, \
                pytest.raises(BadCheckpoint, match="commits to size"):
            c.checkpoint()
        # ... and a checkpoint answer without the block that certifies it rests on one
        # member's signature: refused.
        with tampered(s, "/v1/checkpoint", lambda o: _set(o, "certifier", o["height"])) as c, \
                pytest.raises(BadCheckpoint, match="would rest on one member's signature"):
            c.checkpoint()

        # (5) A block page that does not start at the height asked.
        with tampered(s, "/v1/blocks", lambda o: o["blocks"].pop(0)) as c, \
                pytest.raises(BadBlocks, match="starts at height 2, not at the 1 asked"):
            c.blocks(1, 3)
    finally:
        real.close()


def _rehash(o: Any, component_root: bytes) -> None:
    """Make a state answer's executor-root pieces consistent with a new component root."""
    o["component_root"] = component_root
    o["executor_root"] = hash_structure("executor-state", 1, o["component_signature"],
                                        o["dedup_root"], component_root)
    o["certified"] = None


async def test_a_lying_member_cannot_make_the_client_accept_forged_answers(
        tmp_path: Path) -> None:
    async with served_committee(tmp_path) as s:
        await trio.to_thread.run_sync(_lies, s)


# ---------------------------------------------------------------------------------------
# Every component's proof-carrying reads, against real component state (no network)


def _answer(component: Component, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """What the read API answers for a read of `component` (no certified block)."""
    dedup_root = b"\x07" * 32
    root = component.state_root()
    return {"query": name, "args": args, "result": component.query(name, args),
            "executed_height": 1, "component_signature": component.signature,
            "dedup_root": dedup_root, "component_root": root, "certified": None,
            "executor_root": hash_structure("executor-state", 1, component.signature,
                                            dedup_root, root)}


def _read(component: Component, name: str, args: dict[str, Any], answer: dict[str, Any]
          ) -> StateRead:
    spec = CommitteeSpec("test", component.kind, "test", (SigningKey.generate().public,), 0)
    body = encode(answer)
    transport = httpx.MockTransport(lambda _: httpx.Response(
        200, headers={"content-type": "application/cbor"}, content=body))
    with CoalitionClient("http://member", spec, transport=transport) as client:
        return client.state(name, args, allow_uncertified=True)


def _components() -> dict[str, Component]:
    atlas = make_atlas()
    for i in (0, 1):
        atlas.apply(BlockContext(i + 1, bytes([i + 1]) * 32, 7), [Envelope.sign(
            OPERATORS[i], b"\x44" * 32, 1, [publish_card(atlas_card(i))])])
    tickets = make_tickets()
    tickets.apply(BlockContext(1, b"\x01" * 32), [Envelope.sign(
        TICKET_ISSUER, b"\x55" * 32, 1, [issue(ticket(n)) for n in (0, 1)])])
    compute = ComputeChain()
    compute.block((P2, [register_provider(compute_card(P2, cpu=4000))]))
    for n in (1, 2):
        compute.one(R1, submit_request(compute_request(R1, n)))
    return {"atlas": atlas, "tickets": tickets, "almanac": filled(3),
            "chronicle": chronicle_filled(), "compute": compute.c}


PROVEN_CASES = [
    ("atlas", "card", {"citizen_id": CITIZENS[1]}),
    ("tickets", "ticket", {"ticket_id": ticket(1).ticket_id}),
    ("almanac", "tick", {"seq": 2}),
    ("chronicle", "entry", {"seq": 4}),
    ("chronicle", "anchor", {"upto_seq": 5}),
    ("compute", "provider", {"provider_id": P2.public}),
    ("compute", "request", {"request_id": rid(2)}),
    ("compute", "grant", {"request_id": rid(1)}),
]


def test_every_proof_carrying_read_is_listed_and_returns_what_its_proof_proves() -> None:
    assert {(sig.split("/")[0], query) for sig, query in PROVEN_READS} == \
        {(k, q) for k, q, _ in PROVEN_CASES} | {("feed", "entry")}
    components = _components()
    for kind, name, args in PROVEN_CASES:
        component = components[kind]
        answer = _answer(component, name, args)
        read = _read(component, name, args, answer)
        unproven = PROVEN_READS[(component.signature, name)].unproven
        member_result = decode(encode(answer["result"]))
        assert read.proven and read.proven_leaf == member_result["state_proof"]["leaf"]
        assert read.result == {k: v for k, v in member_result.items() if k not in unproven}
        assert dict(read.unproven_fields) == {k: v for k, v in member_result.items()
                                              if k in unproven}


def test_a_proof_of_another_item_or_another_tree_is_refused() -> None:
    components = _components()
    cases: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = [
        # (component, query, args asked, args the member answers, refusal)
        ("chronicle", "entry", {"seq": 4}, {"seq": 1}, "the proof is for entry 1, not the 4"),
        ("chronicle", "anchor", {"upto_seq": 5}, {"upto_seq": 2}, "the proof is for anchor 2"),
        ("atlas", "card", {"citizen_id": CITIZENS[1]}, {"citizen_id": CITIZENS[0]},
         f"the proof is for record {CITIZENS[0].hex()[:32]}"),
        ("tickets", "ticket", {"ticket_id": ticket(1).ticket_id},
         {"ticket_id": ticket(0).ticket_id}, "the proof is for record"),
        ("almanac", "tick", {"seq": 3}, {"seq": 1}, "the proof is for tick 1, not the 3"),
        ("compute", "request", {"request_id": rid(2)}, {"request_id": rid(1)},
         "the proof is for request"),
        ("compute", "grant", {"request_id": rid(1)}, {"provider_id": P2.public},
         "the proof is for grant"),
    ]
    for kind, name, asked, answered, message in cases:
        component = components[kind]
        answer = _answer(component, "provider" if "provider_id" in answered else name,
                         answered)
        if "provider_id" in answered:  # a provider's proven leaf offered as a grant
            answer["result"] = {"grant": answer["result"]["provider"],
                                "state_proof": answer["result"]["state_proof"]}
        with pytest.raises(BadStateRead, match=message):
            _read(component, name, asked, answer)

    # Chronicle: an anchor read answered with a proof from the entry tree (same state).
    chronicle = components["chronicle"]
    answer = _answer(chronicle, "anchor", {"upto_seq": 5})
    answer["result"]["state_proof"] = chronicle.query("entry", {"seq": 5})["state_proof"]
    with pytest.raises(BadStateRead, match="not for the anchor tree of chronicle-state"):
        _read(chronicle, "anchor", {"upto_seq": 5}, answer)
    # A state proof on a read the client does not know: unverifiable, not trusted.
    answer = _answer(chronicle, "since", {"seq": 0})
    answer["result"]["state_proof"] = chronicle.query("entry", {"seq": 0})["state_proof"]
    with pytest.raises(BadStateRead, match="unverifiable"):
        _read(chronicle, "since", {"seq": 0}, answer)
    # Compute `provider`'s unproven extras are kept apart; any other extra is refused.
    compute = components["compute"]
    answer = _answer(compute, "provider", {"provider_id": P2.public})
    answer["result"]["grant_everything"] = True
    with pytest.raises(BadStateRead, match="'grant_everything' is not covered"):
        _read(compute, "provider", {"provider_id": P2.public}, answer)
