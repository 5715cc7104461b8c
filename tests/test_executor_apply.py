"""The executor: outcomes for the submitter, entries for the store, every refusal, snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.dedup import NONCE_WINDOW
from coalitiond.commands.envelope import (
    MAX_ENVELOPE_SIZE,
    Acl,
    Command,
    Envelope,
    InvalidCommand,
)
from coalitiond.components.base import MalformedSnapshot, QueryError
from coalitiond.components.executor import (
    APPLIED,
    REFUSED,
    CommandOutcome,
    Executor,
    InvalidBlock,
    MalformedOutcome,
)
from coalitiond.components.feed.component import Feed
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import LocalError
from coalitiond.primitives.identity import digest
from coalitiond.primitives.metrics import sample_value

PUBLISHER = SigningKey(b"\x01" * 32)
READER = SigningKey(b"\x02" * 32)  # admitted by the ACL, not a publisher of the feed
STRANGER = SigningKey(b"\x03" * 32)
COMMITTEE = b"\x44" * 32
ACL = Acl.allow([PUBLISHER.public, READER.public])


def make() -> Executor:
    return Executor(COMMITTEE, ACL, Feed([PUBLISHER.public]))


class Driver:
    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor or make()
        self.signers = {k.public: EnvelopeSigner(k, COMMITTEE) for k in (PUBLISHER, READER,
                                                                          STRANGER)}

    def sign(self, *commands: Command, key: SigningKey = PUBLISHER) -> bytes:
        return self.signers[key.public].sign(list(commands)).raw

    def block(self, *commands: bytes) -> list[CommandOutcome]:
        height = self.executor.executed_height + 1
        result = self.executor.apply_block(height, digest(height.to_bytes(8, "big")),
                                           list(commands))
        assert result.state_root == self.executor.state_root()
        return list(result.outcomes)


def reasons(outcomes: list[CommandOutcome]) -> list[str | None]:
    return [o.reason if o.status == REFUSED else f"#{o.entry_index}" for o in outcomes]


def test_outcomes_and_entries() -> None:
    d = Driver()
    raw = d.sign(publish("a", 1), publish("b", 2))
    envelope_id = Envelope.decode(raw).envelope_id
    result = d.executor.apply_block(1, b"\x09" * 32, [raw])
    assert result.outcomes == (
        CommandOutcome(envelope_id, 0, APPLIED, 1, 0, entry_index=0),
        CommandOutcome(envelope_id, 1, APPLIED, 1, 0, entry_index=1),
    )
    assert [(e.height, e.envelope_id, e.command_index, e.entry_index) for e in result.entries] == [
        (1, envelope_id, 0, 0), (1, envelope_id, 1, 1)]
    assert result.entries[1].data == d.executor.query("entry", {"index": 1})["encoded"]
    assert result.outcomes[0].to_wire() == ["outcome", 1, envelope_id, 0, "applied", 1, 0, 0,
                                            None, None]


def test_duplicate_envelope_is_applied_once() -> None:
    d = Driver()
    raw = d.sign(publish("a", 1))
    assert reasons(d.block(raw, raw)) == ["#0", "replayed_nonce"]
    assert reasons(d.block(raw)) == ["replayed_nonce"]
    assert d.executor.query("head", {})["count"] == 1


def test_same_nonce_different_content_is_a_replay() -> None:
    d = Driver()
    first = Envelope.sign(PUBLISHER, COMMITTEE, 9, [publish("a", 1)]).raw
    second = Envelope.sign(PUBLISHER, COMMITTEE, 9, [publish("a", 2)]).raw
    outcomes = d.block(first, second)
    assert reasons(outcomes) == ["#0", "replayed_nonce"]
    assert outcomes[1].detail == "nonce 9 was already applied for this client"


def test_nonce_below_window() -> None:
    d = Driver()
    late = Envelope.sign(PUBLISHER, COMMITTEE, 5, [publish("a", 1)]).raw
    d.block(Envelope.sign(PUBLISHER, COMMITTEE, 5 + NONCE_WINDOW, [publish("a", 0)]).raw)
    outcomes = d.block(late)
    assert reasons(outcomes) == ["nonce_below_window"]
    assert outcomes[0].detail == (f"nonce 5 is at or below 5 (highest applied "
                                  f"{5 + NONCE_WINDOW} minus window {NONCE_WINDOW})")


def test_envelope_level_refusals_change_nothing() -> None:
    d = Driver()
    d.block(d.sign(publish("a", 1)))
    root, snapshot = d.executor.state_root(), d.executor.component.snapshot()
    good = d.sign(publish("b", 2))
    forged = bytearray(good)
    forged[-1] ^= 1
    foreign = Envelope.sign(PUBLISHER, b"\x55" * 32, 50, [publish("c", 3)]).raw
    stranger = d.sign(publish("d", 4), key=STRANGER)
    malformed = encode(["envelope", 1])
    oversize = b"\x00" * (MAX_ENVELOPE_SIZE + 1)
    outcomes = d.block(bytes(forged), foreign, stranger, malformed, oversize)
    assert reasons(outcomes) == ["bad_signature", "wrong_committee", "not_admitted", "malformed",
                                 "too_large"]
    # Unreadable envelopes are named by blake3 of their bytes, with no command index.
    assert outcomes[3].envelope_id == digest(malformed) and outcomes[3].command_index is None
    assert [o.position for o in outcomes] == [0, 1, 2, 3, 4]
    assert outcomes[3].detail == "malformed envelope: expected a 7-item array"
    assert outcomes[4].detail == (f"envelope of {MAX_ENVELOPE_SIZE + 1} bytes exceeds the "
                                  f"limit of {MAX_ENVELOPE_SIZE}")
    assert d.executor.state_root() == root
    assert d.executor.component.snapshot() == snapshot
    # The forged copy did not burn the nonce: the genuine envelope still applies.
    assert reasons(d.block(good)) == ["#1"]


def test_component_refusal_is_final() -> None:
    """An admitted envelope consumes its nonce even when the component refuses its commands,
    so nobody can replay it later when it might succeed; the component state is untouched."""
    d = Driver()
    raw = d.sign(publish("a", 1), key=READER)
    component_root = d.executor.component.state_root()
    outcomes = d.block(raw)
    assert reasons(outcomes) == ["not_publisher"]
    assert outcomes[0].detail == f"client {READER.public.hex()} is not a publisher of this feed"
    assert d.executor.component.state_root() == component_root
    assert reasons(d.block(raw)) == ["replayed_nonce"]


def test_block_of_refusals_leaves_root_unchanged() -> None:
    d = Driver()
    before = d.executor.state_root()
    d.block(b"\x00", b"")
    assert d.executor.state_root() == before
    assert d.executor.executed_height == 1


def test_blocks_must_come_in_height_order() -> None:
    d = Driver()
    with pytest.raises(LocalError, match=r"block 2 out of order \(executed 0\)"):
        d.executor.apply_block(2, b"\x00" * 32, [])


def test_check_block_is_the_voting_hook() -> None:
    d = Driver()
    good = d.sign(publish("a", 1))
    bad_op = d.sign(publish("a", 1), Command("burn", {}))
    checked = d.executor.check_block([good])
    assert [e.raw for e in checked] == [good]
    with pytest.raises(InvalidBlock) as info:
        d.executor.check_block([good, bad_op])
    assert info.value.position == 1
    assert d.executor.validate_block_commands([good])
    assert not d.executor.validate_block_commands([good, bad_op])
    assert str(info.value) == ("envelope 1 of the block is refused: unknown_op: command 1: "
                               "unknown op 'burn' (a feed accepts: publish)")
    with pytest.raises(InvalidCommand) as cmd_info:
        d.executor.check_command(d.sign(publish("a", 1), key=READER))
    assert cmd_info.value.reason == "not_publisher"
    # Dedup is not a stateless property: a replay passes the voting hook, and is refused
    # (deterministically, by every member) when executed.
    d.block(good)
    d.executor.check_block([good])


def test_checked_envelopes_give_the_same_result() -> None:
    one, two = Driver(), Driver()
    blocks = [[one.sign(publish("a", i)) for i in range(3)] for _ in range(3)]
    for height, block in enumerate(blocks, start=1):
        checked = two.executor.check_block(block)
        r1 = one.executor.apply_block(height, b"\x01" * 32, block)
        r2 = two.executor.apply_block(height, b"\x01" * 32, block, checked=checked)
        assert r1 == r2
    # Partially checked blocks: None means "check it now".
    block = [one.sign(publish("p", 0)), one.sign(publish("p", 1))]
    partial = [two.executor.check_command(block[0]), None]
    assert one.executor.apply_block(4, b"\x02" * 32, block) == \
        two.executor.apply_block(4, b"\x02" * 32, block, checked=partial)
    with pytest.raises(LocalError, match="checked envelopes do not match"):
        two.executor.apply_block(5, b"\x01" * 32, blocks[0], checked=[])


def test_client_nonce_query() -> None:
    d = Driver()
    d.block(d.sign(publish("a", 1)), d.sign(publish("a", 1)))
    assert d.executor.query("client_nonce", {"client": PUBLISHER.public}) == {
        "client": PUBLISHER.public, "highest": 2, "height": 1}
    assert d.executor.query("client_nonce", {"client": STRANGER.public})["highest"] == 0
    with pytest.raises(QueryError) as info:
        d.executor.query("client_nonce", {"client": b"\x01"})
    assert str(info.value) == "client_nonce: arguments must be {client: 32-byte key}"
    assert d.executor.query("head", {})["count"] == 2  # delegated to the component


def test_metrics_count_outcomes() -> None:
    name = "coalitiond_component_commands_total"
    labels = {"status": "refused", "reason": "malformed"}
    before = sample_value(name, labels) or 0.0
    Driver().block(b"\x00")
    assert sample_value(name, labels) == before + 1


# -- snapshots ----------------------------------------------------------------------------------


def test_restart_from_snapshot_continues_identically() -> None:
    d = Driver()
    d.block(d.sign(publish("a", 1)), d.sign(publish("b", 2)))
    late = d.sign(publish("late", 0))  # signed now, submitted after the restart
    d.block(d.sign(publish("c", 3)))
    restarted = make()
    restarted.restore(d.executor.snapshot())
    assert restarted.state_root() == d.executor.state_root()
    assert restarted.executed_height == 2
    tail = [d.sign(publish("d", 4)), late, late]
    r1 = d.executor.apply_block(3, b"\x03" * 32, tail)
    r2 = restarted.apply_block(3, b"\x03" * 32, tail)
    assert r1 == r2
    assert reasons(list(r1.outcomes)) == ["#3", "#4", "replayed_nonce"]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "executor snapshot: empty input"),
    (encode(["executor-snapshot", 1]), "executor snapshot: expected a 9-item executor-snapshot"),
    (encode(["executor-snapshot", 1, "atlas/1", 0, b"\x00" * 32, [], b"", None, []]),
     "executor snapshot is for 'atlas/1', this member runs 'feed/1'"),
    (encode(["executor-snapshot", 1, "feed/1", -1, b"\x00" * 32, [], b"", None, []]),
     "executor snapshot: height must be unsigned"),
    (encode(["executor-snapshot", 1, "feed/1", 0, b"\x00", [], b"", None, []]),
     "executor snapshot: block digest must be 32 bytes"),
    (encode(["executor-snapshot", 1, "feed/1", 0, b"\x00" * 32, [], [], None, []]),
     "executor snapshot: component state must be bytes"),
    (encode(["executor-snapshot", 1, "feed/1", 0, b"\x00" * 32, {}, b"", None, []]),
     "executor snapshot: dedup state must be an array"),
    (encode(["executor-snapshot", 1, "feed/1", 0, b"\x00" * 32, [], b"\xf6", None, []]),
     'feed snapshot: expected ["feed-snapshot", 1, [entry bytes]]'),
    (encode(["executor-snapshot", 1, "feed/1", 0, b"\x00" * 32, [], b"\xf6", {"seq": 1}, []]),
     "executor snapshot: stamp: args must be exactly {almanac, seq, height, block}"),
    (encode(["executor-snapshot", 1, "feed/1", 0, b"\x00" * 32, [], b"\xf6", None,
             [[b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]]]),
     "executor snapshot: ticket clients: issuer 0202020202020202020202020202020202020202020202020202020202020202 is not recognised by the ACL"),
])
def test_malformed_snapshot_changes_nothing(data: bytes, message: str) -> None:
    d = Driver()
    d.block(d.sign(publish("a", 1)))
    root, height = d.executor.state_root(), d.executor.executed_height
    with pytest.raises(MalformedSnapshot) as info:
        d.executor.restore(data)
    assert str(info.value) == message
    assert d.executor.state_root() == root and d.executor.executed_height == height


def test_outcome_wire_round_trip() -> None:
    d = Driver()
    outcomes = d.block(d.sign(publish("a", 1), Command("x", {})), b"\x00")
    for outcome in outcomes:
        assert CommandOutcome.from_wire(outcome.to_wire()) == outcome


@pytest.mark.parametrize("wire", [
    ["outcome", 1, b"\x00" * 32, 0, "applied", 1, 0, 0, None],
    ["outcome", 2, b"\x00" * 32, 0, "applied", 1, 0, 0, None, None],
    ["outcome", 1, b"\x00" * 31, 0, "applied", 1, 0, 0, None, None],
    ["outcome", 1, b"\x00" * 32, 0, "applied", 1, -1, 0, None, None],
    ["outcome", 1, b"\x00" * 32, 0, "refused", 1, 0, 0, "r", "d"],
    ["outcome", 1, b"\x00" * 32, 0, "refused", 1, 0, None, None, "d"],
    ["outcome", 1, b"\x00" * 32, 0, "applied", 1, 0, 0, "r", None],
    ["outcome", 1, b"\x00" * 32, 0, "pending", 1, 0, None, None, None],
])
def test_malformed_outcome(wire: list[Any]) -> None:
    with pytest.raises(MalformedOutcome):
        CommandOutcome.from_wire(wire)


def test_malformed_outcome_messages() -> None:
    with pytest.raises(MalformedOutcome) as info:
        CommandOutcome.from_wire(["outcome", 1])
    assert str(info.value) == 'outcome: expected a 10-item ["outcome", 1, ...] array'
    with pytest.raises(MalformedOutcome) as info:
        CommandOutcome.from_wire(["outcome", 1, b"", 0, "applied", 1, 0, 0, None, None])
    assert str(info.value) == "outcome: fields do not describe an applied or refused command"


class _Exploding(Feed):
    def apply(self, ctx: Any, envelopes: Any) -> Any:
        raise RuntimeError("boom")


def test_failure_mid_block_stops_the_executor() -> None:
    """A component bug half-way through a block leaves state half-applied: refuse to go on
    until a snapshot is restored, rather than silently diverge from the other members."""
    good = Driver()
    good.block(good.sign(publish("a", 1)))
    snapshot = good.executor.snapshot()
    executor = Executor(COMMITTEE, ACL, _Exploding([PUBLISHER.public]))
    d = Driver(executor)
    with pytest.raises(RuntimeError, match="boom"):
        d.block(d.sign(publish("a", 1)))
    with pytest.raises(LocalError) as info:
        d.block()
    assert str(info.value) == ("executor: stopped after an earlier failure (block 1: "
                               "RuntimeError: boom); restore a snapshot")
    executor.restore(snapshot)
    assert executor.state_root() == good.executor.state_root()
    assert executor.executed_height == 1
