"""Per-peer rate limits by message kind (docs/wire.md §8 "Rate limits").

Every message a peer sends is of one *kind* from a fixed set (`KINDS`): a PING record, an
application message of one channel, or, on the discovery channel, an announce/depart or a
catalog page. Each kind has a token bucket per link (sustained rate, burst), driven by the
clock the caller passes in (trio's clock, so MockClock tests are exact):

* within the bucket: the message is handled;
* over it: the message is dropped and counted (`transport_rate_limited_total{kind}`);
* over it by more than another burst's worth at the same rate (the peer sends at more than
  twice its allowance, sustained, or dumps twice its burst at once): the link is closed with
  RATE_LIMITED (13).

Pure: no clock, no I/O; the metric labels are the kind names, a fixed set.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from ..primitives import metrics


class TokenBucket:
    """Pure token bucket; `now` comes from the caller (trio's clock)."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, amount: float, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class Kind(enum.Enum):
    """What a peer can send, for rate limiting. Values are the metric labels."""

    PING = "ping"
    DISCOVERY = "discovery"  # announce and depart
    CATALOG = "catalog"  # catalog pages (a request is a page with want_reply)
    CONSENSUS = "consensus"
    SYNC = "sync"
    GOSSIP = "gossip"
    CLIENT = "client"


KINDS: Final = tuple(Kind)


@dataclass(frozen=True, slots=True)
class KindLimit:
    """Sustained messages per second and the burst the bucket holds."""

    rate: float
    burst: float


#: Defaults per kind. PING: the keepalive sends one every 10 s, so 1/s with a burst of 10
#: is generous and a flood is cut at once. Discovery: every member re-announces every
#: 45 s ±50 %, and each announce reaches a member once per neighbour. Catalog: one
#: exchange a minute plus a few pages at link-up. The application channels keep the
#: link-wide limit (5000/s, burst 10000) by default: these are knobs, not new ceilings.
DEFAULT_PING: Final = KindLimit(1.0, 10.0)
DEFAULT_DISCOVERY: Final = KindLimit(50.0, 500.0)
DEFAULT_CATALOG: Final = KindLimit(1.0, 16.0)
DEFAULT_CHANNEL: Final = KindLimit(5000.0, 10000.0)


@dataclass(frozen=True, slots=True)
class RateLimits:
    ping: KindLimit = DEFAULT_PING
    discovery: KindLimit = DEFAULT_DISCOVERY
    catalog: KindLimit = DEFAULT_CATALOG
    consensus: KindLimit = DEFAULT_CHANNEL
    sync: KindLimit = DEFAULT_CHANNEL
    gossip: KindLimit = DEFAULT_CHANNEL
    client: KindLimit = DEFAULT_CHANNEL

    def of(self, kind: Kind) -> KindLimit:
        limit: KindLimit = getattr(self, kind.value)
        return limit


class Verdict(enum.Enum):
    ALLOW = "allow"
    DROP = "drop"
    CLOSE = "close"


RATE_LIMITED = metrics.counter(
    "transport_rate_limited_total",
    "Messages a peer sent over its per-kind rate limit (dropped; the link closes when it "
    "persists), by kind", ("kind",),
)


@dataclass(slots=True)
class KindLimiter:
    """One link's buckets: one allowance and one tolerance bucket per kind."""

    limits: RateLimits
    now: float
    _allow: dict[Kind, TokenBucket] = field(default_factory=dict)
    _tolerate: dict[Kind, TokenBucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in KINDS:
            lim = self.limits.of(kind)
            self._allow[kind] = TokenBucket(lim.rate, lim.burst, self.now)
            self._tolerate[kind] = TokenBucket(lim.rate, lim.burst, self.now)

    def check(self, kind: Kind, now: float) -> Verdict:
        if self._allow[kind].take(1, now):
            return Verdict.ALLOW
        RATE_LIMITED.labels(kind.value).inc()
        if self._tolerate[kind].take(1, now):
            return Verdict.DROP
        return Verdict.CLOSE
