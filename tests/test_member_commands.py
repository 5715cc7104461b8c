"""Member commands: their encoding, the executor's stamps, the core's proposal hook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from coalitiond.commands.client import publish
from coalitiond.commands.envelope import (
    Acl,
    CommandRefused,
    Envelope,
    InvalidCommand,
    WrongCommittee,
)
from coalitiond.commands.member import (
    MalformedMemberCommand,
    MemberCommand,
    is_member_command,
)
from coalitiond.components.base import (
    Applied,
    BadStateProof,
    BlockContext,
    CommandResult,
    check_state_proof,
)
from coalitiond.components.executor import APPLIED, REFUSED, Executor, Stamp
from coalitiond.components.feed.component import Feed
from coalitiond.consensus.events import (
    Broadcast,
    CommandSubmitted,
    CoreConfig,
    TimerFired,
    TimerKind,
)
from coalitiond.consensus.messages import Proposal
from coalitiond.consensus.voter import Core
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.testing.cores import started
from coalitiond.testing.simulator import make_committee

COMMITTEE_ID = b"\x33" * 32
ALMANAC = b"\x44" * 32
OPERATOR = SigningKey(b"\x01" * 32)
COMMITTEE, KEYS = make_committee(4)  # leader of view v is v % 4
CONFIG = CoreConfig(leader_timeout_ms=200, view_timeout_ms=300, batch_interval_ms=20,
                    max_batch_commands=2, max_batch_bytes=4096)


class TickReader(Feed):
    """A feed that also remembers the tick each block was applied under."""

    def __init__(self) -> None:
        super().__init__([OPERATOR.public])
        self.ticks: list[int | None] = []

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        self.ticks.append(ctx.tick)
        return super().apply(ctx, envelopes)


def executor(follow: bytes | None = ALMANAC) -> Executor:
    return Executor(COMMITTEE_ID, Acl.allow([OPERATOR.public]), TickReader(),
                    follow_almanac=follow)


def stamp(seq: int, almanac: bytes = ALMANAC, committee: bytes = COMMITTEE_ID) -> bytes:
    return MemberCommand.make(committee, "stamp", Stamp(almanac, seq, seq + 10,
                                                        bytes([seq]) * 32).to_args()).raw


def envelope(nonce: int) -> bytes:
    return Envelope.sign(OPERATOR, COMMITTEE_ID, nonce, [publish("k", nonce)]).raw


# -- encoding --------------------------------------------------------------------------


def test_member_command_round_trips_and_is_told_apart_from_envelopes() -> None:
    command = MemberCommand.make(COMMITTEE_ID, "tick", {"seq": 3})
    assert command.raw == encode(["member", 1, COMMITTEE_ID, "tick", {"seq": 3}])
    assert MemberCommand.decode(command.raw) == command
    assert is_member_command(command.raw)
    assert not is_member_command(envelope(1))


@pytest.mark.parametrize(("data", "message"), [
    (encode(["member", 1, COMMITTEE_ID, "tick"]),
     'member command: expected ["member", 1, committee, op, args]'),
    (encode(["member", 2, COMMITTEE_ID, "tick", {}]), "member command: unsupported schema 2"),
    (encode(["member", 1, b"\x01", "tick", {}]), "member command: committee id must be 32 bytes"),
    (encode(["member", 1, COMMITTEE_ID, "Tick", {}]),
     "member command: op must match [a-z][a-z0-9_]*"),
    (encode(["member", 1, COMMITTEE_ID, "tick", {1: 2}]),
     "member command: args must be a map of at most 32 text keys"),
    (b"\x85\x66member" + b"\xff", "malformed member command: "),
    (b"\x00" * 70_000, "member command of 70000 bytes exceeds 65536"),
])
def test_malformed_member_commands_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MalformedMemberCommand) as info:
        MemberCommand.decode(data)
    assert str(info.value).startswith(message)


# -- the executor: checks, stamps, ticks in the block context ------------------------------


def test_member_commands_are_never_admitted_as_client_commands() -> None:
    ex = executor()
    with pytest.raises(CommandRefused, match="malformed envelope"):
        ex.check_client_command(stamp(1))  # a client cannot smuggle a stamp in


def test_stamp_checks() -> None:
    with pytest.raises(InvalidCommand, match="follows no Almanac"):
        executor(follow=None).check_command(stamp(1))
    with pytest.raises(InvalidCommand, match="names Almanac 5555"):
        executor().check_command(stamp(1, almanac=b"\x55" * 32))
    with pytest.raises(WrongCommittee):
        executor().check_command(stamp(1, committee=b"\x66" * 32))
    bad = MemberCommand.make(COMMITTEE_ID, "stamp", {"seq": 1}).raw
    with pytest.raises(InvalidCommand, match="args must be exactly"):
        executor().check_command(bad)
    with pytest.raises(InvalidCommand, match="takes no member command 'tick'"):
        executor().check_command(MemberCommand.make(COMMITTEE_ID, "tick", {}).raw)


def test_stamps_date_the_blocks_client_commands_and_never_go_back() -> None:
    ex = executor()
    reader = ex.component
    assert isinstance(reader, TickReader)
    first = ex.apply_block(1, b"\x01" * 32, [envelope(1), stamp(5)])
    # The stamp applies before the block's client commands, so they see tick 5.
    assert reader.ticks == [5]
    assert [(o.position, o.status) for o in first.outcomes] == [(0, APPLIED), (1, APPLIED)]
    root_at_5 = ex.state_root()
    second = ex.apply_block(2, b"\x02" * 32, [stamp(4), stamp(5), envelope(2)])
    assert [(o.status, o.reason) for o in second.outcomes[:2]] == [
        (REFUSED, "stale_stamp"), (REFUSED, "stale_stamp")]
    assert reader.ticks == [5, 5]
    assert ex.query("stamp", {})["seq"] == 5
    ex.apply_block(3, b"\x03" * 32, [stamp(9)])
    assert ex.query("stamp", {})["seq"] == 9
    assert ex.state_root() != root_at_5  # the stamp is committed state


def test_refused_member_command_changes_nothing() -> None:
    ex = executor()
    before = ex.state_root()
    result = ex.apply_block(1, b"\x01" * 32, [MemberCommand.make(COMMITTEE_ID, "tick", {}).raw])
    assert [(o.status, o.reason) for o in result.outcomes] == [(REFUSED, "unknown_op")]
    assert ex.state_root() == before


def test_snapshot_keeps_the_stamp() -> None:
    ex = executor()
    ex.apply_block(1, b"\x01" * 32, [stamp(7), envelope(1)])
    copy = executor()
    copy.restore(ex.snapshot())
    assert copy.stamp == ex.stamp and copy.state_root() == ex.state_root()


def test_a_committee_that_follows_no_almanac_keeps_its_old_state_root() -> None:
    # Feed committees' roots are pinned by golden vectors; stamps must not move them.
    plain = Executor(COMMITTEE_ID, Acl.allow([OPERATOR.public]), Feed([OPERATOR.public]))
    plain.apply_block(1, b"\x01" * 32, [envelope(1)])
    assert plain.stamp is None and plain.query("stamp", {}) is None


# -- the uniform state proof ------------------------------------------------------------


def test_feed_state_proof_verifies_and_tampering_is_refused() -> None:
    ex = executor(follow=None)
    ex.apply_block(1, b"\x01" * 32, [envelope(n) for n in range(1, 6)])
    read = ex.query("entry", {"index": 3})
    component_root = ex.component.state_root()
    assert check_state_proof(read["state_proof"], component_root) == read["encoded"]
    tampered: Mapping[str, Any] = {**read["state_proof"], "leaf": read["encoded"] + b"x"}
    with pytest.raises(BadStateProof, match="inclusion path"):
        check_state_proof(tampered, component_root)
    with pytest.raises(BadStateProof, match="does not hash to the component root"):
        check_state_proof(read["state_proof"], b"\x00" * 32)
    with pytest.raises(BadStateProof, match="expected"):
        check_state_proof({"leaf": b""}, component_root)


# -- the core's hook ----------------------------------------------------------------------


def _proposed(actions: list[Any]) -> list[tuple[bytes, ...]]:
    return [a.message.block.commands for a in actions
            if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]


def test_a_leader_puts_its_member_commands_first_and_proposes_for_them_alone() -> None:
    offered: list[bytes] = [b"member-tick"]
    leader = Core(COMMITTEE, KEYS[1], CONFIG, member_commands=lambda: tuple(offered))
    # Something to propose: no idle wait.
    assert _proposed(started(leader)) == [(b"member-tick",)]


def test_member_commands_come_before_client_commands_within_the_batch_limit() -> None:
    offered: list[bytes] = []
    leader = Core(COMMITTEE, KEYS[1], CONFIG, member_commands=lambda: tuple(offered))
    assert _proposed(started(leader)) == []  # idle: waits the batch interval
    offered[:] = [b"m1", b"m2", b"m3"]
    # CONFIG.max_batch_commands == 2: member commands fill the block first.
    assert _proposed(leader.step(CommandSubmitted(b"client"))) == [(b"m1", b"m2")]


def test_an_idle_leader_without_member_commands_still_waits() -> None:
    leader = Core(COMMITTEE, KEYS[1], CONFIG, member_commands=lambda: ())
    started(leader)
    assert _proposed(leader.step(TimerFired(TimerKind.BATCH, 1))) == [()]


def test_applied_is_the_result_type_of_a_stamp() -> None:
    assert Applied(None).entries == ()
