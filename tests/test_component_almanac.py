"""The `almanac` component: parameters, observations, every refusal, the window, reads with
proofs, snapshots, and Hypothesis properties (replay determinism, seq strictly +1)."""

from __future__ import annotations

import functools
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.commands.client import publish
from coalitiond.commands.envelope import Acl, Envelope, InvalidCommand
from coalitiond.commands.member import MemberCommand
from coalitiond.components.almanac import component as almanac_module
from coalitiond.components.almanac.component import (
    MAX_MEMBERS,
    MAX_QUERY_TICKS,
    MAX_SEQ,
    MAX_UNIX_MS,
    OBSERVATION_TAG,
    TICK_WINDOW,
    Almanac,
    AlmanacTick,
    Observation,
    ObservedAt,
    median_ms,
    outliers,
    skews,
)
from coalitiond.components.almanac.tree import WindowTree
from coalitiond.components.base import (
    Applied,
    BlockContext,
    MalformedSnapshot,
    QueryError,
    QueryNotFound,
    Refused,
    check_state_proof,
)
from coalitiond.components.executor import APPLIED, REFUSED, Executor
from coalitiond.config import MAX_TICK_INTERVAL_MS, MIN_TICK_INTERVAL_MS
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.errors import EncodingError, LocalError, OperatorError
from coalitiond.primitives.identity import digest, hash_structure
from coalitiond.primitives.merkle import MemoryTree, inclusion_path, leaf_hash
from coalitiond.verify import merkle_root, verify_inclusion

KEYS = tuple(SigningKey(bytes([i + 1]) * 32) for i in range(4))
STRANGER = SigningKey(b"\x77" * 32)
INTERVAL = 1_000


def make_committee(n: int = 4) -> CommitteeSpec:
    return CommitteeSpec("testnet", "almanac", "clock", tuple(k.public for k in KEYS[:n]),
                         fault_bound=1, component_config_digest=Almanac(INTERVAL).config_digest())


COMMITTEE = make_committee()
CID = COMMITTEE.committee_id


def make_almanac() -> Almanac:
    almanac = Almanac.from_params({"tick_interval_ms": INTERVAL})
    almanac.bind(COMMITTEE)
    return almanac


@functools.cache
def signature(member: int, seq: int, unix_ms: int, committee_id: bytes = CID) -> bytes:
    return Observation.sign(KEYS[member], committee_id, member, seq, unix_ms).signature


def observed(seq: int, members: tuple[int, ...] = (0, 1, 2), base_ms: int = 1_700_000_000_000
             ) -> list[list[Any]]:
    return [[m, base_ms + seq * 1000 + m, signature(m, seq, base_ms + seq * 1000 + m)]
            for m in members]


def tick_command(seq: Any, observed_at: Any = None, *, op: str = "tick",
                 extra: dict[str, Any] | None = None) -> MemberCommand:
    args = {"seq": seq, "observed_at": observed(seq) if observed_at is None else observed_at}
    return MemberCommand.make(CID, op, {**args, **(extra or {})})


class Chain:
    """Feeds member commands block by block, as the executor would (check, then apply)."""

    def __init__(self, almanac: Almanac | None = None) -> None:
        self.almanac = almanac or make_almanac()
        self.height = 0

    def block(self, *commands: MemberCommand) -> list[Applied | Refused]:
        self.height += 1
        ctx = BlockContext(self.height, digest(self.height.to_bytes(8, "big")))
        out: list[Applied | Refused] = []
        for command in commands:
            self.almanac.check_member(command)
            out.append(self.almanac.apply_member(ctx, command))
        return out


def filled(n: int) -> Almanac:
    chain = Chain()
    for seq in range(1, n + 1):
        assert isinstance(chain.block(tick_command(seq))[0], Applied)
    return chain.almanac


# -- parameters ---------------------------------------------------------------------------


def test_params_from_config_table() -> None:
    assert Almanac.from_params({"tick_interval_ms": 250}).tick_interval_ms == 250


@pytest.mark.parametrize(("params", "message"), [
    ({"tick_interval_ms": 1000, "colour": 1}, "component.colour: unknown key for an almanac"),
    ({}, "component.tick_interval_ms: required"),
    ({"tick_interval_ms": MIN_TICK_INTERVAL_MS - 1},
     f"component.tick_interval_ms: must be {MIN_TICK_INTERVAL_MS}..{MAX_TICK_INTERVAL_MS}"),
    ({"tick_interval_ms": MAX_TICK_INTERVAL_MS + 1},
     f"component.tick_interval_ms: must be {MIN_TICK_INTERVAL_MS}..{MAX_TICK_INTERVAL_MS}"),
    ({"tick_interval_ms": True},
     f"component.tick_interval_ms: must be {MIN_TICK_INTERVAL_MS}..{MAX_TICK_INTERVAL_MS}"),
    ({"tick_interval_ms": "1000"},
     f"component.tick_interval_ms: must be {MIN_TICK_INTERVAL_MS}..{MAX_TICK_INTERVAL_MS}"),
])
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorError) as info:
        Almanac.from_params(params)
    assert str(info.value) == message


def test_config_digest_commits_to_the_interval() -> None:
    assert Almanac(1000).config_digest() == hash_structure("almanac-config", 1, "almanac/1", 1000)
    assert Almanac(1000).config_digest() != Almanac(999).config_digest()


def test_unbound_almanac_refuses_to_check() -> None:
    with pytest.raises(LocalError, match="bind"):
        Almanac(INTERVAL).check_member(tick_command(1))


def test_bind_refuses_oversized_committee() -> None:
    keys = tuple(bytes([i // 256, i % 256]) * 16 for i in range(MAX_MEMBERS + 1))
    big = CommitteeSpec("testnet", "almanac", "clock", keys, fault_bound=1)
    with pytest.raises(OperatorError, match="exceeds"):
        Almanac(INTERVAL).bind(big)


# -- observations ---------------------------------------------------------------------------


def test_observation_round_trip_and_signature() -> None:
    obs = Observation.sign(KEYS[2], CID, 2, 7, 1_700_000_000_123)
    assert decode(obs.encode()) == ["almanac-observation", 1, CID, 7, 1_700_000_000_123, 2,
                                    obs.signature]
    assert Observation.decode(obs.encode()) == obs
    assert obs.is_signed_by(KEYS[2].public)
    assert not obs.is_signed_by(KEYS[1].public)
    # The signature is over tag ‖ 0x00 ‖ encode(["almanac-observation", 1, cid, seq, ms]).
    assert obs.signature == KEYS[2].sign(
        OBSERVATION_TAG, encode(["almanac-observation", 1, CID, 7, 1_700_000_000_123]))


@pytest.mark.parametrize(("wire", "message"), [
    (["almanac-observation", 2, CID, 1, 0, 0, b"\x00" * 64], "expected"),
    (["almanac-observation", 1, CID[:31], 1, 0, 0, b"\x00" * 64], "committee id"),
    (["almanac-observation", 1, CID, 0, 0, 0, b"\x00" * 64], "seq must be"),
    (["almanac-observation", 1, CID, 1, -1, 0, b"\x00" * 64], "unix_ms must be"),
    (["almanac-observation", 1, CID, 1, MAX_UNIX_MS + 1, 0, b"\x00" * 64], "unix_ms must be"),
    (["almanac-observation", 1, CID, 1, 0, MAX_MEMBERS, b"\x00" * 64], "member must be"),
    (["almanac-observation", 1, CID, 1, 0, 0, b"\x00" * 63], "signature must be"),
    (["almanac-observation", 1, CID, 1, 0, 0], "expected"),
])
def test_malformed_observation(wire: list[Any], message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        Observation.decode(encode(wire))


def test_oversized_observation_is_refused_before_decoding() -> None:
    with pytest.raises(EncodingError, match="exceeds"):
        Observation.decode(b"\x00" * 1000)


def test_signing_refuses_out_of_range_values() -> None:
    with pytest.raises(LocalError):
        Observation.sign(KEYS[0], CID, 0, 0, 1)
    with pytest.raises(LocalError):
        Observation.sign(KEYS[0], CID, 0, 1, MAX_UNIX_MS + 1)


# -- client commands: none ---------------------------------------------------------------------


def test_every_client_op_is_refused() -> None:
    almanac = make_almanac()
    with pytest.raises(InvalidCommand) as info:
        almanac.check(KEYS[0].public, publish("k", 1))
    assert info.value.reason == "unknown_op"
    envelope = Envelope.sign(KEYS[0], CID, 1, [publish("k", 1), publish("j", 2)])
    root = almanac.state_root()
    results = almanac.apply(BlockContext(1, b"\x01" * 32), [envelope])
    assert [r.reason for r in results if isinstance(r, Refused)] == ["unknown_op", "unknown_op"]
    assert almanac.state_root() == root


# -- the stateless check of a tick -------------------------------------------------------------


def _sig(member: int, seq: int = 1, ms: int = 5) -> bytes:
    return signature(member, seq, ms)


@pytest.mark.parametrize(("command", "reason", "message"), [
    (tick_command(1, op="tock"), "unknown_op",
     "almanac/1 takes no member command 'tock' (known: tick)"),
    (tick_command(1, extra={"x": 1}), "bad_args", "tick: args must be exactly {seq, observed_at}"),
    (MemberCommand.make(CID, "tick", {"seq": 1}), "bad_args",
     "tick: args must be exactly {seq, observed_at}"),
    (tick_command(0, []), "bad_args", f"tick: seq must be 1..{MAX_SEQ}"),
    (tick_command(True, []), "bad_args", f"tick: seq must be 1..{MAX_SEQ}"),
    (tick_command(MAX_SEQ + 1, []), "bad_args", f"tick: seq must be 1..{MAX_SEQ}"),
    (tick_command(1, {"0": 1}), "bad_args",
     "tick: observed_at must be a list of [member, unix_ms, signature]"),
    (tick_command(1, [[0, 5, _sig(0)]] * 5), "bad_args",
     "tick: observed_at has 5 items, the committee has 4 members"),
    (tick_command(1, [[0, 5]]), "bad_args",
     "tick: observed_at[0] must be [member, unix_ms, signature]"),
    (tick_command(1, [[-1, 5, _sig(0)]]), "bad_args",
     "tick: observed_at[0]: member must be an unsigned integer"),
    (tick_command(1, [[4, 5, _sig(0)]]), "unknown_member",
     "tick: observed_at[0]: member 4 is not in a committee of 4"),
    (tick_command(1, [[0, -5, _sig(0)]]), "bad_args",
     f"tick: observed_at[0]: unix_ms must be 0..{MAX_UNIX_MS}"),
    (tick_command(1, [[0, MAX_UNIX_MS + 1, _sig(0)]]), "bad_args",
     f"tick: observed_at[0]: unix_ms must be 0..{MAX_UNIX_MS}"),
    (tick_command(1, [[0, 5, _sig(0)[:63]]]), "bad_args",
     "tick: observed_at[0]: signature must be 64 bytes"),
    (tick_command(1, [[0, 5, _sig(0)], [0, 5, _sig(0)], [1, 5, _sig(1)]]),
     "duplicate_observation", "tick: observed_at[1]: member 0 appears twice"),
    (tick_command(1, [[1, 5, _sig(1)], [0, 5, _sig(0)], [2, 5, _sig(2)]]),
     "unsorted_observations",
     "tick: observed_at[1]: member 0 after 1; members must be strictly ascending"),
    (tick_command(1, [[0, 5, _sig(0)], [1, 5, _sig(1)]]), "too_few_observations",
     "tick: 2 observations, the quorum is 3"),
    # Forged: member 1's slot carries a signature of member 2's key.
    (tick_command(1, [[0, 5, _sig(0)], [1, 5, _sig(2)], [2, 5, _sig(2)]]), "bad_signature",
     "tick: observation of member 1 is not its signature over seq 1"),
    # A genuine signature, but over another time.
    (tick_command(1, [[0, 5, _sig(0)], [1, 6, _sig(1)], [2, 5, _sig(2)]]), "bad_signature",
     "tick: observation of member 1 is not its signature over seq 1"),
    # A genuine signature, but over another seq (a replayed observation).
    (tick_command(2, [[0, 5, _sig(0, 2)], [1, 5, _sig(1, 1)], [2, 5, _sig(2, 2)]]),
     "bad_signature", "tick: observation of member 1 is not its signature over seq 2"),
    # A genuine signature, but for another committee.
    (tick_command(1, [[0, 5, _sig(0)], [1, 5, signature(1, 1, 5, b"\x99" * 32)],
                      [2, 5, _sig(2)]]),
     "bad_signature", "tick: observation of member 1 is not its signature over seq 1"),
])
def test_check_member_refusals(command: MemberCommand, reason: str, message: str) -> None:
    almanac = make_almanac()
    with pytest.raises(InvalidCommand) as info:
        almanac.check_member(command)
    assert info.value.reason == reason
    assert str(info.value) == message


def test_stranger_signature_is_refused() -> None:
    forged = Observation.sign(STRANGER, CID, 3, 1, 5).signature
    with pytest.raises(InvalidCommand) as info:
        make_almanac().check_member(
            tick_command(1, [[0, 5, _sig(0)], [1, 5, _sig(1)], [3, 5, forged]]))
    assert info.value.reason == "bad_signature"


def test_more_than_a_quorum_is_accepted() -> None:
    make_almanac().check_member(tick_command(1, observed(1, (0, 1, 2, 3))))
    make_almanac().check_member(tick_command(1, observed(1, (0, 2, 3))))


# -- apply ---------------------------------------------------------------------------------------


def test_first_tick_is_seq_one_and_entry_encoding() -> None:
    chain = Chain()
    assert chain.almanac.latest_seq == 0
    [result] = chain.block(tick_command(1))
    block = digest((1).to_bytes(8, "big"))
    assert isinstance(result, Applied)
    assert result.entry_index == 0
    assert result.entries == (encode(["almanac-tick", 1, 1, 1, block, observed(1)]),)
    assert chain.almanac.latest_seq == 1


def test_stale_tick_and_seq_gap_are_refused_and_change_nothing() -> None:
    chain = Chain(filled(3))
    root, snapshot = chain.almanac.state_root(), chain.almanac.snapshot()
    results = chain.block(tick_command(3), tick_command(1), tick_command(5))
    assert results == [
        Refused("stale_tick", "tick: seq 3 is not after the latest tick 3"),
        Refused("stale_tick", "tick: seq 1 is not after the latest tick 3"),
        Refused("seq_gap", "tick: seq 5 skips ahead; the next tick is 4"),
    ]
    assert chain.almanac.state_root() == root and chain.almanac.snapshot() == snapshot


def test_two_ticks_in_one_block() -> None:
    chain = Chain()
    results = chain.block(tick_command(1), tick_command(2), tick_command(2))
    assert [type(r) for r in results] == [Applied, Applied, Refused]
    assert chain.almanac.query("latest", {})["height"] == 1


def test_apply_refuses_what_check_would() -> None:
    chain = Chain()
    ctx = BlockContext(1, b"\x01" * 32)
    assert chain.almanac.apply_member(ctx, tick_command(1, op="tock")).reason == "unknown_op"
    assert chain.almanac.apply_member(ctx, tick_command(1, [[9, 1, _sig(0)]])).reason == \
        "unknown_member"
    assert chain.almanac.latest_seq == 0


def test_ticks_through_the_executor() -> None:
    executor = Executor(CID, Acl.allow([]), make_almanac())
    raw = tick_command(1).raw
    executor.check_block([raw])
    result = executor.apply_block(1, b"\x05" * 32, [raw, raw, tick_command(3).raw])
    assert [(o.status, o.reason) for o in result.outcomes] == [
        (APPLIED, None), (REFUSED, "stale_tick"), (REFUSED, "seq_gap")]
    assert [e.data for e in result.entries] == [
        encode(["almanac-tick", 1, 1, 1, b"\x05" * 32, observed(1)])]
    assert executor.query("latest", {})["seq"] == 1


# -- helpers ---------------------------------------------------------------------------------------


def _tick(*times: int) -> AlmanacTick:
    return AlmanacTick(1, 1, b"\x00" * 32,
                       tuple(ObservedAt(m, t, b"\x00" * 64) for m, t in enumerate(times)))


def test_median_skews_and_outliers() -> None:
    odd = _tick(1000, 1010, 990)
    assert median_ms(odd) == 1000
    assert skews(odd) == {0: 0, 1: 10, 2: -10}
    even = _tick(100, 0, 5000, 11)
    assert median_ms(even) == 55  # floor of (11 + 100) / 2
    assert skews(even) == {0: 45, 1: -55, 2: 4945, 3: -44}
    assert outliers(even, 50) == (1, 2)
    assert outliers(even, 55) == (2,)
    assert outliers(even, 5000) == ()
    assert median_ms(_tick(7, 8)) == 7
    with pytest.raises(LocalError):
        median_ms(_tick())


# -- reads ------------------------------------------------------------------------------------------


def test_head_and_latest() -> None:
    almanac = make_almanac()
    assert almanac.query("latest", {}) is None
    head = almanac.query("head", {})
    assert head == {"seq": 0, "oldest": None, "window": TICK_WINDOW,
                    "tree_root": merkle_root([]), "state_root": almanac.state_root()}
    almanac = filled(3)
    head = almanac.query("head", {})
    assert head["seq"] == 3 and head["oldest"] == 1
    assert head["state_root"] == hash_structure("almanac-state", 1, 3, head["tree_root"])
    latest = almanac.query("latest", {})
    assert latest["seq"] == 3 and latest["height"] == 3


def test_tick_read_has_median_skews_and_a_state_proof() -> None:
    almanac = filled(5)
    for seq in range(1, 6):
        read = almanac.query("tick", {"seq": seq})
        tick = read["tick"]
        base = 1_700_000_000_000 + seq * 1000
        assert tick["seq"] == seq and tick["median_ms"] == base + 1
        assert [(o["member"], o["unix_ms"], o["skew_ms"]) for o in tick["observed_at"]] == [
            (0, base, -1), (1, base + 1, 0), (2, base + 2, 1)]
        assert check_state_proof(read["state_proof"], almanac.state_root()) == read["encoded"]
        proof = read["state_proof"]
        assert verify_inclusion(read["encoded"], seq - 1, 5, proof["path"], almanac.tree_root())


def test_since_pages_through_the_stream() -> None:
    almanac = filled(5)
    page = almanac.query("since", {"seq": 0, "limit": 2})
    assert [t["seq"] for t in page["ticks"]] == [1, 2]
    assert page["next"] == 2 and page["latest"] == 5 and page["missed"] == 0
    page = almanac.query("since", {"seq": page["next"]})
    assert [t["seq"] for t in page["ticks"]] == [3, 4, 5] and page["next"] == 5
    page = almanac.query("since", {"seq": 5})
    assert page["ticks"] == [] and page["next"] == 5
    assert almanac.query("since", {"seq": 9})["next"] == 9


@pytest.mark.parametrize(("name", "args", "message"), [
    ("ticks", {}, "unknown almanac query 'ticks' (known: head, latest, since, tick)"),
    ("tick", {}, "tick: arguments must be ['seq'], got []"),
    ("tick", {"seq": 0}, "tick: seq must be an integer >= 1"),
    ("tick", {"seq": "1"}, "tick: seq must be an integer >= 1"),
    ("tick", {"seq": 4}, "tick: no tick 4 yet (the latest is 3)"),
    ("head", {"x": 1}, "head: arguments must be [], got ['x']"),
    ("latest", {"x": 1}, "latest: arguments must be [], got ['x']"),
    ("since", {"seq": -1}, "since: seq must be an unsigned integer"),
    ("since", {"seq": 0, "limit": 0}, f"since: limit must be 1..{MAX_QUERY_TICKS}"),
    ("since", {"seq": 0, "limit": MAX_QUERY_TICKS + 1},
     f"since: limit must be 1..{MAX_QUERY_TICKS}"),
    ("since", {"seq": 0, "x": 1}, "since: arguments must be ['limit', 'seq'], got ['seq', 'x']"),
])
def test_query_errors(name: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(QueryError) as info:
        filled(3).query(name, args)
    assert str(info.value) == message
    # A well-formed read of an absent tick is "not found" (HTTP 404), the rest bad requests.
    assert isinstance(info.value, QueryNotFound) == message.startswith("tick: no tick")


def test_reads_do_not_alias_state() -> None:
    almanac = filled(1)
    almanac.query("latest", {})["observed_at"].clear()
    assert len(almanac.query("latest", {})["observed_at"]) == 3


# -- the window: bounded memory ----------------------------------------------------------------


def test_window_forgets_old_ticks_but_keeps_root_and_proofs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(almanac_module, "TICK_WINDOW", 4)
    chain = Chain()
    encodings: list[bytes] = []
    for seq in range(1, 41):
        [result] = chain.block(tick_command(seq))
        assert isinstance(result, Applied)
        encodings.extend(result.entries)
        almanac = chain.almanac
        assert almanac.tree_root() == merkle_root(encodings)
        assert almanac.oldest_seq == max(1, seq - 3)
        for held in range(almanac.oldest_seq, seq + 1):
            read = almanac.query("tick", {"seq": held})
            assert check_state_proof(read["state_proof"], almanac.state_root()) == \
                encodings[held - 1]
    # The tree holds O(window) nodes, not O(ticks).
    assert sum(len(row) for row in chain.almanac._tree.rows) < 4 * 4 * 3
    with pytest.raises(QueryNotFound) as info:
        chain.almanac.query("tick", {"seq": 36})
    assert str(info.value) == ("tick: tick 36 is older than the 4 ticks this member holds "
                               "(oldest 37); read it from the log archive")
    page = chain.almanac.query("since", {"seq": 30})
    assert [t["seq"] for t in page["ticks"]] == [37, 38, 39, 40] and page["missed"] == 6
    assert chain.almanac.query("head", {})["oldest"] == 37

    restored = make_almanac()
    restored.restore(chain.almanac.snapshot())
    assert restored.state_root() == chain.almanac.state_root()
    assert restored.snapshot() == chain.almanac.snapshot()
    assert restored.query("tick", {"seq": 38}) == chain.almanac.query("tick", {"seq": 38})
    # ...and it goes on from there exactly like the original.
    follower = Chain(restored)
    follower.height = chain.height
    follower.block(tick_command(41))
    chain.block(tick_command(41))
    assert restored.state_root() == chain.almanac.state_root()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_window_tree_matches_a_full_tree(size: int, data: st.DataObject) -> None:
    base = data.draw(st.integers(0, size - 1))
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    full = MemoryTree(hashes)
    forgetful = WindowTree()
    for h in hashes:
        forgetful.append_hash(h)
    forgetful.forget(base)
    rebuilt = WindowTree.from_frontier(base, forgetful.frontier(base))
    for h in hashes[base:]:
        rebuilt.append_hash(h)
    for tree in (forgetful, rebuilt):
        assert tree.size == size and tree.root() == full.root()
        for index in sorted({base, size - 1, (base + size) // 2}):
            assert inclusion_path(tree, index, size) == inclusion_path(full, index, size)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=12))
def test_window_tree_forgets_while_growing(steps: list[tuple[int, bool]]) -> None:
    """Appends interleaved with forgets (as the component does) keep the root and the proofs
    of every leaf at or after the last forget."""
    full, forgetful = MemoryTree(), WindowTree()
    base = 0
    for count, forget in steps:
        for _ in range(count):
            h = leaf_hash(full.size.to_bytes(4, "big"))
            full.append_hash(h)
            forgetful.append_hash(h)
        if forget:
            base = max(base, full.size - 3)
            forgetful.forget(base)
        assert forgetful.root() == full.root()
        for index in sorted({base, (base + full.size) // 2, full.size - 1}):
            assert inclusion_path(forgetful, index, full.size) == \
                inclusion_path(full, index, full.size)
    with pytest.raises(LocalError):
        forgetful.node(0, base - 2) if base >= 2 else forgetful.node(99, 0)


# -- snapshots ------------------------------------------------------------------------------------


def test_snapshot_round_trip() -> None:
    almanac = filled(6)
    other = make_almanac()
    other.restore(almanac.snapshot())
    assert other.state_root() == almanac.state_root()
    assert other.snapshot() == almanac.snapshot()
    assert other.query("tick", {"seq": 4}) == almanac.query("tick", {"seq": 4})
    assert decode(almanac.snapshot())[:4] == ["almanac-snapshot", 1, 0, []]


def _snapshot(base: int, frontier: list[Any], rows: list[Any]) -> bytes:
    return encode(["almanac-snapshot", 1, base, frontier, rows])


def _row(seq: int = 1, height: int = 1, vector: Any = None, tag: str = "almanac-tick") -> bytes:
    return encode([tag, 1, seq, height, b"\x00" * 32,
                   observed(seq) if vector is None else vector])


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff", "almanac snapshot: break or indefinite marker at offset 0"),
    (encode(["almanac-snapshot", 2, 0, [], []]), "almanac snapshot: expected"),
    (encode(["almanac-snapshot", 1, 0, []]), "almanac snapshot: expected"),
    (_snapshot(-1, [], []), "almanac snapshot: base must be an unsigned integer"),
    (_snapshot(3, [b"\x00" * 32] * 2, [_row(4)]),
     "almanac snapshot: holds 1 ticks after 3; expected the last min(latest, 65536)"),
    (_snapshot(0, [b"\x00" * 32], []), "almanac snapshot: the frontier of 0 is 0 hashes"),
    (_snapshot(0, [], [7]), "almanac snapshot: tick 1: expected a byte string"),
    (_snapshot(0, [], [b"\x18\x01"]),
     "almanac snapshot: tick 1: non-shortest integer or length encoding at offset 0"),
    (_snapshot(0, [], [_row(tag="x")]), "almanac snapshot: tick 1: tick: expected"),
    (_snapshot(0, [], [_row(seq=2)]), "almanac snapshot: tick 1: has seq 2"),
    (_snapshot(0, [], [_row(height=0)]), "almanac snapshot: tick 1: tick: height must be >= 1"),
    (_snapshot(0, [], [_row(vector=observed(1)[:2])]),
     "almanac snapshot: tick 1: tick: 2 observations, the quorum is 3"),
    (_snapshot(0, [], [_row(vector=[[0, 1, _sig(0)], [1, 1, _sig(1)], [2, 1, _sig(2)]])]),
     "almanac snapshot: tick 1: tick: observation of member 0 is not its signature over seq 1"),
    (_snapshot(0, [], [_row(vector=[[0, 1, _sig(0)], [9, 1, _sig(1)]])]),
     "almanac snapshot: tick 1: tick: observed_at[1]: member 9 is not in a committee of 4"),
    (_snapshot(0, [], [_row(1, 2), _row(2, 1)]),
     "almanac snapshot: tick 2: height goes backwards"),
])
def test_malformed_snapshot_leaves_state_alone(data: bytes, message: str) -> None:
    almanac = filled(2)
    root, snapshot = almanac.state_root(), almanac.snapshot()
    with pytest.raises(MalformedSnapshot) as info:
        almanac.restore(data)
    assert str(info.value).startswith(message)
    assert almanac.state_root() == root and almanac.snapshot() == snapshot


# -- properties --------------------------------------------------------------------------------------

@st.composite
def tick_commands(draw: st.DrawFn) -> list[MemberCommand]:
    """Random tick commands around the current seq, valid and invalid."""
    out = []
    for _ in range(draw(st.integers(1, 25))):
        seq = draw(st.integers(1, 12))
        shape = draw(st.sampled_from(("valid", "valid", "valid", "all", "few", "forged",
                                      "unsorted", "badop")))
        if shape == "valid":
            out.append(tick_command(seq))
        elif shape == "all":
            out.append(tick_command(seq, observed(seq, (0, 1, 2, 3))))
        elif shape == "few":
            out.append(tick_command(seq, observed(seq, (0, 1))))
        elif shape == "forged":
            good = observed(seq, (0, 1, 2))
            good[1][2] = good[2][2]
            out.append(tick_command(seq, good))
        elif shape == "unsorted":
            out.append(tick_command(seq, list(reversed(observed(seq)))))
        else:
            out.append(tick_command(seq, op="tock"))
    return out


def _run(commands: list[MemberCommand], per_block: int, almanac: Almanac | None = None,
         ctx_height: int = 0) -> tuple[Almanac, list[int]]:
    almanac = almanac or make_almanac()
    seqs = [almanac.latest_seq]
    for start in range(0, len(commands), per_block):
        ctx_height += 1
        ctx = BlockContext(ctx_height, digest(ctx_height.to_bytes(8, "big")))
        for command in commands[start:start + per_block]:
            before = almanac.latest_seq
            try:
                almanac.check_member(command)
            except InvalidCommand:
                assert almanac.latest_seq == before
                continue
            result = almanac.apply_member(ctx, command)
            seq = command.args["seq"]
            # Applied exactly when seq is the next one; the seq moves by +1 or not at all.
            assert isinstance(result, Applied) == (seq == before + 1)
            assert almanac.latest_seq == (before + 1 if isinstance(result, Applied) else before)
            if isinstance(result, Refused):
                assert result.reason == ("stale_tick" if seq <= before else "seq_gap")
            seqs.append(almanac.latest_seq)
    return almanac, seqs


@settings(max_examples=100, deadline=None)
@given(commands=tick_commands(), per_block=st.integers(1, 4))
def test_seq_is_strictly_plus_one_and_never_goes_back(commands: list[MemberCommand],
                                                      per_block: int) -> None:
    almanac, seqs = _run(commands, per_block)
    assert all(b - a in (0, 1) for a, b in pairwise(seqs))
    assert [almanac.query("tick", {"seq": s})["tick"]["seq"]
            for s in range(1, almanac.latest_seq + 1)] == list(range(1, almanac.latest_seq + 1))


@settings(max_examples=60, deadline=None)
@given(commands=tick_commands(), per_block=st.integers(1, 4), cut=st.integers(0, 25))
def test_replay_is_deterministic(commands: list[MemberCommand], per_block: int,
                                 cut: int) -> None:
    first, _ = _run(commands, per_block)
    second, _ = _run(commands, per_block)
    assert first.state_root() == second.state_root()
    assert first.snapshot() == second.snapshot()
    # A member restored from a snapshot taken after `blocks` blocks, then fed the rest,
    # reaches the same root.
    blocks = min(cut, -(-len(commands) // per_block))
    head, _ = _run(commands[:blocks * per_block], per_block)
    restored = make_almanac()
    restored.restore(head.snapshot())
    assert restored.state_root() == head.state_root()
    _run(commands[blocks * per_block:], per_block, restored, blocks)
    assert restored.state_root() == first.state_root()
    assert restored.snapshot() == first.snapshot()
