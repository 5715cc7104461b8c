"""The Almanac ticker: four tickers wired to each other in memory, one Almanac (behind an
executor) per ticker applying the tick the round-robin "leader" offers. Trio's MockClock
(autojump) drives the cadence; nothing sleeps on the wall clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import pairwise
from typing import Any

import pytest
import trio

from coalitiond.commands.envelope import Acl
from coalitiond.commands.member import MemberCommand
from coalitiond.components.almanac.component import Almanac, Observation
from coalitiond.components.executor import Executor
from coalitiond.node.almanac_ticker import MAX_SEQS_AHEAD, AlmanacTicker
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode
from coalitiond.primitives.errors import LocalError
from coalitiond.primitives.identity import digest
from coalitiond.primitives.metrics import sample_value

KEYS = tuple(SigningKey(bytes([0x40 + i]) * 32) for i in range(4))
STRANGER = SigningKey(b"\x7f" * 32)
INTERVAL_MS = 1_000
BASE_MS = 1_750_000_000_000
BLOCK_S = 0.1
#: Blocks fall between the tickers' wake-ups (which are on whole seconds), never on them.
BLOCK_PHASE_S = 0.05

COMMITTEE = CommitteeSpec("testnet", "almanac", "clock", tuple(k.public for k in KEYS),
                          fault_bound=1,
                          component_config_digest=Almanac(INTERVAL_MS).config_digest())
CID = COMMITTEE.committee_id


def metric(name: str, **labels: str) -> float:
    return sample_value(f"coalitiond_{name}", labels) or 0.0


class Net:
    """n members: tickers that gossip to each other in memory, and a chain that applies, at
    every block, the tick command the block's leader offers."""

    def __init__(self, offsets_ms: tuple[int, ...] = (0, 0, 0, 0)) -> None:
        self.silent: set[int] = set()
        #: (sender, receiver, trio time) → deliver? Default: everything arrives.
        self.deliver: Callable[[int, int, float], bool] = lambda s, r, t: True
        self.almanacs = []
        self.executors = []
        self.tickers: list[AlmanacTicker] = []
        for i, key in enumerate(KEYS):
            almanac = Almanac(INTERVAL_MS)
            almanac.bind(COMMITTEE)
            self.almanacs.append(almanac)
            self.executors.append(Executor(CID, Acl.allow([]), almanac))
            self.tickers.append(AlmanacTicker(COMMITTEE, key, i, almanac, INTERVAL_MS,
                                              self._broadcaster(i), self._clock(offsets_ms[i])))
        #: trio time at which each tick was applied, in seq order.
        self.applied_at: list[float] = []
        self.height = 0

    def _broadcaster(self, sender: int) -> Callable[[bytes], Awaitable[None]]:
        async def broadcast(data: bytes) -> None:
            for receiver, ticker in enumerate(self.tickers):
                if receiver != sender and self.deliver(sender, receiver, trio.current_time()):
                    ticker.on_observation(sender, data)
        return broadcast

    @staticmethod
    def _clock(offset_ms: int) -> Callable[[], int]:
        return lambda: BASE_MS + round(trio.current_time() * 1000) + offset_ms

    async def run(self, seconds: float) -> None:
        async with trio.open_nursery() as nursery:
            for i, ticker in enumerate(self.tickers):
                if i not in self.silent:
                    nursery.start_soon(ticker.run)
            nursery.start_soon(self._chain)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()

    async def _chain(self) -> None:
        start = trio.current_time() + BLOCK_PHASE_S
        while True:
            await trio.sleep_until(start + self.height * BLOCK_S)
            self.block()

    def block(self) -> None:
        self.height += 1
        up = [i for i in range(len(KEYS)) if i not in self.silent]
        leader = self.tickers[up[self.height % len(up)]]
        commands = leader.member_commands()
        before = self.almanacs[0].latest_seq
        for executor, ticker in zip(self.executors, self.tickers, strict=True):
            executor.check_block(commands)
            result = executor.apply_block(self.height, digest(self.height.to_bytes(8, "big")),
                                          commands)
            ticker.on_applied(result)
        if self.almanacs[0].latest_seq > before:
            self.applied_at.append(trio.current_time())

    def ticks(self) -> list[dict[str, Any]]:
        return [self.almanacs[0].query("tick", {"seq": s})["tick"]
                for s in range(1, self.almanacs[0].latest_seq + 1)]


def test_ticker_must_hold_its_members_key() -> None:
    almanac = Almanac(INTERVAL_MS)

    async def nothing(data: bytes) -> None:
        return

    with pytest.raises(LocalError):
        AlmanacTicker(COMMITTEE, KEYS[1], 0, almanac, INTERVAL_MS, nothing)
    with pytest.raises(LocalError):
        AlmanacTicker(COMMITTEE, KEYS[0], 4, almanac, INTERVAL_MS, nothing)


async def test_ticks_advance_at_the_cadence(autojump_clock: object) -> None:
    net = Net()
    await net.run(10.5)
    # Observations at t = 0, 1, …, 10; each tick lands in the next block.
    assert [a.latest_seq for a in net.almanacs] == [11] * 4
    assert len({a.state_root() for a in net.almanacs}) == 1
    gaps = [b - a for a, b in pairwise(net.applied_at)]
    assert all(abs(g - INTERVAL_MS / 1000) < 1e-6 for g in gaps)
    for seq, tick in enumerate(net.ticks(), start=1):
        assert [o["member"] for o in tick["observed_at"]] == [0, 1, 2, 3]
        assert tick["median_ms"] == BASE_MS + (seq - 1) * INTERVAL_MS
    assert metric("almanac_tick_seq") == 11


async def test_a_silent_member_does_not_stop_ticks(autojump_clock: object) -> None:
    net = Net()
    net.silent = {3}
    await net.run(5.5)
    assert net.almanacs[0].latest_seq == 6
    assert all([o["member"] for o in t["observed_at"]] == [0, 1, 2] for t in net.ticks())
    # No current skew for a member missing from the latest tick.
    assert sample_value("coalitiond_almanac_member_skew_ms", {"member": "3"}) is None


async def test_below_quorum_there_are_no_ticks(autojump_clock: object) -> None:
    net = Net()
    net.silent = {2, 3}
    await net.run(3.5)
    assert net.almanacs[0].latest_seq == 0
    assert net.tickers[0].member_commands() == ()
    assert net.tickers[0].pooled(1) == (0, 1)


async def test_lost_observation_is_rebroadcast_unchanged(autojump_clock: object) -> None:
    net = Net()
    net.silent = {3}
    # Everything to and from member 2 in the first half second is lost: until the
    # re-broadcasts one interval later, nobody holds three observations (the quorum).
    net.deliver = lambda sender, receiver, t: not (2 in (sender, receiver) and t < 0.5)
    await net.run(2.5)
    assert net.applied_at[0] == pytest.approx(1 + BLOCK_PHASE_S)
    first = net.ticks()[0]
    assert first["seq"] == 1
    # Member 2 signed seq 1 once, at t = 0, and re-sent that same value at t = 1.
    assert [(o["member"], o["unix_ms"]) for o in first["observed_at"]] == [
        (0, BASE_MS), (1, BASE_MS), (2, BASE_MS)]
    assert net.almanacs[0].latest_seq == 2


async def test_skew_metrics_reflect_clock_offsets(autojump_clock: object) -> None:
    outliers_before = [metric("almanac_outliers_total", member=str(m)) for m in range(4)]
    net = Net(offsets_ms=(0, 10, -20, 5_000))
    await net.run(3.5)
    assert net.almanacs[0].latest_seq == 4
    # Median of {0, 10, -20, 5000} is (0 + 10) // 2 = 5.
    assert [metric("almanac_member_skew_ms", member=str(m)) for m in range(4)] == [
        -5, 5, -25, 4_995]
    for tick in net.ticks():
        assert [o["skew_ms"] for o in tick["observed_at"]] == [-5, 5, -25, 4_995]
    outliers_after = [metric("almanac_outliers_total", member=str(m)) for m in range(4)]
    # Only member 3 is past max(1000 ms, interval); each of the 4 tickers counts each tick.
    assert [a - b for a, b in zip(outliers_after, outliers_before, strict=True)] == [
        0, 0, 0, 4 * 4]


# -- observations from other members ------------------------------------------------------------


def _rejected(reason: str) -> float:
    return metric("almanac_observations_rejected_total", reason=reason)


async def test_forged_and_bad_observations_are_dropped(autojump_clock: object) -> None:
    net = Net()
    ticker = net.tickers[0]
    genuine = Observation.sign(KEYS[1], CID, 1, 1, BASE_MS)
    cases: list[tuple[str, int, bytes]] = [
        ("malformed", 1, b"\xff\x00"),
        ("malformed", 1, b"\x00" * 4096),
        ("wrong_committee", 1, Observation.sign(KEYS[1], b"\x99" * 32, 1, 1, BASE_MS).encode()),
        # A genuine observation of member 1 arriving from member 2's link.
        ("wrong_sender", 2, genuine.encode()),
        # Member 1's index under a stranger's signature.
        ("bad_signature", 1, Observation.sign(STRANGER, CID, 1, 1, BASE_MS).encode()),
        ("bad_signature", 1, Observation(CID, 1, BASE_MS, 1, genuine.signature[::-1]).encode()),
        ("too_far_ahead", 1,
         Observation.sign(KEYS[1], CID, 1, MAX_SEQS_AHEAD + 1, BASE_MS).encode()),
    ]
    for reason, sender, data in cases:
        before = _rejected(reason)
        ticker.on_observation(sender, data)
        assert _rejected(reason) == before + 1, reason
    assert ticker.pooled(1) == ()

    ticker.on_observation(1, genuine.encode())
    assert ticker.pooled(1) == (1,)
    # The signer's re-broadcast of the same bytes is not a rejection.
    before = sum(_rejected(r) for r in ("conflicting", "bad_signature", "malformed"))
    ticker.on_observation(1, genuine.encode())
    assert sum(_rejected(r) for r in ("conflicting", "bad_signature", "malformed")) == before
    # A second, different value for the same seq: the first is kept.
    before = _rejected("conflicting")
    ticker.on_observation(1, Observation.sign(KEYS[1], CID, 1, 1, BASE_MS + 7).encode())
    assert _rejected("conflicting") == before + 1

    # Once tick 1 is applied, observations for it are stale and the pool forgets it.
    await ticker.observe()
    ticker.on_observation(2, Observation.sign(KEYS[2], CID, 2, 1, BASE_MS).encode())
    [command] = ticker.member_commands()
    assert [o[:2] for o in MemberCommand.decode(command).args["observed_at"]] == [
        [0, BASE_MS], [1, BASE_MS], [2, BASE_MS]]
    for executor, t in zip(net.executors, net.tickers, strict=True):
        t.on_applied(executor.apply_block(1, b"\x01" * 32, [command]))
    assert net.almanacs[0].latest_seq == 1
    assert ticker.pooled(1) == ()
    before = _rejected("stale")
    ticker.on_observation(3, Observation.sign(KEYS[3], CID, 3, 1, BASE_MS).encode())
    assert _rejected("stale") == before + 1


async def test_offered_command_is_stable_and_ordered(autojump_clock: object) -> None:
    net = Net()
    ticker = net.tickers[0]
    assert ticker.member_commands() == ()
    for member in (3, 1):
        ticker.on_observation(member, Observation.sign(KEYS[member], CID, member, 1,
                                                       BASE_MS + member).encode())
    assert ticker.member_commands() == ()  # two of three
    await ticker.observe()
    [first] = ticker.member_commands()
    args = decode(first)[4]
    assert args["seq"] == 1
    assert [o[0] for o in args["observed_at"]] == [0, 1, 3]
    # A fourth observation arriving later does not change the bytes offered for seq 1.
    ticker.on_observation(2, Observation.sign(KEYS[2], CID, 2, 1, BASE_MS).encode())
    assert ticker.member_commands() == (first,)
    # Observing again before the tick lands re-sends the same signed value.
    sent: list[bytes] = []

    async def capture(data: bytes) -> None:
        sent.append(data)

    ticker._broadcast = capture
    await ticker.observe()
    await ticker.observe()
    assert len(set(sent)) == 1 and Observation.decode(sent[0]).unix_ms == BASE_MS


async def test_a_broken_wall_clock_signs_nothing(autojump_clock: object) -> None:
    sent: list[bytes] = []

    async def capture(data: bytes) -> None:
        sent.append(data)

    almanac = Almanac(INTERVAL_MS)
    almanac.bind(COMMITTEE)
    ticker = AlmanacTicker(COMMITTEE, KEYS[0], 0, almanac, INTERVAL_MS, capture,
                           wall_ms=lambda: -1)
    await ticker.observe()
    assert sent == [] and ticker.pooled(1) == ()
