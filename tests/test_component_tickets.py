"""The `tickets` component: parameters and config, every refusal, records, reads with proofs,
snapshots, replay determinism, and `verify_issued_ticket` over real certified blocks."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond import config
from coalitiond.commands.envelope import Acl, Command, Envelope, InvalidCommand
from coalitiond.commands.member import MemberCommand
from coalitiond.components import build, known_kinds
from coalitiond.components.base import (
    Applied,
    BlockContext,
    MalformedSnapshot,
    QueryError,
    QueryNotFound,
    Refused,
    check_state_proof,
)
from coalitiond.components.executor import APPLIED, Executor
from coalitiond.components.tickets import component as tickets_module
from coalitiond.components.tickets.component import (
    DEFAULT_MAX_CLAIMS_BYTES,
    DEFAULT_MAX_LIFETIME_S,
    MAX_CLAIMS_BYTES,
    MAX_CLAIMS_KEYS,
    MAX_ISSUERS,
    MAX_LIFETIME_S,
    MAX_QUERY_TICKETS,
    MAX_TIME,
    Ticket,
    Tickets,
    issue,
    revoke,
)
from coalitiond.components.tickets.verify import (
    NotAnIssuer,
    NotCertified,
    TicketNotInBlock,
    TicketVerificationError,
    WrongIssuerCommittee,
    component_config_digest,
    issuer_root,
    verify_issued_ticket,
)
from coalitiond.config.template import MemberLine, TemplateInput, render_member_config
from coalitiond.consensus.types import Block, Certificate, Vote, VoteKind
from coalitiond.log.records import FinalizedBlock
from coalitiond.primitives.coalition import MODULES, CitizenRef, Coalition, ConfluenceRef
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import OperatorError
from coalitiond.primitives.identity import derive, digest, hash_structure, make_id
from coalitiond.verify import merkle_root

ISSUER = SigningKey(digest(b"tickets-issuer"))
SECOND = SigningKey(digest(b"tickets-second-issuer"))
STRANGER = SigningKey(digest(b"tickets-stranger"))
SUBJECT = SigningKey(digest(b"tickets-subject")).public
COMMITTEE = b"\x55" * 32
T0 = 1_800_000_000


def make_tickets(**params: Any) -> Tickets:
    return Tickets.from_params({"issuers": [ISSUER.public, SECOND.public], **params})


def ticket(n: int = 0, **over: Any) -> Ticket:
    fields: dict[str, Any] = {"class": "member", "subject": SUBJECT,
                              "claims": {"serial": n, "roles": ["reader"]},
                              "not_before": T0, "expires": T0 + 3600}
    fields.update(over)
    return Ticket.from_args(fields)


def ticket_args(**over: Any) -> dict[str, Any]:
    args = ticket().to_args()
    args.update(over)
    return args


class Chain:
    def __init__(self, component: Tickets) -> None:
        self.component = component
        self.height = 0
        self.nonce = 0

    def envelope(self, key: SigningKey, *commands: Command) -> Envelope:
        self.nonce += 1
        return Envelope.sign(key, COMMITTEE, self.nonce, list(commands))

    def block(self, *envelopes: Envelope) -> list[Any]:
        self.height += 1
        return self.component.apply(BlockContext(self.height, bytes([self.height]) * 32),
                                    list(envelopes))

    def run(self, key: SigningKey, *commands: Command) -> list[Any]:
        return self.block(self.envelope(key, *commands))


# -- parameters and configuration -------------------------------------------------------------


def test_registered_and_built_from_config_params() -> None:
    assert "tickets" in known_kinds() and "tickets" in config.COMPONENT_KINDS
    cfg = config.TicketsConfig((ISSUER.public,), max_claims_bytes=100, max_lifetime_s=60)
    built = build("tickets", cfg.to_cbor())
    assert isinstance(built, Tickets) and built.signature == "tickets/1"
    assert (built.issuers, built.max_claims_bytes, built.max_lifetime_s) == (
        (ISSUER.public,), 100, 60)
    hexed = Tickets.from_params({"issuers": [ISSUER.public.hex()], "max_claims_bytes": 100,
                                 "max_lifetime_s": 60})
    assert hexed.config_digest() == built.config_digest()
    assert make_tickets().max_claims_bytes == DEFAULT_MAX_CLAIMS_BYTES
    assert Tickets.from_params({"issuers": []}).issuers == ()


def test_bounds_match_config() -> None:
    assert (MAX_ISSUERS, DEFAULT_MAX_CLAIMS_BYTES, MAX_CLAIMS_BYTES, DEFAULT_MAX_LIFETIME_S,
            MAX_LIFETIME_S) == (
        config.MAX_TICKET_ISSUERS, config.DEFAULT_TICKETS_MAX_CLAIMS_BYTES,
        config.MAX_TICKETS_CLAIMS_BYTES, config.DEFAULT_TICKETS_MAX_LIFETIME_S,
        config.MAX_TICKETS_LIFETIME_S)


@pytest.mark.parametrize(("params", "message"), [
    ({"issuers": [], "colour": 1}, "component.colour: unknown key for a ticket issuer"),
    ({}, "component.issuers: required, a list of client keys"),
    ({"issuers": ["xyz"]}, "component.issuers: 'xyz' is not hex"),
    ({"issuers": [b"\x01" * 32] * 2}, "component.issuers: a key is listed twice"),
    ({"issuers": [b"\x01" * 31]}, "component.issuers: keys must be 32 bytes (64 hex chars)"),
    ({"issuers": [bytes([i]) * 32 for i in range(MAX_ISSUERS + 1)]},
     f"component.issuers: more than {MAX_ISSUERS} keys"),
    ({"issuers": [], "max_claims_bytes": 0},
     f"component.max_claims_bytes: must be 1..{MAX_CLAIMS_BYTES}"),
    ({"issuers": [], "max_claims_bytes": MAX_CLAIMS_BYTES + 1},
     f"component.max_claims_bytes: must be 1..{MAX_CLAIMS_BYTES}"),
    ({"issuers": [], "max_lifetime_s": True},
     f"component.max_lifetime_s: must be 1..{MAX_LIFETIME_S}"),
])
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError) as info:
        Tickets.from_params(params)
    assert str(info.value) == message


def _member_config(component: str) -> str:
    return render_member_config(TemplateInput(
        kind="tickets", committee_name="tickets", network_name="testnet",
        key_file="member.key", data_dir="data", listen="127.0.0.1:7000",
        members=[MemberLine(SigningKey(b"\x07" * 32).public, "127.0.0.1:7000", "a")],
        clients=[ISSUER.public])).replace("[component]\n", "[component]\n" + component, 1)


def test_config_section_parses_and_binds_the_committee() -> None:
    path = Path("/etc/coalitiond/tickets.toml")
    parsed = config.parse_config(tomllib.loads(_member_config("max_lifetime_s = 60\n")), path)
    assert parsed.component == config.TicketsConfig((ISSUER.public,), max_lifetime_s=60)
    spec = parsed.committee_spec()
    assert spec.component_config_digest == component_config_digest(
        parsed.component.to_cbor(), parsed.committee.acl.to_cbor())
    # the template as written loads too, with every default
    plain = config.parse_config(tomllib.loads(_member_config("")), path)
    assert plain.component == config.TicketsConfig((ISSUER.public,))


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ("max_claims_bytes = 0\n", "component.max_claims_bytes", "must be at least 1, got 0"),
    (f"max_lifetime_s = {MAX_LIFETIME_S + 1}\n", "component.max_lifetime_s",
     f"must be at most {MAX_LIFETIME_S}, got {MAX_LIFETIME_S + 1}"),
    ("colour = 1\n", "component.colour",
     "unknown key (allowed here: issuers, max_claims_bytes, max_lifetime_s)"),
])
def test_config_refusals(extra: str, key: str, problem: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.parse_config(tomllib.loads(_member_config(extra)), Path("/x.toml"))
    assert (info.value.key, info.value.problem) == (key, problem)


def test_config_refuses_too_many_issuers() -> None:
    keys = ", ".join(f'"{(bytes([i]) * 32).hex()}"' for i in range(MAX_ISSUERS + 1))
    text = _member_config("").replace(f'issuers = [\n  "{ISSUER.public.hex()}",\n]',
                                      f"issuers = [{keys}]")
    assert keys in text
    with pytest.raises(config.ConfigError) as info:
        config.parse_config(tomllib.loads(text), Path("/x.toml"))
    assert info.value.problem == f"at most {MAX_ISSUERS} issuer keys, got {MAX_ISSUERS + 1}"


# -- tickets and the stateless check ----------------------------------------------------------


def test_ticket_id_is_blake3_of_the_encoding() -> None:
    t = ticket()
    wire = ["ticket", 1, "member", SUBJECT, {"serial": 0, "roles": ["reader"]}, T0, T0 + 3600]
    assert t.encode() == encode(wire)
    assert t.ticket_id == digest(encode(wire))
    assert Ticket.from_args(t.to_args()) == t
    assert ticket(1).ticket_id != t.ticket_id


ISS = "issue: "


@pytest.mark.parametrize(("command", "reason", "message"), [
    (Command("grant", {}), "unknown_op", "unknown op 'grant' (a ticket issuer accepts: issue, "
     "revoke)"),
    (Command("issue", {"class": "x"}), "bad_args",
     ISS + "args must be exactly {class, subject, claims, not_before, expires}"),
    (Command("issue", ticket_args(**{"class": "Member"})), "bad_args",
     ISS + "class must match [a-z0-9][a-z0-9._:-]* and be at most 64 chars"),
    (Command("issue", ticket_args(**{"class": "m" * 65})), "bad_args",
     ISS + "class must match [a-z0-9][a-z0-9._:-]* and be at most 64 chars"),
    (Command("issue", ticket_args(subject=b"\x01" * 31)), "bad_args",
     ISS + "subject must be a 32-byte peer id"),
    (Command("issue", ticket_args(claims=[1])), "bad_args", ISS + "claims must be a map with text "
     "keys"),
    (Command("issue", ticket_args(claims={f"k{i}": 1 for i in range(MAX_CLAIMS_KEYS + 1)})),
     "too_large", ISS + f"claims has more than {MAX_CLAIMS_KEYS} keys"),
    (Command("issue", ticket_args(claims={1: 1})), "bad_args",
     ISS + "claims keys must be text of 1..64 chars"),
    (Command("issue", ticket_args(claims={"": 1})), "bad_args",
     ISS + "claims keys must be text of 1..64 chars"),
    (Command("issue", ticket_args(claims={"blob": b"\x00" * 100})), "too_large",
     ISS + "claims of 108 bytes exceed 64"),
    (Command("issue", ticket_args(not_before=-1)), "bad_args",
     ISS + f"not_before and expires must be unix seconds 0..{MAX_TIME}"),
    (Command("issue", ticket_args(expires=MAX_TIME + 1)), "bad_args",
     ISS + f"not_before and expires must be unix seconds 0..{MAX_TIME}"),
    (Command("issue", ticket_args(expires=T0)), "bad_args", ISS + "expires must be after "
     "not_before"),
    (Command("issue", ticket_args(expires=T0 + 3601)), "bad_args",
     ISS + "lifetime of 3601 s exceeds 3600 s"),
    (Command("revoke", {}), "bad_args", "revoke: args must be exactly {ticket_id}"),
    (revoke(b"\x01"), "bad_args", "revoke: ticket_id must be 32 bytes"),
])
def test_check_refusals(command: Command, reason: str, message: str) -> None:
    component = make_tickets(max_claims_bytes=64, max_lifetime_s=3600)
    with pytest.raises(InvalidCommand) as info:
        component.check(ISSUER.public, command)
    assert (info.value.reason, str(info.value)) == (reason, message)
    root = component.state_root()
    assert Chain(component).run(ISSUER, command) == [Refused(reason, message)]
    assert component.state_root() == root


@pytest.mark.parametrize("command", [issue(ticket()), revoke(b"\x01" * 32)])
def test_only_issuers_issue_and_revoke(command: Command) -> None:
    with pytest.raises(InvalidCommand) as info:
        make_tickets().check(STRANGER.public, command)
    assert info.value.reason == "not_issuer"
    assert str(info.value) == (f"{command.op}: client {STRANGER.public.hex()} is not an issuer "
                               "of this committee")


# -- apply ------------------------------------------------------------------------------------


def test_issue_and_revoke() -> None:
    chain = Chain(make_tickets())
    t = ticket()
    [issued] = chain.run(ISSUER, issue(t))
    assert isinstance(issued, Applied) and issued.entry_index == 0
    key, record = decode(issued.entries[0])
    assert key == t.ticket_id and record[:4] == ["ticket-record", 1, t.to_wire(), ISSUER.public]
    assert record[4] == 1 and record[6] is None
    assert chain.run(SECOND, issue(t)) == [Refused(
        "already_issued", f"issue: ticket {t.ticket_id.hex()} is already issued (change a field "
        "to issue a new one)")]
    # any issuer key may revoke
    [revoked] = chain.run(SECOND, revoke(t.ticket_id))
    assert isinstance(revoked, Applied) and revoked.entry_index == 1
    read = chain.component.query("ticket", {"ticket_id": t.ticket_id})["record"]
    assert (read["revoked"], read["revoked_height"], read["issued_height"]) == (True, 3, 1)
    assert read["issuer"] == ISSUER.public and read["ticket"] == t.to_args()
    assert chain.run(ISSUER, revoke(t.ticket_id)) == [Refused(
        "already_revoked", f"revoke: ticket {t.ticket_id.hex()} was revoked at height 3")]
    unknown = b"\x02" * 32
    assert chain.run(ISSUER, revoke(unknown)) == [Refused(
        "unknown_ticket", f"revoke: no ticket {unknown.hex()}")]
    # a revoked ticket cannot be issued again either: its id is taken
    assert isinstance(chain.run(ISSUER, issue(t))[0], Refused)


def test_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tickets_module, "MAX_TICKETS", 2)
    chain = Chain(make_tickets())
    chain.run(ISSUER, issue(ticket(0)), issue(ticket(1)))
    root = chain.component.state_root()
    assert chain.run(ISSUER, issue(ticket(2))) == [
        Refused("full", "issue: the issuer holds its maximum of 2 tickets")]
    assert chain.component.state_root() == root


def test_through_the_executor() -> None:
    executor = Executor(COMMITTEE, Acl.allow([ISSUER.public]), make_tickets())
    envelope = Envelope.sign(ISSUER, COMMITTEE, 1, [issue(ticket())])
    result = executor.apply_block(1, b"\x01" * 32, [envelope.raw])
    assert [o.status for o in result.outcomes] == [APPLIED]
    assert executor.query("ticket", {"ticket_id": ticket().ticket_id})["record"]["envelope_id"] \
        == envelope.envelope_id


# -- commitment and reads ---------------------------------------------------------------------


def populated(n: int = 5) -> Chain:
    chain = Chain(make_tickets())
    for i in range(n):
        chain.run(ISSUER if i % 2 else SECOND, issue(ticket(i)))
    chain.run(ISSUER, revoke(ticket(1).ticket_id))
    return chain


def test_state_root_is_the_documented_preimage() -> None:
    component = populated().component
    leaves = [component._records[k].leaf() for k in sorted(component._records)]
    assert component.state_root() == hash_structure("tickets-state", 1, 5, 1, 6,
                                                    merkle_root(leaves))
    assert make_tickets().state_root() == hash_structure("tickets-state", 1, 0, 0, 0,
                                                         merkle_root([]))


def test_ticket_read_comes_with_a_state_proof() -> None:
    component = populated().component
    root = component.state_root()
    for i in range(5):
        t = ticket(i)
        read = component.query("ticket", {"ticket_id": t.ticket_id})
        leaf = check_state_proof(read["state_proof"], root)
        assert leaf == read["leaf"]
        assert decode(leaf)[0] == t.ticket_id and read["record"]["revoked"] == (i == 1)


def test_head_and_paging() -> None:
    component = populated().component
    assert component.query("head", {}) == {
        "count": 5, "revoked": 1, "events": 6, "tree_root": component._current_tree().root(),
        "state_root": component.state_root()}
    ids = sorted(ticket(i).ticket_id for i in range(5))
    first = component.query("tickets", {"limit": 2})
    assert [t["ticket_id"] for t in first["tickets"]] == ids[:2] and first["next"] == ids[1]
    rest = component.query("tickets", {"after": first["next"]})
    assert [t["ticket_id"] for t in rest["tickets"]] == ids[2:] and rest["next"] is None
    assert rest["count"] == 5


def test_reads_do_not_alias_state() -> None:
    component = populated().component
    root = component.state_root()
    read = component.query("ticket", {"ticket_id": ticket(0).ticket_id})
    read["record"]["ticket"]["claims"]["roles"].append("admin")
    assert component.state_root() == root
    assert component.query("ticket", {"ticket_id": ticket(0).ticket_id})["record"]["ticket"] \
        == ticket(0).to_args()


@pytest.mark.parametrize(("name", "args", "message"), [
    ("ticketz", {}, "unknown tickets query 'ticketz' (known: head, ticket, tickets)"),
    ("head", {"x": 1}, "head: arguments must be [], got ['x']"),
    ("ticket", {}, "ticket: arguments must be ['ticket_id'], got []"),
    ("ticket", {"ticket_id": b"\x01"}, "ticket: ticket_id must be 32 bytes"),
    ("ticket", {"ticket_id": b"\x01" * 32}, f"ticket: no ticket {'01' * 32}"),
    ("tickets", {"after": 1}, "tickets: after must be 32 bytes or null"),
    ("tickets", {"limit": MAX_QUERY_TICKETS + 1}, f"tickets: limit must be 1..{MAX_QUERY_TICKETS}"),
])
def test_query_errors(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError) as info:
        make_tickets().query(name, args)
    assert str(info.value) == message
    # A well-formed read of an absent ticket is "not found" (HTTP 404), the rest bad requests.
    assert isinstance(info.value, QueryNotFound) == message.startswith("ticket: no ticket")


# -- snapshots --------------------------------------------------------------------------------


def test_snapshot_round_trip() -> None:
    chain = populated()
    data = chain.component.snapshot()
    fresh = make_tickets()
    fresh.restore(data)
    assert fresh.state_root() == chain.component.state_root() and fresh.snapshot() == data
    for component in (fresh, chain.component):
        Chain(component).run(ISSUER, issue(ticket(77)))
    assert fresh.state_root() == chain.component.state_root()


def _row(t: Ticket | None = None, **over: Any) -> bytes:
    t = t or ticket()
    f: dict[str, Any] = {"tag": "ticket-record", "wire": t.to_wire(), "issuer": ISSUER.public,
                         "height": 1, "envelope": b"\x03" * 32, "revoked": None,
                         "id": t.ticket_id}
    f.update(over)
    return encode([f["id"], [f["tag"], 1, f["wire"], f["issuer"], f["height"], f["envelope"],
                             f["revoked"]]])


def _snap(rows: list[Any], events: Any = 100) -> bytes:
    return encode(["tickets-snapshot", 1, events, rows])


_BAD = "tickets snapshot: ticket 0: "
_W = ticket().to_wire()


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff", "tickets snapshot: "),
    (encode(["tickets-snapshot", 1, 0]),
     'tickets snapshot: expected ["tickets-snapshot", 1, events, [leaf…]]'),
    (_snap([_row()], events=0),
     "tickets snapshot: event count must be an unsigned integer at least tickets + revocations"),
    (_snap([_row(revoked=2)], events=1),
     "tickets snapshot: event count must be an unsigned integer at least tickets + revocations"),
    (_snap([1]), _BAD + "expected a byte string"),
    (_snap([encode([1, 2])]), _BAD + 'expected [ticket_id, ["ticket-record", 1, …7 items]]'),
    (_snap([_row(tag="record")]), _BAD + "wrong record type tag or schema"),
    (_snap([_row(wire=["ticket", 2, *_W[2:]])]), _BAD + 'expected a ["ticket", 1, …7 items] '
     "ticket"),
    (_snap([_row(wire=[*_W[:5], T0, T0])]), _BAD + "issue: expires must be after not_before"),
    (_snap([_row(issuer=STRANGER.public)]),
     _BAD + "issued by a key that is not an issuer of this committee"),
    (_snap([_row(height=0)]), _BAD + "issued_height must be >= 1 and envelope_id 32 bytes"),
    (_snap([_row(envelope=b"\x01")]), _BAD + "issued_height must be >= 1 and envelope_id 32 "
     "bytes"),
    (_snap([_row(height=5, revoked=4)]), _BAD + "revoked_height must be null or at least "
     "issued_height"),
    (_snap([_row(id=b"\x00" * 32)]), _BAD + "not the canonical encoding of its record (or a "
     "wrong ticket id)"),
    (_snap([_row(), _row()]), "tickets snapshot: ticket 1: ticket ids are not strictly "
     "ascending"),
])
def test_malformed_snapshot_leaves_state_alone(data: bytes, message: str) -> None:
    component = populated().component
    before = (component.state_root(), component.snapshot())
    with pytest.raises(MalformedSnapshot) as info:
        component.restore(data)
    assert str(info.value).startswith(message)
    assert (component.state_root(), component.snapshot()) == before


# -- properties -------------------------------------------------------------------------------

KEYS = [ISSUER, SECOND, STRANGER]
command_strategy = st.one_of(
    st.builds(lambda n: issue(ticket(n)), st.integers(0, 4)),
    st.builds(lambda n: revoke(ticket(n).ticket_id), st.integers(0, 5)),
)
blocks_strategy = st.lists(
    st.lists(st.tuples(st.sampled_from(range(len(KEYS))),
                       st.lists(command_strategy, min_size=1, max_size=3)), max_size=3),
    min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(blocks_strategy)
def test_replay_gives_identical_roots_at_every_height(blocks: list[Any]) -> None:
    a, b = Chain(make_tickets()), Chain(make_tickets())
    for block in blocks:
        envelopes = [a.envelope(KEYS[k], *commands) for k, commands in block]
        assert a.block(*envelopes) == b.block(*envelopes)
        assert a.component.state_root() == b.component.state_root()
        assert a.component.snapshot() == b.component.snapshot()


@settings(max_examples=40, deadline=None)
@given(blocks_strategy)
def test_only_issuer_keys_change_state(blocks: list[Any]) -> None:
    chain = Chain(make_tickets())
    for block in blocks:
        envelopes = [chain.envelope(KEYS[k], *commands) for k, commands in block]
        results = iter(chain.block(*envelopes))
        for envelope in envelopes:
            for _ in envelope.commands:
                if isinstance(next(results), Applied):
                    assert envelope.client in (ISSUER.public, SECOND.public)
    assert all(r.issuer != STRANGER.public for r in chain.component._records.values())


# -- verify_issued_ticket ---------------------------------------------------------------------

MEMBERS = [SigningKey(digest(f"tickets-member-{i}".encode())) for i in range(4)]
ADMITTED_STRANGER = SigningKey(digest(b"tickets-admitted-stranger"))
PARAMS = config.TicketsConfig((ISSUER.public, SECOND.public)).to_cbor()
ACL = config.AclConfig((ISSUER.public, SECOND.public, ADMITTED_STRANGER.public)).to_cbor()
SPEC = CommitteeSpec("testnet", "tickets", "issuer", tuple(m.public for m in MEMBERS), 1,
                     component_config_digest=component_config_digest(PARAMS, ACL))


def certified(*commands: bytes, signers: int | None = None) -> FinalizedBlock:
    block = Block(SPEC.epoch, 3, 7, b"\x09" * 32, 3, tuple(commands), 2, b"\x00" * 32)
    votes = [Vote.sign(m, SPEC, i, VoteKind.FINALIZE, block.view, block.digest)
             for i, m in enumerate(MEMBERS)][: SPEC.quorum if signers is None else signers]
    return FinalizedBlock(block, Certificate.from_votes(votes), None, tuple(votes), "")


def issued_by(key: SigningKey, *tickets: Ticket, nonce: int = 1) -> bytes:
    return Envelope.sign(key, SPEC.committee_id, nonce, [issue(t) for t in tickets]).raw


def verify(t: Ticket, fb: FinalizedBlock | Block, **kw: Any) -> bytes:
    return verify_issued_ticket(t, fb, SPEC, params=kw.pop("params", PARAMS),
                                acl=kw.pop("acl", ACL), **kw)


def test_verify_accepts_a_certified_issue() -> None:
    stamp = MemberCommand.make(SPEC.committee_id, "stamp", {}).raw
    other = Envelope.sign(SECOND, SPEC.committee_id, 5, [revoke(b"\x01" * 32)]).raw
    fb = certified(stamp, b"\x00junk", other, issued_by(SECOND, ticket(1), ticket(2)))
    assert verify(ticket(2), fb) == ticket(2).ticket_id
    assert verify(ticket(1), fb.block, certificate=fb.finalization) == ticket(1).ticket_id
    # and the executor of that committee applies exactly that command
    executor = Executor(SPEC.committee_id, Acl.allow(ACL["clients"]), Tickets.from_params(PARAMS))
    result = executor.apply_block(1, fb.block.digest, [issued_by(SECOND, ticket(1), ticket(2))])
    assert [o.status for o in result.outcomes] == [APPLIED, APPLIED]


def test_verify_refuses_a_forged_certificate_signature() -> None:
    fb = certified(issued_by(ISSUER, ticket()))
    assert fb.finalization is not None
    sigs = list(fb.finalization.signatures)
    forged_by = SigningKey(digest(b"not-a-member"))
    forged = Vote.sign(forged_by, SPEC, 0, VoteKind.FINALIZE, fb.block.view, fb.block.digest)
    sigs[0] = (0, forged.signature)
    cert = Certificate(VoteKind.FINALIZE, SPEC.epoch, fb.block.view, fb.block.digest,
                       tuple(sigs))
    with pytest.raises(NotCertified, match="certificate signature of member 0 does not verify"):
        verify(ticket(), fb, certificate=cert)


def test_verify_refuses_a_certificate_below_quorum() -> None:
    fb = certified(issued_by(ISSUER, ticket()), signers=SPEC.quorum - 1)
    with pytest.raises(NotCertified) as info:
        verify(ticket(), fb)
    assert str(info.value) == (f"height 3: certificate has {SPEC.quorum - 1} signatures, "
                               f"quorum is {SPEC.quorum}")


def test_verify_refuses_a_certificate_for_another_block_or_none() -> None:
    fb = certified(issued_by(ISSUER, ticket()))
    other = certified(issued_by(ISSUER, ticket(1)))
    with pytest.raises(NotCertified, match="not a finalization of this block"):
        verify(ticket(), fb, certificate=other.finalization)
    with pytest.raises(NotCertified, match="no finalization certificate"):
        verify(ticket(), fb.block)
    assert other.finalization is not None
    final = other.finalization
    notarize = Certificate(VoteKind.NOTARIZE, final.epoch, final.view, final.digest,
                           final.signatures)
    with pytest.raises(NotCertified, match="not a finalization of this block"):
        verify(ticket(1), other, certificate=notarize)


def test_verify_refuses_a_ticket_not_in_the_block() -> None:
    fb = certified(issued_by(ISSUER, ticket(1)))
    with pytest.raises(TicketNotInBlock) as info:
        verify(ticket(), fb)
    assert str(info.value) == (f"height 3: the block holds no issue command for ticket "
                               f"{ticket().ticket_id.hex()}")
    # the same ticket issued into another committee does not count
    elsewhere = Envelope.sign(ISSUER, b"\x66" * 32, 1, [issue(ticket())]).raw
    with pytest.raises(TicketNotInBlock):
        verify(ticket(), certified(elsewhere))


def test_verify_refuses_a_ticket_from_a_non_issuer_key() -> None:
    fb = certified(issued_by(ADMITTED_STRANGER, ticket()))
    with pytest.raises(NotAnIssuer) as info:
        verify(ticket(), fb)
    assert str(info.value) == (
        f"height 3: ticket {ticket().ticket_id.hex()} is in the block, but that issue is "
        f"refused: not_issuer: issue: client {ADMITTED_STRANGER.public.hex()} is not an issuer "
        "of this committee")
    unadmitted = certified(issued_by(STRANGER, ticket()))
    with pytest.raises(NotAnIssuer, match="is not admitted by the issuer's ACL"):
        verify(ticket(), unadmitted)


def test_verify_refuses_a_forged_envelope_signature() -> None:
    raw = bytearray(issued_by(ISSUER, ticket()))
    raw[-1] ^= 1
    with pytest.raises(NotAnIssuer, match="bad_signature"):
        verify(ticket(), certified(bytes(raw)))


def test_verify_refuses_parameters_the_committee_was_not_built_with() -> None:
    fb = certified(issued_by(ADMITTED_STRANGER, ticket()))
    widened = config.TicketsConfig((ISSUER.public, ADMITTED_STRANGER.public)).to_cbor()
    with pytest.raises(WrongIssuerCommittee, match="not the ones the committee"):
        verify(ticket(), fb, params=widened)
    feed_spec = CommitteeSpec("testnet", "feed", "issuer", SPEC.members, 1)
    with pytest.raises(WrongIssuerCommittee, match="runs 'feed', not 'tickets'"):
        verify_issued_ticket(ticket(), fb, feed_spec, params=PARAMS, acl=ACL)
    assert issubclass(WrongIssuerCommittee, TicketVerificationError)


def test_issuer_root_is_derived_from_the_coalition_root() -> None:
    acme = Coalition(
        name="acme.coalition",
        lattices=(CitizenRef(make_id("lattice|ethereum.mainnet")),
                  CitizenRef(make_id("lattice|base.mainnet"))),
        organisms=(CitizenRef(make_id("instance|acme.oracle")),),
        confluences=(ConfluenceRef("acme.intents", make_id("confluence|acme.intents")),),
        modules=MODULES, ticket_issuer=make_id("issuer|acme.tickets"))
    # SPEC §6 golden vector
    assert issuer_root(acme).hex() == (
        "fe858df7e92aef7ccd4ca74850432976b371b270647a0339d1614132abeb6510")
    assert issuer_root(acme) == derive(acme.root, "tickets")
    bare = Coalition(name="acme.coalition", modules=MODULES)
    with pytest.raises(OperatorError, match="declares no ticket issuer"):
        issuer_root(bare)
