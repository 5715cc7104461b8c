"""The `atlas` component: parameters, every refusal, records, reads with proofs, snapshots,
replay determinism and the publishing invariant."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond import config
from coalitiond.commands.envelope import Acl, Command, Envelope, InvalidCommand
from coalitiond.components import build, known_kinds
from coalitiond.components.atlas.component import (
    MAX_CARD_BYTES,
    MAX_CATALOGUE,
    MAX_ENDPOINT_HINTS,
    MAX_HINT_LEN,
    MAX_METADATA_KEY_LEN,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LEN,
    MAX_MRTD_PINS,
    MAX_QUERY_CARDS,
    MAX_ROLE_LEN,
    Atlas,
    CitizenCard,
    demo_commands,
    publish_card,
    retire_card,
)
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
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import LocalError, OperatorError
from coalitiond.primitives.identity import digest, hash_structure, make_id

OPERATORS = [SigningKey(digest(f"atlas-operator-{i}".encode())) for i in range(3)]
STRANGER = SigningKey(digest(b"atlas-stranger"))
CITIZENS = sorted(make_id(f"lattice|atlas-{i}") for i in range(3))
UNCATALOGUED = make_id("lattice|nobody")
COMMITTEE = b"\x44" * 32
PIN = b"\x48" * 48


def make_atlas() -> Atlas:
    return Atlas.from_params({"citizens": [[c, k.public] for c, k in zip(CITIZENS, OPERATORS,
                                                                          strict=True)],
                              "follow_almanac": None})


def card(i: int = 0, **over: Any) -> CitizenCard:
    fields: dict[str, Any] = {
        "citizen_id": CITIZENS[i], "role": "lattice", "endpoint_hints": ["tcp://10.0.0.1:7000"],
        "ticket_issuance_root": None, "mrtd_pins": [PIN], "schema_version": 1,
        "metadata": {"name": f"citizen {i}"}}
    fields.update(over)
    return CitizenCard.from_args(fields)


def card_args(i: int = 0, **over: Any) -> dict[str, Any]:
    args = card(i).to_args()
    args.update(over)
    return args


class Chain:
    """Feeds a component envelopes block by block, as the executor would."""

    def __init__(self, atlas: Atlas) -> None:
        self.atlas = atlas
        self.height = 0
        self.nonce = 0

    def envelope(self, key: SigningKey, *commands: Command) -> Envelope:
        self.nonce += 1
        return Envelope.sign(key, COMMITTEE, self.nonce, list(commands))

    def block(self, *envelopes: Envelope, tick: int | None = None) -> list[Any]:
        self.height += 1
        return self.atlas.apply(BlockContext(self.height, bytes([self.height]) * 32, tick),
                                list(envelopes))

    def run(self, key: SigningKey, *commands: Command) -> list[Any]:
        return self.block(self.envelope(key, *commands))


# -- parameters -------------------------------------------------------------------------------


def test_registered_and_built_from_config_params() -> None:
    assert "atlas" in known_kinds()
    cfg = config.AtlasConfig((config.CatalogEntry(CITIZENS[0], OPERATORS[0].public),),
                             follow_almanac=b"\x01" * 32)
    built = build("atlas", cfg.to_cbor())
    assert isinstance(built, Atlas) and built.signature == "atlas/1"
    assert [(e.stable_id, e.operator_key) for e in built.catalogue] == [
        (CITIZENS[0], OPERATORS[0].public)]
    hexed = Atlas.from_params({"citizens": [[CITIZENS[0].hex(), OPERATORS[0].public.hex()]]})
    assert hexed.config_digest() == built.config_digest()


def test_catalogue_bound_matches_config() -> None:
    assert MAX_CATALOGUE == config.MAX_CITIZENS


@pytest.mark.parametrize(("params", "message"), [
    ({"citizens": [], "colour": 1}, "component.colour: unknown key for an atlas"),
    ({}, "component.citizens: required, a list of [stable id, operator key] pairs"),
    ({"citizens": [], "follow_almanac": b"\x01"},
     "component.follow_almanac: must be a 32-byte committee id"),
    ({"citizens": [[b"\x01" * 32]]}, "component.citizens: each citizen is [stable id, "
     "operator key]"),
    ({"citizens": [["zz", b"\x01" * 32]]}, "component.citizens: stable id 'zz' is not hex"),
    ({"citizens": [[b"\x01" * 31, b"\x01" * 32]]},
     "component.citizens: stable id must be 32 bytes (64 hex chars)"),
    ({"citizens": [[b"\x01" * 32, b"\x01" * 33]]},
     "component.citizens: operator key must be 32 bytes (64 hex chars)"),
    ({"citizens": [[b"\x01" * 32, b"\x02" * 32], [b"\x01" * 32, b"\x03" * 32]]},
     f"component.citizens: citizen {'01' * 32} is catalogued twice"),
    ({"citizens": [[bytes([i // 256, i % 256]) * 16, b"\x01" * 32]
                   for i in range(MAX_CATALOGUE + 1)]},
     f"component.citizens: more than {MAX_CATALOGUE} citizens"),
])
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError) as info:
        Atlas.from_params(params)
    assert str(info.value) == message


def test_config_digest_commits_to_the_ordered_catalogue() -> None:
    a = Atlas.from_params({"citizens": [[CITIZENS[0], OPERATORS[0].public],
                                        [CITIZENS[1], OPERATORS[1].public]]})
    b = Atlas.from_params({"citizens": [[CITIZENS[1], OPERATORS[1].public],
                                        [CITIZENS[0], OPERATORS[0].public]]})
    c = Atlas.from_params({"citizens": [[CITIZENS[0], OPERATORS[1].public],
                                        [CITIZENS[1], OPERATORS[1].public]]})
    assert len({a.config_digest(), b.config_digest(), c.config_digest()}) == 3


# -- stateless check --------------------------------------------------------------------------

P = "publish_card: "
#: Every metadata key at its longest value: within each field's bound, over the card's.
FULL_METADATA = {f"k{i:02}": "v" * MAX_METADATA_VALUE_LEN for i in range(MAX_METADATA_KEYS)}
FULL_CARD_BYTES = len(encode(CitizenCard(
    CITIZENS[0], "lattice", ("tcp://10.0.0.1:7000",), None, (PIN,), 1,
    tuple(sorted(FULL_METADATA.items()))).to_wire()))
R = "retire_card: "


@pytest.mark.parametrize(("command", "reason", "message"), [
    (Command("delete_card", {}), "unknown_op",
     "unknown op 'delete_card' (an atlas accepts: publish_card, retire_card)"),
    (Command("publish_card", {}), "bad_args", P + "args must be exactly {card}"),
    (Command("publish_card", {"card": [1]}), "bad_args",
     P + "card must be a map of exactly {citizen_id, role, endpoint_hints, "
     "ticket_issuance_root, mrtd_pins, schema_version, metadata}"),
    (Command("publish_card", {"card": {**card_args(), "extra": 1}}), "bad_args",
     P + "card must be a map of exactly {citizen_id, role, endpoint_hints, "
     "ticket_issuance_root, mrtd_pins, schema_version, metadata}"),
    (Command("publish_card", {"card": card_args(citizen_id=b"\x01")}), "bad_args",
     P + "card.citizen_id must be 32 bytes"),
    (Command("publish_card", {"card": card_args(role=1)}), "bad_args",
     P + "card.role must be text"),
    (Command("publish_card", {"card": card_args(role="r" * (MAX_ROLE_LEN + 1))}), "too_large",
     P + f"card.role is longer than {MAX_ROLE_LEN} chars"),
    (Command("publish_card", {"card": card_args(role="Lattice")}), "bad_args",
     P + "card.role must match [a-z0-9][a-z0-9._:-]*"),
    (Command("publish_card", {"card": card_args(role="")}), "bad_args",
     P + "card.role must match [a-z0-9][a-z0-9._:-]*"),
    (Command("publish_card", {"card": card_args(endpoint_hints="x")}), "bad_args",
     P + "card.endpoint_hints must be a list of text"),
    (Command("publish_card", {"card": card_args(
        endpoint_hints=[f"h{i}" for i in range(MAX_ENDPOINT_HINTS + 1)])}), "too_large",
     P + f"card.endpoint_hints has more than {MAX_ENDPOINT_HINTS} items"),
    (Command("publish_card", {"card": card_args(endpoint_hints=[b"x"])}), "bad_args",
     P + "card.endpoint_hints[0] must be text"),
    (Command("publish_card", {"card": card_args(endpoint_hints=["a", "h" * (MAX_HINT_LEN + 1)])}),
     "too_large", P + f"card.endpoint_hints[1] is longer than {MAX_HINT_LEN} chars"),
    (Command("publish_card", {"card": card_args(endpoint_hints=["a b"])}), "bad_args",
     P + "card.endpoint_hints[0] must be non-empty printable ASCII without spaces"),
    (Command("publish_card", {"card": card_args(endpoint_hints=[""])}), "bad_args",
     P + "card.endpoint_hints[0] must be non-empty printable ASCII without spaces"),
    (Command("publish_card", {"card": card_args(endpoint_hints=["a", "a"])}), "bad_args",
     P + "card.endpoint_hints lists a hint twice"),
    (Command("publish_card", {"card": card_args(ticket_issuance_root=b"\x01" * 31)}), "bad_args",
     P + "card.ticket_issuance_root must be 32 bytes or null"),
    (Command("publish_card", {"card": card_args(mrtd_pins=PIN)}), "bad_args",
     P + "card.mrtd_pins must be a list of 48-byte values"),
    (Command("publish_card", {"card": card_args(
        mrtd_pins=[bytes([i]) * 48 for i in range(MAX_MRTD_PINS + 1)])}), "too_large",
     P + f"card.mrtd_pins has more than {MAX_MRTD_PINS} items"),
    (Command("publish_card", {"card": card_args(mrtd_pins=[b"\x01" * 32])}), "bad_args",
     P + "card.mrtd_pins[0] must be 48 bytes"),
    (Command("publish_card", {"card": card_args(mrtd_pins=[PIN, PIN])}), "bad_args",
     P + "card.mrtd_pins lists a pin twice"),
    (Command("publish_card", {"card": card_args(schema_version=-1)}), "bad_args",
     P + f"card.schema_version must be an integer 0..{2**32 - 1}"),
    (Command("publish_card", {"card": card_args(schema_version=2**32)}), "bad_args",
     P + f"card.schema_version must be an integer 0..{2**32 - 1}"),
    (Command("publish_card", {"card": card_args(schema_version=True)}), "bad_args",
     P + f"card.schema_version must be an integer 0..{2**32 - 1}"),
    (Command("publish_card", {"card": card_args(metadata=[])}), "bad_args",
     P + "card.metadata must be a map of text to text"),
    (Command("publish_card", {"card": card_args(
        metadata={f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)})}), "too_large",
     P + f"card.metadata has more than {MAX_METADATA_KEYS} keys"),
    (Command("publish_card", {"card": card_args(metadata={"k": 1})}), "bad_args",
     P + "card.metadata must be a map of non-empty text keys to text"),
    (Command("publish_card", {"card": card_args(metadata={"": "v"})}), "bad_args",
     P + "card.metadata must be a map of non-empty text keys to text"),
    (Command("publish_card", {"card": card_args(metadata={1: "v"})}), "bad_args",
     P + "card.metadata must be a map of non-empty text keys to text"),
    (Command("publish_card", {"card": card_args(
        metadata={"k" * (MAX_METADATA_KEY_LEN + 1): "v"})}), "too_large",
     P + f"card.metadata key 'kkkkkkkkkkkkkkkk'… is longer than {MAX_METADATA_KEY_LEN} chars"),
    (Command("publish_card", {"card": card_args(
        metadata={"k": "v" * (MAX_METADATA_VALUE_LEN + 1)})}), "too_large",
     P + f"card.metadata['k'] is longer than {MAX_METADATA_VALUE_LEN} chars"),
    (Command("publish_card", {"card": card_args(metadata=FULL_METADATA)}),
     "too_large", P + f"card of {FULL_CARD_BYTES} bytes exceeds {MAX_CARD_BYTES}"),
    (Command("publish_card", {"card": card_args(citizen_id=UNCATALOGUED)}), "not_catalogued",
     P + f"citizen {UNCATALOGUED.hex()} is not catalogued"),
    (Command("retire_card", {"citizen_id": CITIZENS[0]}), "bad_args",
     R + "args must be exactly {citizen_id, replacement}"),
    (retire_card(b"\x01"), "bad_args", R + "citizen_id must be 32 bytes"),
    (retire_card(CITIZENS[0], b"\x01"), "bad_args", R + "replacement must be 32 bytes or null"),
    (retire_card(CITIZENS[0], CITIZENS[0]), "bad_args",
     R + "a citizen cannot be its own replacement"),
    (retire_card(UNCATALOGUED), "not_catalogued",
     R + f"citizen {UNCATALOGUED.hex()} is not catalogued"),
])
def test_check_refusals(command: Command, reason: str, message: str) -> None:
    atlas = make_atlas()
    with pytest.raises(InvalidCommand) as info:
        atlas.check(OPERATORS[0].public, command)
    assert (info.value.reason, str(info.value)) == (reason, message)
    # apply refuses the same way, and changes nothing
    root = atlas.state_root()
    results = Chain(atlas).run(OPERATORS[0], command)
    assert results == [Refused(reason, message)]
    assert atlas.state_root() == root


@pytest.mark.parametrize("command", [publish_card(card(1)), retire_card(CITIZENS[1])])
def test_only_the_citizens_operator_signs(command: Command) -> None:
    atlas = make_atlas()
    for key in (OPERATORS[0], STRANGER):
        with pytest.raises(InvalidCommand) as info:
            atlas.check(key.public, command)
        assert info.value.reason == "not_operator"
        assert str(info.value) == (f"{command.op}: client {key.public.hex()} is not the "
                                   f"operator of citizen {CITIZENS[1].hex()}")
    atlas.check(OPERATORS[1].public, command)  # the operator passes the stateless check


# -- apply ------------------------------------------------------------------------------------


def test_publish_stores_the_card_and_logs_the_change() -> None:
    chain = Chain(make_atlas())
    results = chain.block(chain.envelope(OPERATORS[0], publish_card(card(0))), tick=7)
    assert len(results) == 1 and isinstance(results[0], Applied)
    assert results[0].entry_index == 0
    leaf = results[0].entries[0]
    assert decode(leaf) == [CITIZENS[0], ["atlas-record", 1, card(0).to_wire(), False, None,
                                          1, 7]]
    again = chain.run(OPERATORS[0], publish_card(card(0, role="organism")))
    assert again[0].entry_index == 1
    read = chain.atlas.query("card", {"citizen_id": CITIZENS[0]})["record"]
    assert read["card"]["role"] == "organism" and read["changed_height"] == 2
    assert read["changed_tick"] is None and read["retired"] is False


def test_retire_then_republish_is_refused() -> None:
    chain = Chain(make_atlas())
    assert chain.run(OPERATORS[0], retire_card(CITIZENS[0])) == [
        Refused("no_card", f"retire_card: citizen {CITIZENS[0].hex()} has no card to retire")]
    chain.run(OPERATORS[0], publish_card(card(0)))
    results = chain.run(OPERATORS[0], retire_card(CITIZENS[0], CITIZENS[1]))
    assert isinstance(results[0], Applied) and results[0].entry_index == 1
    record = chain.atlas.query("card", {"citizen_id": CITIZENS[0]})["record"]
    assert (record["retired"], record["replacement"], record["changed_height"]) == (
        True, CITIZENS[1], 3)
    assert record["card"] == card(0).to_args()  # the last card stays readable
    root = chain.atlas.state_root()
    assert chain.run(OPERATORS[0], publish_card(card(0))) == [Refused(
        "retired", f"publish_card: the card of citizen {CITIZENS[0].hex()} is retired and "
        "cannot be republished")]
    assert chain.run(OPERATORS[0], retire_card(CITIZENS[0])) == [Refused(
        "retired", f"retire_card: the card of citizen {CITIZENS[0].hex()} is already retired")]
    assert chain.atlas.state_root() == root


def test_mixed_envelope_applies_each_command_on_its_own() -> None:
    chain = Chain(make_atlas())
    results = chain.run(OPERATORS[0], publish_card(card(0)), publish_card(card(1)),
                        retire_card(CITIZENS[0]))
    assert [type(r) for r in results] == [Applied, Refused, Applied]
    assert isinstance(results[1], Refused) and results[1].reason == "not_operator"
    assert [r.entry_index for r in results if isinstance(r, Applied)] == [0, 1]


def test_through_the_executor() -> None:
    atlas = make_atlas()
    executor = Executor(COMMITTEE, Acl.allow([k.public for k in OPERATORS]), atlas)
    envelope = Envelope.sign(OPERATORS[2], COMMITTEE, 1, [publish_card(card(2))])
    result = executor.apply_block(1, b"\x01" * 32, [envelope.raw])
    assert [o.status for o in result.outcomes] == [APPLIED]
    assert executor.query("head", {})["count"] == 1


# -- commitment and reads ---------------------------------------------------------------------


def populated() -> Chain:
    chain = Chain(make_atlas())
    for i in (2, 0, 1):
        chain.run(OPERATORS[i], publish_card(card(i)))
    chain.run(OPERATORS[2], publish_card(card(2, metadata={"v": "2"})))
    return chain


def test_state_root_is_the_documented_preimage() -> None:
    atlas = populated().atlas
    leaves = [atlas._records[c].leaf() for c in sorted(CITIZENS)]
    from coalitiond.verify import merkle_root
    assert atlas.state_root() == hash_structure("atlas-state", 1, 3, 4, merkle_root(leaves))
    assert make_atlas().state_root() == hash_structure("atlas-state", 1, 0, 0,
                                                      merkle_root([]))


def test_card_read_comes_with_a_state_proof() -> None:
    atlas = populated().atlas
    root = atlas.state_root()
    for citizen in CITIZENS:
        read = atlas.query("card", {"citizen_id": citizen})
        leaf = check_state_proof(read["state_proof"], root)
        assert leaf == read["leaf"]
        key, record = decode(leaf)
        assert key == citizen and record[2][2] == citizen
        assert read["record"]["citizen_id"] == citizen
    # a proof against another root does not verify
    read = atlas.query("card", {"citizen_id": CITIZENS[0]})
    with pytest.raises(Exception, match="root preimage"):
        check_state_proof(read["state_proof"], make_atlas().state_root())


def test_head_cards_and_changes() -> None:
    atlas = populated().atlas
    head = atlas.query("head", {})
    assert head == {"count": 3, "catalogued": 3, "changes": 4,
                    "tree_root": atlas._current_tree().root(), "state_root": atlas.state_root()}
    everything = atlas.query("cards", {})
    assert [c["citizen_id"] for c in everything["cards"]] == sorted(CITIZENS)
    assert everything["next"] is None and everything["count"] == 3
    first = atlas.query("cards", {"limit": 2})
    assert [c["citizen_id"] for c in first["cards"]] == sorted(CITIZENS)[:2]
    rest = atlas.query("cards", {"after": first["next"]})
    assert [c["citizen_id"] for c in rest["cards"]] == sorted(CITIZENS)[2:]
    # changes after height 2: citizen 1 (height 3) and citizen 2 (height 4), in height order
    changes = atlas.query("changes", {"since_height": 2})
    assert [(c["changed_height"], c["citizen_id"]) for c in changes["cards"]] == [
        (3, CITIZENS[1]), (4, CITIZENS[2])]
    assert changes["next"] is None
    paged = atlas.query("changes", {"since_height": 0, "limit": 1})
    assert [c["citizen_id"] for c in paged["cards"]] == [CITIZENS[0]]
    assert paged["next"] == {"since_height": 2, "after": CITIZENS[0]}
    cont = atlas.query("changes", {**paged["next"], "limit": 1})
    assert [c["citizen_id"] for c in cont["cards"]] == [CITIZENS[1]]


def test_reads_do_not_alias_state() -> None:
    atlas = populated().atlas
    root = atlas.state_root()
    read = atlas.query("card", {"citizen_id": CITIZENS[0]})
    read["record"]["card"]["metadata"]["name"] = "changed"
    read["record"]["card"]["endpoint_hints"].append("x")
    atlas.query("cards", {})["cards"][0]["card"]["mrtd_pins"].clear()
    assert atlas.state_root() == root


@pytest.mark.parametrize(("name", "args", "message"), [
    ("cardz", {}, "unknown atlas query 'cardz' (known: card, cards, changes, head)"),
    ("head", {"x": 1}, "head: arguments must be [], got ['x']"),
    ("card", {}, "card: arguments must be ['citizen_id'], got []"),
    ("card", {"citizen_id": b"\x01"}, "card: citizen_id must be 32 bytes"),
    ("card", {"citizen_id": UNCATALOGUED}, f"card: citizen {UNCATALOGUED.hex()} is not "
     "catalogued"),
    ("card", {"citizen_id": CITIZENS[0]}, f"card: citizen {CITIZENS[0].hex()} has no card"),
    ("cards", {"after": b"\x01"}, "cards: after must be 32 bytes or null"),
    ("cards", {"limit": 0}, f"cards: limit must be 1..{MAX_QUERY_CARDS}"),
    ("cards", {"limit": MAX_QUERY_CARDS + 1}, f"cards: limit must be 1..{MAX_QUERY_CARDS}"),
    ("changes", {}, "changes: arguments must be ['after', 'limit', 'since_height'], got []"),
    ("changes", {"since_height": -1}, "changes: since_height must be an unsigned integer"),
    ("changes", {"since_height": 0, "after": None}, "changes: after must be 32 bytes"),
])
def test_query_errors(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError) as info:
        make_atlas().query(name, args)
    assert str(info.value) == message
    # A well-formed read of an absent card is "not found" (HTTP 404), the rest bad requests.
    absent = message.endswith(("not catalogued", "has no card"))
    assert isinstance(info.value, QueryNotFound) == absent


# -- snapshots --------------------------------------------------------------------------------


def test_snapshot_round_trip() -> None:
    chain = populated()
    chain.run(OPERATORS[1], retire_card(CITIZENS[1], UNCATALOGUED))
    data = chain.atlas.snapshot()
    fresh = make_atlas()
    fresh.restore(data)
    assert fresh.state_root() == chain.atlas.state_root()
    assert fresh.snapshot() == data
    assert fresh.query("cards", {}) == chain.atlas.query("cards", {})
    # the restored state goes on exactly like the original
    for atlas in (fresh, chain.atlas):
        Chain(atlas).run(OPERATORS[0], publish_card(card(0, role="x")))
    assert fresh.state_root() == chain.atlas.state_root()


def _leaf(record: list[Any], key: bytes = CITIZENS[0]) -> bytes:
    return encode([key, record])


def _record(**over: Any) -> list[Any]:
    fields = {"card": card(0).to_wire(), "retired": False, "replacement": None, "height": 1,
              "tick": None}
    fields.update(over)
    return ["atlas-record", 1, fields["card"], fields["retired"], fields["replacement"],
            fields["height"], fields["tick"]]


def _snap(rows: list[Any], changes: Any = 10) -> bytes:
    return encode(["atlas-snapshot", 1, changes, rows])


_C1 = card(1).to_wire()
_BAD = "atlas snapshot: card 0: "


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff", "atlas snapshot: "),
    (encode(["atlas-snapshot", 2, 0, []]),
     'atlas snapshot: expected ["atlas-snapshot", 1, changes, [leaf…]]'),
    (_snap([_leaf(_record())] * 4), "atlas snapshot: 4 cards for a catalogue of 3"),
    (_snap([_leaf(_record())], changes=0),
     "atlas snapshot: change count must be an unsigned integer at least the number of cards"),
    (_snap(["x"]), _BAD + "expected a byte string"),
    (_snap([b"\xff"]), _BAD),
    (_snap([encode([CITIZENS[0], [1]])]), _BAD + 'expected [citizen_id, ["atlas-record", 1, '
     "…7 items]]"),
    (_snap([_leaf(["atlas-record", 2, *_record()[2:]])]), _BAD + "wrong record type tag or "
     "schema"),
    (_snap([_leaf(_record(card=[1]))]), _BAD + 'card: expected a 9-item ["citizen-card", 1, '
     "...] array"),
    (_snap([_leaf(_record(card=[*_C1[:3], "Bad", *_C1[4:]]), CITIZENS[1])]),
     "atlas snapshot: card 0: card: card.role must match [a-z0-9][a-z0-9._:-]*"),
    (_snap([_leaf(_record(), CITIZENS[1])]), _BAD + "the key is not the card's citizen id"),
    (_snap([_leaf(_record(card=[*_C1[:2], UNCATALOGUED, *_C1[3:]]), UNCATALOGUED)]),
     _BAD + f"citizen {UNCATALOGUED.hex()} is not catalogued"),
    (_snap([_leaf(_record(retired=1))]), _BAD + "retired must be a boolean"),
    (_snap([_leaf(_record(replacement=CITIZENS[1]))]),
     _BAD + "replacement must be null, or another 32-byte id of a retired card"),
    (_snap([_leaf(_record(retired=True, replacement=CITIZENS[0]))]),
     _BAD + "replacement must be null, or another 32-byte id of a retired card"),
    (_snap([_leaf(_record(height=0))]), _BAD + "changed_height must be an integer >= 1"),
    (_snap([_leaf(_record(tick=-1))]), _BAD + "changed_tick must be an unsigned integer or null"),
    (_snap([_leaf(_record(card=card(1).to_wire()), CITIZENS[1]), _leaf(_record())]),
     "atlas snapshot: card 1: citizen ids are not strictly ascending"),
])
def test_malformed_snapshot_leaves_state_alone(data: bytes, message: str) -> None:
    atlas = populated().atlas
    before = (atlas.state_root(), atlas.snapshot())
    with pytest.raises(MalformedSnapshot) as info:
        atlas.restore(data)
    assert str(info.value).startswith(message)
    assert (atlas.state_root(), atlas.snapshot()) == before


def test_snapshot_refuses_duplicate_rows() -> None:
    atlas = make_atlas()
    row = _leaf(_record())
    with pytest.raises(MalformedSnapshot, match="citizen ids are not strictly ascending"):
        atlas.restore(_snap([row, row]))
    assert len(atlas) == 0


# -- demo workload ----------------------------------------------------------------------------


def test_demo_commands_are_valid_and_bump_a_counter() -> None:
    atlas = make_atlas()
    chain = Chain(atlas)
    for round in range(3):
        batches = demo_commands(OPERATORS, CITIZENS, round)
        assert [k for k, _ in batches] == OPERATORS
        for key, commands in batches:
            assert all(isinstance(r, Applied) for r in chain.run(key, *commands))
    read = atlas.query("card", {"citizen_id": CITIZENS[1]})["record"]
    assert read["card"]["metadata"] == {"round": "2"}
    one_key = Atlas.from_params({"citizens": [[c, OPERATORS[0].public] for c in CITIZENS]})
    [(key, commands)] = demo_commands(OPERATORS[:1], CITIZENS, 5)
    assert key == OPERATORS[0] and len(commands) == 3
    for command in commands:
        one_key.check(key.public, command)
    with pytest.raises(LocalError):
        demo_commands(OPERATORS[:2], CITIZENS, 0)


# -- properties -------------------------------------------------------------------------------

KEYS = [*OPERATORS, STRANGER]
TARGETS = [*CITIZENS, UNCATALOGUED]

command_strategy = st.one_of(
    st.builds(lambda t, r: publish_card(CitizenCard(
        t, "role", (), None, (), 1, (("r", str(r)),))),
        st.sampled_from(TARGETS), st.integers(0, 3)),
    st.builds(lambda t, rep: retire_card(t, rep), st.sampled_from(TARGETS),
              st.sampled_from([None, *CITIZENS])),
)
envelope_strategy = st.tuples(st.sampled_from(range(len(KEYS))),
                              st.lists(command_strategy, min_size=1, max_size=3))
blocks_strategy = st.lists(st.lists(envelope_strategy, max_size=3), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(blocks_strategy)
def test_replay_gives_identical_roots_at_every_height(blocks: list[Any]) -> None:
    a, b = Chain(make_atlas()), Chain(make_atlas())
    for block in blocks:
        envelopes = [a.envelope(KEYS[k], *commands) for k, commands in block]
        assert a.block(*envelopes) == b.block(*envelopes)
        assert a.atlas.state_root() == b.atlas.state_root()
        assert a.atlas.snapshot() == b.atlas.snapshot()


@settings(max_examples=40, deadline=None)
@given(blocks_strategy)
def test_only_operators_change_catalogued_cards(blocks: list[Any]) -> None:
    chain = Chain(make_atlas())
    operator_of = {c: k.public for c, k in zip(CITIZENS, OPERATORS, strict=True)}
    for block in blocks:
        envelopes = [chain.envelope(KEYS[k], *commands) for k, commands in block]
        results = iter(chain.block(*envelopes))
        for envelope in envelopes:
            for command in envelope.commands:
                result = next(results)
                if not isinstance(result, Applied):
                    continue
                citizen = (command.args["card"]["citizen_id"] if command.op == "publish_card"
                           else command.args["citizen_id"])
                assert operator_of.get(citizen) == envelope.client
    assert set(chain.atlas._records) <= set(CITIZENS)
    for record in chain.atlas._records.values():
        assert record.citizen_id in operator_of

