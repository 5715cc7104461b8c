"""The Almanac ticker: the non-deterministic side of the `almanac` component (SPEC §3.2).

Every `tick_interval_ms` of trio time, each member reads its wall clock, signs an observation
for the next tick (`latest seq + 1`) and gossips it to the other members. Whoever leads a view
offers, through the consensus core's member-command hook, a `tick` member command carrying the
observations it pooled once it holds at least `q` of them; the component checks and applies
it (`coalitiond.components.almanac`). A member signs at most one value per seq (kept in memory
until the tick is applied), and re-broadcasts that same observation at every interval the tick
does not arrive, so lost messages only delay a tick.

After every executed block, `on_applied` prunes the pool and turns each new tick into metrics:
the latest seq, each member's skew against the tick's median and outliers (|skew| above
`max(OUTLIER_FLOOR_MS, tick_interval_ms)`). The clock vector is advisory: nothing here, nor in
the component, uses it as a clock.

What the member shell does (docs/almanac.md §6): build one `AlmanacTicker` when its component
is an Almanac, start `run()` in its nursery, hand it every gossiped observation
(`on_observation`), call `member_commands()` from the core's hook and `on_applied()` after each
executed block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..commands.member import MemberCommand
from ..components.almanac.component import (
    MAX_UNIX_MS,
    TICK_OP,
    Almanac,
    AlmanacTick,
    Observation,
    outliers,
    skews,
)
from ..components.executor import BlockResult
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.errors import LocalError, RemoteError
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge
from .drivers import Driver

log = get_logger(__name__)

#: Observations are pooled for at most this many seqs past the applied one: a member that
#: lags a little keeps what faster members already signed; anything further is refused.
MAX_SEQS_AHEAD: Final = 4
#: |skew| above max(this, tick interval) counts as an outlier: below a second, skew is
#: ordinary NTP-level disagreement plus gossip delay, and within one tick interval it can be
#: the mere phase difference of the members' timers.
OUTLIER_FLOOR_MS: Final = 1_000
#: After a catch-up over many ticks, metrics are updated from at most the last this many.
MAX_TICKS_PER_UPDATE: Final = 1_024

OBSERVATIONS_REJECTED = counter("almanac_observations_rejected_total",
                                "Almanac observations from members dropped, by reason",
                                ("reason",))
TICK_SEQ = gauge("almanac_tick_seq", "Latest Almanac tick applied")
MEMBER_SKEW = gauge("almanac_member_skew_ms",
                    "Member's observed time minus the median of the latest tick", ("member",))
OUTLIERS = counter("almanac_outliers_total",
                   "Ticks in which a member's |skew| exceeded the outlier threshold",
                   ("member",))


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AlmanacTicker(Driver):
    def __init__(self, committee: CommitteeSpec, key: SigningKey, me: int, almanac: Almanac,
                 tick_interval_ms: int, broadcast: Callable[[bytes], Awaitable[None]],
                 wall_ms: Callable[[], int] = wall_clock_ms) -> None:
        if not 0 <= me < committee.n or committee.members[me] != key.public:
            raise LocalError(f"almanac ticker: key is not member {me} of the committee")
        if tick_interval_ms <= 0:
            raise LocalError("almanac ticker: tick interval must be positive")
        self.committee = committee
        self.key = key
        self.me = me
        self.almanac = almanac
        self.tick_interval_ms = tick_interval_ms
        self.outlier_threshold_ms = max(OUTLIER_FLOOR_MS, tick_interval_ms)
        self._broadcast = broadcast
        self._wall_ms = wall_ms
        #: seq → member → the first valid observation of that member for that seq.
        self._pool: dict[int, dict[int, Observation]] = {}
        #: What this member signed, per seq not yet applied: never sign twice for one seq.
        self._mine: dict[int, Observation] = {}
        #: The tick command offered for a seq: the same bytes while it is in flight, so the
        #: core recognises it in unfinalised ancestors and does not propose it twice.
        self._offered: tuple[int, bytes] | None = None
        #: Latest seq already turned into metrics.
        self._reported = almanac.latest_seq

    # -- the member's own observations ----------------------------------------------

    async def run(self) -> None:
        interval = self.tick_interval_ms / 1000
        deadline = trio.current_time()
        while True:
            await self.observe()
            # A loop that fell behind (a stalled event loop) resumes the cadence from now
            # instead of firing a burst of catch-up observations.
            deadline = max(deadline + interval, trio.current_time())
            await trio.sleep_until(deadline)

    async def observe(self) -> None:
        """Sign (once) and broadcast this member's observation for the next tick."""
        seq = self.almanac.latest_seq + 1
        self._prune(seq - 1)
        mine = self._mine.get(seq)
        if mine is None:
            now = self._wall_ms()
            if not 0 <= now <= MAX_UNIX_MS:
                log.warning("almanac.clock_out_of_range", unix_ms=now)
                return
            mine = Observation.sign(self.key, self.committee.committee_id, self.me, seq, now)
            self._mine[seq] = mine
            self._pool.setdefault(seq, {})[self.me] = mine
        await self._broadcast(mine.encode())

    # -- the other members' observations --------------------------------------------

    def on_observation(self, sender_index: int, data: bytes) -> None:
        reason = self._accept(sender_index, data)
        if reason is not None:
            OBSERVATIONS_REJECTED.labels(reason).inc()
            log.debug("almanac.observation_rejected", sender=sender_index, reason=reason)

    def _accept(self, sender: int, data: bytes) -> str | None:
        """Pool the observation, or return why not (a metric label)."""
        try:
            obs = Observation.decode(data)
        except RemoteError:
            return "malformed"
        if obs.committee_id != self.committee.committee_id:
            return "wrong_committee"
        if obs.member != sender:
            return "wrong_sender"
        if not 0 <= obs.member < self.committee.n:
            return "unknown_member"
        applied = self.almanac.latest_seq
        if obs.seq <= applied:
            return "stale"
        if obs.seq > applied + MAX_SEQS_AHEAD:
            return "too_far_ahead"
        pooled = self._pool.get(obs.seq, {}).get(obs.member)
        if pooled == obs:
            return None  # the signer's re-broadcast of what we hold: nothing to do
        if not obs.is_signed_by(self.committee.members[obs.member]):
            return "bad_signature"
        if pooled is not None:
            # Two values signed for one seq: keep the first (advisory data, no evidence).
            return "conflicting"
        self._pool.setdefault(obs.seq, {})[obs.member] = obs
        return None

    # -- the core's hook ----------------------------------------------------------------

    def member_commands(self) -> tuple[bytes, ...]:
        seq = self.almanac.latest_seq + 1
        if self._offered is not None and self._offered[0] == seq:
            return (self._offered[1],)
        pooled = self._pool.get(seq, {})
        if len(pooled) < self.committee.quorum:
            return ()
        observed = [[m, pooled[m].unix_ms, pooled[m].signature] for m in sorted(pooled)]
        raw = MemberCommand.make(self.committee.committee_id, TICK_OP,
                                 {"seq": seq, "observed_at": observed}).raw
        self._offered = (seq, raw)
        return (raw,)

    # -- after each executed block --------------------------------------------------------

    def on_applied(self, result: BlockResult | None = None) -> None:
        latest = self.almanac.latest_seq
        self._prune(latest)
        if latest < self._reported:  # state replaced by an older snapshot
            self._reported = latest
        if latest == self._reported:
            return
        first = max(self._reported + 1, self.almanac.oldest_seq,
                    latest - MAX_TICKS_PER_UPDATE + 1)
        for seq in range(first, latest + 1):
            tick = self.almanac.tick(seq)
            if tick is not None:
                self._record(tick)
        self._reported = latest
        TICK_SEQ.set(latest)

    def _record(self, tick: AlmanacTick) -> None:
        skew = skews(tick)
        for member in range(self.committee.n):
            label = str(member)
            if member in skew:
                MEMBER_SKEW.labels(label).set(skew[member])
            else:
                # Absent from this tick: no current skew rather than a stale one.
                with contextlib.suppress(KeyError):
                    MEMBER_SKEW.remove(label)
        for member in outliers(tick, self.outlier_threshold_ms):
            OUTLIERS.labels(str(member)).inc()

    def _prune(self, applied: int) -> None:
        for table in (self._pool, self._mine):
            for seq in [s for s in table if s <= applied]:
                del table[seq]
        if self._offered is not None and self._offered[0] <= applied:
            self._offered = None

    # -- introspection (status, tests) ------------------------------------------------------

    def pooled(self, seq: int) -> tuple[int, ...]:
        """Members whose observation for `seq` this member holds, ascending."""
        return tuple(sorted(self._pool.get(seq, {})))
