"""The `chronicle` component: parameters, every refusal, evidence entries, anchors, reads with
proofs, snapshots, and determinism of replays through the executor."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.commands.envelope import Acl, Command, Envelope, InvalidCommand
from coalitiond.commands.member import MemberCommand
from coalitiond.components.base import (
    Applied,
    BlockContext,
    MalformedSnapshot,
    QueryError,
    QueryNotFound,
    Refused,
    check_state_proof,
    component_class,
)
from coalitiond.components.chronicle import component as chronicle_module
from coalitiond.components.chronicle.component import (
    MAX_QUERY_ANCHORS,
    MAX_QUERY_ENTRIES,
    Chronicle,
    demo_commands,
)
from coalitiond.components.chronicle.records import (
    GENESIS_ANCHOR_DIGEST,
    KINDS,
    MAX_BODY_BYTES,
    MAX_EVIDENCE_POINTERS,
    ChronicleAnchor,
    ChronicleEntry,
    EvidenceBody,
    EvidencePointer,
    append_command,
    evidence_command,
    recompute_anchors,
)
from coalitiond.components.executor import Executor
from coalitiond.config import AnchorSink, ChronicleConfig
from coalitiond.consensus.evidence import Evidence, Statement
from coalitiond.consensus.statements import SignedKind, sign_statement
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import OperatorError
from coalitiond.primitives.identity import digest, hash_structure
from coalitiond.testing.simulator import make_committee

OPERATOR = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
COMMITTEE = b"\x33" * 32
SUBJECT = b"\x44" * 32
ACCUSED, ACCUSED_KEYS = make_committee(5, name="accused")
D1, D2 = b"\x01" * 32, b"\x02" * 32


def make(anchor_every: int = 3, **sink: Any) -> Chronicle:
    return Chronicle.from_params({"anchor_every": anchor_every,
                                  "anchor_sink": {"kind": "file", "chain_id": None,
                                                  "contract": None, **sink},
                                  "follow_almanac": None})


class Chain:
    """Feeds a component envelopes block by block, as the executor would."""

    def __init__(self, chronicle: Chronicle) -> None:
        self.chronicle = chronicle
        self.height = 0
        self.nonce = 0

    def envelope(self, commands: list[Command], key: SigningKey = OPERATOR) -> Envelope:
        self.nonce += 1
        return Envelope.sign(key, COMMITTEE, self.nonce, commands)

    def block(self, *envelopes: Envelope, tick: int | None = None) -> tuple[list[Any], Any]:
        self.height += 1
        ctx = BlockContext(self.height, bytes([self.height]) * 32, tick)
        results = self.chronicle.apply(ctx, list(envelopes))
        return results, self.chronicle.end_block(ctx)


def note(i: int = 0, kind: str = "note") -> Command:
    return append_command(kind, SUBJECT, {"i": i})


def evidence(member: int = 3, view: int = 4) -> Evidence:
    def stmt(d: bytes) -> Statement:
        return Statement(SignedKind.NOTARIZE, d,
                         sign_statement(ACCUSED_KEYS[member], ACCUSED, SignedKind.NOTARIZE,
                                        view, d))
    return Evidence.build(ACCUSED, view, member, stmt(D1), stmt(D2))


def raw_append(**changes: Any) -> Command:
    args: dict[str, Any] = {"kind": "note", "subject": SUBJECT, "body": encode("x"),
                            "evidence_pointers": []}
    args.update(changes)
    return Command("append", args)


# -- parameters -------------------------------------------------------------------------------


def test_params_from_config_table_and_registry() -> None:
    evm_members = (b"\x06" * 20, b"\x07" * 20)
    cfg = ChronicleConfig(AnchorSink("evm", chain_id=1, contract=b"\x05" * 20,
                                     members=evm_members), anchor_every=7,
                          follow_almanac=b"\x09" * 32)
    c = component_class("chronicle").from_params(cfg.to_cbor())
    assert isinstance(c, Chronicle)
    assert (c.anchor_every, c.sink_kind, c.chain_id, c.contract, c.follow_almanac,
            c.evm_members) == (7, "evm", 1, b"\x05" * 20, b"\x09" * 32, evm_members)
    assert c.params() == cfg.to_cbor()
    # The members' EVM addresses are consensus content: bound into the committee id.
    assert c.config_digest() == hash_structure("chronicle-config", 1, "chronicle/1", 7,
                                               ["evm", 1, b"\x05" * 20, list(evm_members)],
                                               b"\x09" * 32)
    swapped = ChronicleConfig(AnchorSink("evm", chain_id=1, contract=b"\x05" * 20,
                                         members=evm_members[::-1]), anchor_every=7,
                              follow_almanac=b"\x09" * 32)
    assert Chronicle.from_params(swapped.to_cbor()).config_digest() != c.config_digest()
    # A file sink's digest is as before (no members element).
    assert make(3).config_digest() == hash_structure("chronicle-config", 1, "chronicle/1", 3,
                                                     ["file", None, None], None)
    assert make(3).config_digest() != make(4).config_digest()


SINK = {"kind": "file", "chain_id": None, "contract": None}


@pytest.mark.parametrize(("params", "message"), [
    ({"anchor_every": 1, "anchor_sink": SINK, "colour": 1},
     "component.colour: unknown key for a chronicle"),
    ({"anchor_sink": SINK}, "component.anchor_every: required"),
    ({"anchor_every": 1}, r"component.anchor_sink: required, a table \{kind, ...\}"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "url": "x"}},
     "component.anchor_sink.url: unknown key"),
    ({"anchor_every": 0, "anchor_sink": SINK}, "component.anchor_every: must be 1..1000000"),
    ({"anchor_every": True, "anchor_sink": SINK}, "component.anchor_every: must be 1..1000000"),
    ({"anchor_every": 1_000_001, "anchor_sink": SINK},
     "component.anchor_every: must be 1..1000000"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "kind": "ftp"}},
     "component.anchor_sink.kind: must be one of file, http, evm"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "kind": "evm", "contract": b"\x01" * 20}},
     "component.anchor_sink.chain_id: required for evm, >= 1"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "kind": "evm", "chain_id": 1}},
     "component.anchor_sink.contract: required for evm, 20 bytes"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "chain_id": 1}},
     "component.anchor_sink: chain_id, contract and members belong to the evm sink, not "
     "'file'"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "members": [b"\x01" * 20]}},
     "component.anchor_sink: chain_id, contract and members belong to the evm sink, not "
     "'file'"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "kind": "evm", "chain_id": 1,
                                         "contract": b"\x01" * 20}},
     "component.anchor_sink.members: required for evm, 1..64 distinct 20-byte addresses"),
    ({"anchor_every": 1, "anchor_sink": {**SINK, "kind": "evm", "chain_id": 1,
                                         "contract": b"\x01" * 20,
                                         "members": [b"\x02" * 20, b"\x02" * 20]}},
     "component.anchor_sink.members: required for evm, 1..64 distinct 20-byte addresses"),
    ({"anchor_every": 1, "anchor_sink": SINK, "follow_almanac": b"\x01"},
     "component.follow_almanac: must be 32 bytes or absent"),
])
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError, match=f"^{message}$"):
        Chronicle.from_params(params)


# -- commands ---------------------------------------------------------------------------------


def test_append_records_who_when_and_where() -> None:
    chain = Chain(make())
    env = chain.envelope([note(0), note(1, "advisory")])
    results, _ = chain.block(env, tick=17)
    assert results == [Applied(0, (chain.chronicle.entry_encodings()[0],)),
                       Applied(1, (chain.chronicle.entry_encodings()[1],))]
    entry = ChronicleEntry.decode(chain.chronicle.entry_encodings()[1])
    assert entry == ChronicleEntry(1, "advisory", SUBJECT, encode({"i": 1}), (), 17, 1,
                                   env.envelope_id, 1, OPERATOR.public)
    assert decode(entry.encode())[:2] == ["chronicle-entry", 1]


def test_every_kind_is_accepted() -> None:
    chain = Chain(make())
    cmds = [evidence_command(ACCUSED, evidence()) if k == "evidence" else note(0, k)
            for k in KINDS]
    results, _ = chain.block(chain.envelope(cmds))
    assert [type(r) for r in results] == [Applied] * len(KINDS)
    assert [ChronicleEntry.decode(e).kind for e in chain.chronicle.entry_encodings()] == \
        list(KINDS)


def test_evidence_pointers_are_kept() -> None:
    chain = Chain(make())
    ptr = EvidencePointer(b"\x07" * 32, 12, b"\x08" * 32)
    chain.block(chain.envelope([append_command("publication", SUBJECT, 1,
                                               evidence_pointers=[ptr])]))
    assert ChronicleEntry.decode(chain.chronicle.entry_encodings()[0]).evidence_pointers == \
        (ptr,)


def _bad_pointer(p: Any) -> Command:
    return raw_append(evidence_pointers=[p])


@pytest.mark.parametrize(("command", "reason", "message"), [
    (Command("publish", {}), "unknown_op", r"unknown op 'publish' \(a chronicle accepts: append\)"),
    (Command("append", {"kind": "note"}), "bad_args",
     r"append: args must be exactly \{kind, subject, body, evidence_pointers\}"),
    (raw_append(kind="gossip"), "bad_args",
     "append: kind must be one of publication, rotation, retirement, advisory, evidence, note"),
    (raw_append(kind=1), "bad_args", "append: kind must be one of .*"),
    (raw_append(subject=b"\x01" * 31), "bad_args", "append: subject must be 32 bytes"),
    (raw_append(body="text"), "bad_args",
     r"append: body must be a byte string \(deterministic CBOR\)"),
    (raw_append(body=b""), "bad_args", "append: body is not one deterministic CBOR item: .*"),
    (raw_append(body=b"\x18\x01"), "bad_args",
     "append: body is not one deterministic CBOR item: .*"),
    (raw_append(body=encode(1) + encode(2)), "bad_args",
     "append: body is not one deterministic CBOR item: .*"),
    (raw_append(body=encode(b"x" * MAX_BODY_BYTES)), "too_large",
     f"append: body of {MAX_BODY_BYTES + 3} bytes exceeds {MAX_BODY_BYTES}"),
    (raw_append(evidence_pointers={}), "bad_args", "append: evidence_pointers must be an array"),
    (raw_append(evidence_pointers=[[b"\x01" * 32, 1, b"\x02" * 32]]
                * (MAX_EVIDENCE_POINTERS + 1)), "too_large",
     f"append: {MAX_EVIDENCE_POINTERS + 1} evidence pointers exceed {MAX_EVIDENCE_POINTERS}"),
    (_bad_pointer([b"\x01" * 32, 0, b"\x02" * 32]), "bad_args",
     r"append: evidence_pointers\[0\] must be \[32-byte component id, height >= 1, "
     r"32-byte block digest\]"),
    (_bad_pointer([b"\x01" * 31, 1, b"\x02" * 32]), "bad_args", r"append: evidence_pointers.*"),
    (_bad_pointer([b"\x01" * 32, 1]), "bad_args", r"append: evidence_pointers.*"),
    (_bad_pointer([b"\x01" * 32, True, b"\x02" * 32]), "bad_args",
     r"append: evidence_pointers.*"),
])
def test_refusals(command: Command, reason: str, message: str) -> None:
    c = make()
    with pytest.raises(InvalidCommand, match=f"^{message}$") as err:
        c.check(OPERATOR.public, command)
    assert err.value.reason == reason
    # The same refusal at apply time, and the state is untouched.
    root = c.state_root()
    results, anchors = Chain(c).block(Chain(c).envelope([command]))
    assert isinstance(results[0], Refused) and results[0].reason == reason
    assert c.state_root() == root and len(c) == 0 and anchors is None


def _ev_body(**committee_changes: Any) -> bytes:
    wire = EvidenceBody.committee_wire(ACCUSED)
    names = ["network", "kind", "name", "members", "fault_bound", "epoch", "digest"]
    for k, v in committee_changes.items():
        wire[names.index(k)] = v
    return encode({"committee": wire, "evidence": evidence().encode()})


def _ev(body: bytes, subject: bytes = ACCUSED.committee_id) -> Command:
    return raw_append(kind="evidence", subject=subject, body=body)


FORGED = dataclasses.replace(evidence(), member=2)


@pytest.mark.parametrize(("command", "reason", "message"), [
    (_ev(encode("nope")), "bad_evidence",
     r"append: evidence body: must be a map \{committee, evidence\}"),
    (_ev(encode({"committee": [], "evidence": b""})), "bad_evidence",
     r"append: evidence body: committee must be \[network_name, .*\]"),
    (_ev(_ev_body(network="")), "bad_evidence",
     "append: evidence body: committee names must be text of 1..512 chars"),
    (_ev(_ev_body(members=[b"\x01" * 31])), "bad_evidence",
     "append: evidence body: committee members must be 1..64 32-byte keys"),
    (_ev(_ev_body(epoch=-1)), "bad_evidence",
     "append: evidence body: committee fault_bound and epoch must be unsigned, .*"),
    (_ev(_ev_body(members=[b"\x01" * 32, b"\x01" * 32])), "bad_evidence",
     "append: evidence body: committee: committee lists a member twice"),
    (_ev(_ev_body(fault_bound=9)), "bad_evidence",
     "append: evidence body: committee: quorum 8 exceeds committee size 5"),
    (_ev(encode({"committee": EvidenceBody.committee_wire(ACCUSED), "evidence": b"\xff"})),
     "bad_evidence", "append: evidence body: .*"),
    (_ev(encode({"committee": EvidenceBody.committee_wire(ACCUSED), "evidence": 5})),
     "bad_evidence", "append: evidence body: evidence must be at most 4096 bytes"),
    # Another committee's description: the evidence names a different committee id.
    (_ev(_ev_body(name="someone-else")), "bad_evidence",
     "append: evidence body: evidence for committee .*, expected .*"),
    (_ev(_ev_body(epoch=3)), "bad_evidence",
     "append: evidence body: evidence for epoch 0, committee is at epoch 3"),
    # Signatures are member 3's, the evidence claims member 2.
    (_ev(encode({"committee": EvidenceBody.committee_wire(ACCUSED),
                 "evidence": FORGED.encode()})), "bad_evidence",
     "append: evidence body: first statement signature of member 2 does not verify .*"),
    (_ev(EvidenceBody(ACCUSED, evidence()).encode(), subject=SUBJECT), "wrong_subject",
     f"append: evidence subject {SUBJECT.hex()} is not the committee id "
     f"{ACCUSED.committee_id.hex()}"),
])
def test_evidence_refusals(command: Command, reason: str, message: str) -> None:
    test_refusals(command, reason, message)


def test_evidence_entry_holds_verifiable_evidence() -> None:
    chain = Chain(make())
    chain.block(chain.envelope([evidence_command(ACCUSED, evidence())]))
    entry = ChronicleEntry.decode(chain.chronicle.entry_encodings()[0])
    assert entry.kind == "evidence" and entry.subject == ACCUSED.committee_id
    body = EvidenceBody.parse(entry.body)
    assert body.committee == ACCUSED and body.evidence == evidence()
    body.evidence.verify(ACCUSED)


def test_full_chronicle_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chronicle_module, "MAX_CHRONICLE_ENTRIES", 2)
    chain = Chain(make())
    results, _ = chain.block(chain.envelope([note(0), note(1), note(2)]))
    assert [type(r) for r in results] == [Applied, Applied, Refused]
    assert isinstance(results[2], Refused) and results[2].reason == "chronicle_full"
    assert len(chain.chronicle) == 2


def test_chronicle_refuses_appends_past_its_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    sizing = Chain(make())
    sizing.block(sizing.envelope([note(0), note(1), note(2)]))
    sizes = [len(e) for e in sizing.chronicle.entry_encodings()]
    # Room for exactly two entries (the bound is inclusive), one byte short of the third.
    bound = sizes[0] + sizes[1] + sizes[2] - 1
    monkeypatch.setattr(chronicle_module, "MAX_CHRONICLE_BYTES", bound)
    chain = Chain(make())
    results, _ = chain.block(chain.envelope([note(0), note(1)]))
    assert [type(r) for r in results] == [Applied, Applied]
    root = chain.chronicle.state_root()
    results, _ = chain.block(chain.envelope([note(2)]))
    assert results == [Refused("chronicle_full", (
        f"the chronicle holds {sizes[0] + sizes[1]} bytes of entries; this {sizes[2]}-byte "
        f"entry would pass its maximum of {bound}"))]
    assert len(chain.chronicle) == 2 and chain.chronicle.state_root() == root
    # A snapshot holding more entry bytes than the bound is refused, leaving the state as is.
    before = chain.chronicle.snapshot()
    with pytest.raises(MalformedSnapshot, match=f"^chronicle snapshot: {sum(sizes)} bytes of "
                       f"entries exceed {bound}$"):
        chain.chronicle.restore(sizing.chronicle.snapshot())
    assert chain.chronicle.snapshot() == before
    # The count restored from a snapshot keeps the bound: the third append is still refused.
    copy = make()
    copy.restore(before)
    resumed = Chain(copy)
    results, _ = resumed.block(resumed.envelope([note(2)]))
    assert isinstance(results[0], Refused) and results[0].reason == "chronicle_full"


# -- anchors ----------------------------------------------------------------------------------


def test_anchor_every_n_entries_chains_the_digests() -> None:
    chain = Chain(make(anchor_every=2))
    _, produced = chain.block(chain.envelope([note(0)]))
    assert produced is None
    _, produced = chain.block(chain.envelope([note(1), note(2), note(3), note(4)]))
    e = chain.chronicle.entry_encodings()
    first = ChronicleAnchor(1, digest(GENESIS_ANCHOR_DIGEST + e[0] + e[1]))
    second = ChronicleAnchor(3, digest(first.digest + e[2] + e[3]))
    # Two anchors are due at the end of the second block; the fifth entry waits.
    assert produced == Applied(0, (first.encode(), second.encode()))
    assert chain.chronicle.anchors() == [first, second]
    assert recompute_anchors(e, 2) == [first, second]
    assert ChronicleAnchor.decode(first.encode()) == first


def test_anchors_through_the_executor_are_block_entries() -> None:
    ex = Executor(COMMITTEE, Acl.allow([OPERATOR.public]), make(anchor_every=1))
    env = Envelope.sign(OPERATOR, COMMITTEE, 1, [note(0)])
    result = ex.apply_block(1, b"\xbb" * 32, [env.raw])
    kinds = [(e.envelope_id, decode(e.data)[0]) for e in result.entries]
    assert kinds == [(env.envelope_id, "chronicle-entry"), (b"\xbb" * 32, "chronicle-anchor")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.integers(1, 4))
def test_committed_anchors_equal_recomputed_and_seq_is_plus_one(
        per_block: list[int], anchor_every: int) -> None:
    chain = Chain(make(anchor_every=anchor_every))
    i = 0
    for count in per_block:
        cmds = [note(i + j) for j in range(count)]
        i += count
        if cmds:
            chain.block(chain.envelope(cmds))
        else:
            chain.block()
    entries = chain.chronicle.entry_encodings()
    assert [ChronicleEntry.decode(e).seq for e in entries] == list(range(len(entries)))
    assert chain.chronicle.anchors() == recompute_anchors(entries, anchor_every)
    assert len(chain.chronicle.anchors()) == len(entries) // anchor_every


def _replay(blocks: list[list[bytes]], anchor_every: int) -> tuple[list[bytes], bytes]:
    ex = Executor(COMMITTEE, Acl.allow([OPERATOR.public]), make(anchor_every=anchor_every))
    roots = [ex.apply_block(h, digest(b"%d" % h), cmds).state_root
             for h, cmds in enumerate(blocks, 1)]
    return roots, ex.snapshot()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["note", "advisory", "bad", "stranger", "evidence"]),
                         max_size=4), min_size=1, max_size=6),
       st.integers(1, 3))
def test_two_replays_of_the_same_blocks_give_identical_roots(
        plan: list[list[str]], anchor_every: int) -> None:
    nonce = 0
    blocks = []
    for block_plan in plan:
        cmds = []
        for what in block_plan:
            nonce += 1
            if what == "stranger":
                cmds.append(Envelope.sign(OTHER, COMMITTEE, nonce, [note(nonce)]).raw)
            elif what == "bad":
                cmds.append(Envelope.sign(OPERATOR, COMMITTEE, nonce,
                                          [raw_append(kind="bad")]).raw)
            elif what == "evidence":
                cmds.append(Envelope.sign(OPERATOR, COMMITTEE, nonce,
                                          [evidence_command(ACCUSED, evidence())]).raw)
            else:
                cmds.append(Envelope.sign(OPERATOR, COMMITTEE, nonce,
                                          [note(nonce, what)]).raw)
        blocks.append(cmds)
    first, second = _replay(blocks, anchor_every), _replay(blocks, anchor_every)
    assert first == second
    # And a restore of the snapshot reproduces the root.
    again = Executor(COMMITTEE, Acl.allow([OPERATOR.public]), make(anchor_every=anchor_every))
    again.restore(first[1])
    assert again.state_root() == first[0][-1]


# -- reads ------------------------------------------------------------------------------------


def _filled(n: int = 7, anchor_every: int = 3) -> Chronicle:
    chain = Chain(make(anchor_every=anchor_every))
    chain.block(chain.envelope([note(i) for i in range(n)]))
    return chain.chronicle


def test_reads_with_state_proofs() -> None:
    c = _filled()
    head = c.query("head", {})
    assert (head["count"], head["anchors"], head["latest_anchor_seq"], head["anchor_every"]) \
        == (7, 2, 5, 3)
    assert head["state_root"] == c.state_root()
    read = c.query("entry", {"seq": 4})
    assert read["entry"]["seq"] == 4 and read["entry"]["body"] == encode({"i": 4})
    assert check_state_proof(read["state_proof"], c.state_root()) == read["encoded"]
    anchor = c.query("anchor", {"upto_seq": 5})
    assert anchor["anchor"] == c.anchors()[1].as_read()
    assert check_state_proof(anchor["state_proof"], c.state_root()) == anchor["encoded"]
    page = c.query("since", {"seq": 5, "limit": 1})
    assert [e["seq"] for e in page["entries"]] == [5] and page["next"] == 6
    assert c.query("since", {"seq": 9})["entries"] == []
    assert c.query("anchors", {"since": 0})["anchors"] == [a.as_read() for a in c.anchors()]
    tail = c.query("anchors", {"since": 3})
    assert tail["anchors"] == [c.anchors()[1].as_read()] and tail["next"] == 6
    assert c.query("anchors", {"since": 6}) == {"anchors": [], "next": 6, "count": 2}
    assert c.query("anchors", {"since": 0, "limit": 1})["next"] == 3


@pytest.mark.parametrize(("name", "args", "message"), [
    ("colour", {}, "unknown chronicle query 'colour' .*"),
    ("head", {"x": 1}, r"head: arguments must be \[\], got \['x'\]"),
    ("entry", {"seq": -1}, "entry: seq must be an unsigned integer"),
    ("entry", {"seq": 7}, r"entry: no entry 7 \(the chronicle has 7\)"),
    ("since", {"seq": "0"}, "since: seq must be an unsigned integer"),
    ("since", {"seq": 0, "limit": 0}, f"since: limit must be 1..{MAX_QUERY_ENTRIES}"),
    ("since", {"seq": 0, "limit": MAX_QUERY_ENTRIES + 1},
     f"since: limit must be 1..{MAX_QUERY_ENTRIES}"),
    ("anchor", {"upto_seq": 4}, r"anchor: no anchor ends at seq 4 .*"),
    ("anchor", {"upto_seq": 8}, r"anchor: no anchor ends at seq 8 .*"),
    ("anchor", {"upto_seq": None}, "anchor: upto_seq must be an unsigned integer"),
    ("anchors", {}, r"anchors: arguments must be \['limit', 'since'\], got \[\]"),
    ("anchors", {"since": True}, r"anchors: since must be an unsigned integer \(an entry seq\)"),
    ("anchors", {"since": 0, "limit": MAX_QUERY_ANCHORS + 1},
     f"anchors: limit must be 1..{MAX_QUERY_ANCHORS}"),
])
def test_bad_reads(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError, match=f"^{message}$") as info:
        _filled().query(name, args)
    # A well-formed read of an absent entry or anchor is "not found" (HTTP 404).
    absent = message.startswith(("entry: no entry", "anchor: no anchor"))
    assert isinstance(info.value, QueryNotFound) == absent


def test_reads_cannot_alias_state() -> None:
    c = _filled()
    root = c.state_root()
    c.query("entry", {"seq": 0})["entry"]["evidence_pointers"].append(1)
    c.entry_encodings().clear()
    assert c.state_root() == root and len(c) == 7


# -- snapshots --------------------------------------------------------------------------------


def test_snapshot_round_trip() -> None:
    c = _filled()
    c2 = make()
    c2.restore(c.snapshot())
    assert c2.state_root() == c.state_root() and c2.snapshot() == c.snapshot()
    # The restored chronicle keeps anchoring from where it was.
    for x in (c, c2):
        chain = Chain(x)
        chain.height = 5
        chain.block(chain.envelope([note(9), note(10)]))
    assert c2.state_root() == c.state_root() and len(c2.anchors()) == 3


def _snapshot(entries: list[Any], anchors: list[Any] | None = None, anchor_every: int = 3
              ) -> bytes:
    if anchors is None:
        anchors = [a.encode() for a in recompute_anchors(entries, anchor_every)]
    return encode(["chronicle-snapshot", 1, entries, anchors])


def _entry(seq: int, **changes: Any) -> bytes:
    base = ChronicleEntry(seq, "note", SUBJECT, encode(seq), (), None, 1, b"\x11" * 32, 0,
                          OPERATOR.public)
    return dataclasses.replace(base, **changes).encode()


def _with(seq: int, index: int, value: Any) -> bytes:
    wire = decode(_entry(seq))
    wire[index] = value
    return encode(wire)


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff", "chronicle snapshot: .*"),
    (encode(["chronicle-snapshot", 2, [], []]), "chronicle snapshot: expected .*"),
    (encode(["feed-snapshot", 1, [], []]), "chronicle snapshot: expected .*"),
    (_snapshot(["x"]), "chronicle snapshot: entry 0: expected a byte string"),
    (_snapshot([_entry(1)]), "chronicle snapshot: entry 0: sequence number 1, expected 0"),
    (_snapshot([_entry(0, height=2), _entry(1, height=1)]),
     "chronicle snapshot: entry 1: height goes backwards"),
    (_snapshot([_entry(0, tick=5), _entry(1, tick=4)]),
     "chronicle snapshot: entry 1: tick goes backwards"),
    (_snapshot([_entry(0, tick=5), _entry(1, tick=None)]),
     "chronicle snapshot: entry 1: tick goes backwards"),
    (_snapshot([_with(0, 0, "feed-entry")]),
     "chronicle snapshot: entry 0: chronicle entry: wrong type tag or schema"),
    (_snapshot([_with(0, 8, 0)]), "chronicle snapshot: entry 0: chronicle entry: seq, .*"),
    (_snapshot([_with(0, 7, -1)]), "chronicle snapshot: entry 0: chronicle entry: tick .*"),
    (_snapshot([_with(0, 9, b"x")]),
     "chronicle snapshot: entry 0: chronicle entry: envelope id must be 32 bytes"),
    (_snapshot([_with(0, 11, b"x")]),
     "chronicle snapshot: entry 0: chronicle entry: client must be a 32-byte key"),
    (_snapshot([_with(0, 3, "gossip")]),
     "chronicle snapshot: entry 0: chronicle entry: append: kind must be one of .*"),
    (_snapshot([_entry(0, kind="evidence", subject=ACCUSED.committee_id,
                       body=encode({"committee": EvidenceBody.committee_wire(ACCUSED),
                                    "evidence": FORGED.encode()}))]),
     "chronicle snapshot: entry 0: append: evidence body: first statement .*"),
    (_snapshot([_entry(i) for i in range(3)], anchors=[]),
     "chronicle snapshot: the anchors are not those the entries give with anchor_every=3"),
    (_snapshot([_entry(i) for i in range(3)],
               anchors=[ChronicleAnchor(2, b"\x00" * 32).encode()]),
     "chronicle snapshot: the anchors are not .*"),
])
def test_bad_snapshots_leave_state_as_is(data: bytes, message: str) -> None:
    c = _filled()
    before = c.snapshot()
    with pytest.raises(MalformedSnapshot, match=f"^{message}$"):
        c.restore(data)
    assert c.snapshot() == before


def test_snapshot_with_valid_evidence_restores() -> None:
    good = _entry(0, kind="evidence", subject=ACCUSED.committee_id,
                  body=EvidenceBody(ACCUSED, evidence()).encode())
    c = make()
    c.restore(_snapshot([good, _entry(1, tick=3), _entry(2, tick=3)]))
    assert len(c) == 3 and len(c.anchors()) == 1


# -- client side ------------------------------------------------------------------------------


def test_demo_commands_are_valid_appends() -> None:
    c = make()
    for r in (0, 1, 99):
        cmds = demo_commands(r)
        assert [cmd.args["kind"] for cmd in cmds] == ["note", "advisory", "publication"]
        for cmd in cmds:
            c.check(OPERATOR.public, cmd)
    assert demo_commands(1) != demo_commands(2)


def test_member_commands_are_refused() -> None:
    cmd = MemberCommand.make(COMMITTEE, "tick", {})
    with pytest.raises(InvalidCommand, match="chronicle/1 takes no member command 'tick'"):
        make().check_member(cmd)


# -- golden vectors ---------------------------------------------------------------------------

GOLDEN_ENTRY = (
    "8c6f6368726f6e69636c652d656e7472790100646e6f74655820444444444444444444444444444444444444"
    "444444444444444444444444444444a161690181835820070707070707070707070707070707070707070707"
    "07070707070707070707070c5820080808080808080808080808080808080808080808080808080808080808"
    "0808050358201111111111111111111111111111111111111111111111111111111111111111005820222222"
    "2222222222222222222222222222222222222222222222222222222222")
GOLDEN_ANCHOR_DIGEST = "3ade6fd3d0d281e06aba118f82702e3e72b5c52ab7598f308859007a34912750"
GOLDEN_EMPTY_ROOT = "f964abea252c1dda2cb1111807efe6ff8460e1478b759b5d7a0113d350138b30"


def test_golden_entry_anchor_and_empty_root() -> None:
    import blake3

    entry = ChronicleEntry(0, "note", SUBJECT, encode({"i": 1}),
                           (EvidencePointer(b"\x07" * 32, 12, b"\x08" * 32),), 5, 3, b"\x11" * 32,
                           0, b"\x22" * 32)
    assert entry.encode().hex() == GOLDEN_ENTRY
    (anchor,) = recompute_anchors([entry.encode()], 1)
    assert anchor.upto_seq == 0
    assert anchor.digest == blake3.blake3(b"\x00" * 32 + entry.encode()).digest()
    assert anchor.digest.hex() == GOLDEN_ANCHOR_DIGEST
    assert anchor.encode() == bytes.fromhex("84706368726f6e69636c652d616e63686f7201005820"
                                            + GOLDEN_ANCHOR_DIGEST)
    assert make(1).state_root().hex() == GOLDEN_EMPTY_ROOT
