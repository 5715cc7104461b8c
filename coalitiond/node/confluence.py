"""A confluence member's driver: following N citizen feed committees (docs/confluences.md §2).

One `CitizenFollower` per spanned citizen follows that citizen's certified log as an
integrator would (`CommitteeFollower`: every block checked against the citizen committee's
certificates, replayed through a feed replica of our own, the position kept in
`<data_dir>/follow/<citizen id>/` and resumed after a restart). A citizen that stalls,
restarts or cannot be reached only holds up its own follower; the others go on.

`ConfluenceDriver` ties them to the confluence state machine:

* the leader proposes what `components/confluence/leader.py` builds from the *settled*
  replicas (blocks known for at least STAMP_SETTLE_S, so the other members most likely
  verified them too): the sealed records to commit, then one `ingest` per citizen;
* before voting, every `ingest` is rebuilt from this member's replica and must be identical,
  and every record commit must be exactly one this member's state sealed;
* a follower never runs more than MAX_AHEAD_BLOCKS past the confluence's committed position
  for its citizen, so the block digests an ingest needs are always remembered (bounded) and a
  stalled confluence does not make its followers read without end;
* every CONFIG_RECHECK_S the citizens' member configs are re-read: a citizen whose committee
  id (its stable id) or component configuration changed is reported (log line
  `confluence.citizen_config_changed`, metric `coalitiond_confluence_citizen_config_changes_total`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import trio

from ..commands.member import MemberCommand
from ..components.confluence.component import Confluence, Key
from ..components.confluence.leader import leader_commands, vote_check
from ..components.confluence.records import INGEST_OP
from ..components.executor import BlockResult, Executor
from ..components.feed.component import Feed
from ..config import MemberConfig, load_config
from ..consensus.types import Block
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.errors import CoalitiondError, OperatorError
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge
from .drivers import STAMP_SETTLE_S, Checked, CommitteeFollower, Driver
from .snapshots import SnapshotStore

log = get_logger(__name__)

#: Citizen blocks (digest, entries after it, when verified) a follower remembers.
MAX_REMEMBERED_CITIZEN_BLOCKS: Final = 4096
#: A follower waits while it is this many blocks past the committed position of its citizen.
MAX_AHEAD_BLOCKS: Final = MAX_REMEMBERED_CITIZEN_BLOCKS // 2
#: How often the citizens' member configs are re-read.
CONFIG_RECHECK_S: Final = 30.0

CITIZEN_HEIGHT = gauge("confluence_citizen_height",
                       "Newest block of a spanned citizen verified by this member",
                       ("citizen",))
CITIZEN_POSITION = gauge("confluence_citizen_position",
                         "Citizen block height the confluence has committed reading up to",
                         ("citizen",))
RECORDS = counter("confluence_records_committed_total",
                  "Routed-intents or attestation records committed", ("kind",))
CONFIG_CHANGES = counter("confluence_citizen_config_changes_total",
                         "A spanned citizen's member config changed (stable id or content)",
                         ("citizen",))


def label(stable_id: bytes) -> str:
    return stable_id.hex()[:16]


def load_citizens(config: MemberConfig, citizens: Sequence[bytes]
                  ) -> list[tuple[Path, MemberConfig, CommitteeSpec]]:
    """The spanned citizens' feed committees, in the confluence's order, from
    `node.citizen_configs` (each checked: a feed committee whose id is the citizen's stable
    id; every spanned citizen needs one)."""
    found: dict[bytes, tuple[Path, MemberConfig, CommitteeSpec]] = {}
    for path in config.node.citizen_configs:
        cfg = load_config(path, check_key=False)
        spec = cfg.committee_spec()
        where = f"{config.path}: node.citizen_configs: {path}"
        if spec.component_kind != "feed":
            raise OperatorError(f"{where} describes a {spec.component_kind!r} committee; "
                                "citizens are followed through their feed committees")
        if spec.committee_id not in citizens:
            raise OperatorError(f"{where}: committee {spec.committee_id.hex()} is not among "
                                "component.citizens (a citizen's stable id is its feed "
                                "committee's id)")
        found[spec.committee_id] = (path, cfg, spec)
    missing = [c.hex() for c in citizens if c not in found]
    if missing:
        raise OperatorError(f"{config.path}: node.citizen_configs: no member config for "
                            f"spanned citizen {missing[0]}")
    return [found[c] for c in citizens]


class CitizenFollower(CommitteeFollower):
    """One spanned citizen's certified feed, verified and replayed; a `CitizenView`."""

    def __init__(self, key: SigningKey, executor: Executor, index: int,
                 citizen_config: MemberConfig, citizen: CommitteeSpec, *,
                 position: SnapshotStore | None = None, position_interval: int = 0,
                 clock: Callable[[], float] = trio.current_time) -> None:
        super().__init__(key, executor, citizen_config, citizen, position=position,
                         position_interval=position_interval)
        self.index = index
        self.clock = clock
        #: height -> (digest, feed entries after it, trio time it was verified)
        self.known: OrderedDict[int, tuple[bytes, int, float]] = OrderedDict()
        self.room = trio.Event()
        self.room.set()

    def feed(self) -> Feed:
        component = self.replay.component
        assert isinstance(component, Feed)
        return component

    def committed_height(self) -> int:
        component = self.executor.component
        assert isinstance(component, Confluence)
        return int(component.positions[self.index][0])

    def resume_heights(self) -> list[int]:
        # A position past what the confluence committed would lose the digests of blocks
        # it has not read yet: resume at or below it (or replay from genesis).
        return [h for h in super().resume_heights() if h <= self.committed_height()]

    def on_replay_reset(self) -> None:
        self.known.clear()

    def on_followed_block(self, block: Block) -> None:
        self.known[block.height] = (block.digest, len(self.feed()), self.clock())
        while len(self.known) > MAX_REMEMBERED_CITIZEN_BLOCKS:
            self.known.popitem(last=False)
        CITIZEN_HEIGHT.labels(label(self.followed.committee_id)).set(block.height)

    async def _replayed(self, block: Block) -> None:
        await super()._replayed(block)
        while block.height > self.committed_height() + MAX_AHEAD_BLOCKS:
            self.room = trio.Event()
            await self.room.wait()  # set by the driver after each confluence block

    # -- CitizenView ------------------------------------------------------------------------

    def count(self) -> int:
        return len(self.feed())

    def entry(self, seq: int) -> bytes:
        return self.feed().encoded(seq)

    def block(self, height: int) -> tuple[bytes, int] | None:
        known = self.known.get(height)
        return None if known is None else (known[0], known[1])

    def latest_height(self) -> int:
        return next(reversed(self.known)) if self.known else 0

    def settled(self) -> SettledView:
        return SettledView(self, self.clock() - STAMP_SETTLE_S)


class SettledView:
    """A follower's view without the blocks verified after `before` (for the leader)."""

    def __init__(self, follower: CitizenFollower, before: float) -> None:
        self.f = follower
        heights = [h for h, (_, _, at) in follower.known.items() if at <= before]
        self.top = heights[-1] if heights else 0
        self.limit = follower.known[self.top][1] if heights else 0

    def count(self) -> int:
        return self.limit

    def entry(self, seq: int) -> bytes:
        return self.f.entry(seq)

    def block(self, height: int) -> tuple[bytes, int] | None:
        return self.f.block(height) if height <= self.top else None

    def latest_height(self) -> int:
        return self.top


class ConfluenceDriver(Driver):
    def __init__(self, key: SigningKey, executor: Executor,
                 citizens: Sequence[tuple[Path, MemberConfig, CommitteeSpec]],
                 position: Callable[[CommitteeSpec], tuple[SnapshotStore, int]]) -> None:
        component = executor.component
        assert isinstance(component, Confluence)
        self.component = component
        self.executor = executor
        self.paths = [p for p, _, _ in citizens]
        self.specs = [s for _, _, s in citizens]
        self.followers = []
        for i, (_, cfg, spec) in enumerate(citizens):
            store, interval = position(spec)
            self.followers.append(CitizenFollower(key, executor, i, cfg, spec, position=store,
                                                  position_interval=interval))
        #: Sealed, uncommitted records -> when this member first saw them (≤ MAX_PENDING).
        self.sealed_seen: dict[Key, float] = {}
        #: The committee each citizen config last described (None: it did not load).
        self.seen: list[CommitteeSpec | None] = list(self.specs)
        self._committed = component.committed_count

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for f in self.followers:
                nursery.start_soon(f.run)
            nursery.start_soon(self.watch_configs)

    def member_commands(self) -> tuple[bytes, ...]:
        now = trio.current_time()

        def ready(key: Key) -> bool:
            return self.sealed_seen.setdefault(key, now) <= now - STAMP_SETTLE_S

        return tuple(leader_commands(self.executor.committee_id, self.component,
                                     [f.settled() for f in self.followers], ready))

    def vote_check(self, command: Checked) -> str | None:
        if not (isinstance(command, MemberCommand)
                and command.op in (INGEST_OP, self.component.OUTPUT_OP)):
            return None
        return vote_check(self.component, self.followers, command)

    def on_applied(self, result: BlockResult) -> None:
        # When this member first saw each sealed record: a leader proposes a record only
        # once the others have most likely executed the block that sealed it too (they
        # vote for it only then), as it does for citizen blocks.
        now = trio.current_time()
        pending = self.component.pending
        self.sealed_seen = {k: self.sealed_seen.get(k, now) for k in pending}
        for f, (height, _, _) in zip(self.followers, self.component.positions, strict=True):
            CITIZEN_POSITION.labels(label(f.followed.committee_id)).set(height)
            f.room.set()
        new = self.component.committed_count - self._committed
        if new > 0:
            RECORDS.labels(self.component.kind).inc(new)
        self._committed = self.component.committed_count

    async def watch_configs(self) -> None:
        while True:
            await trio.sleep(CONFIG_RECHECK_S)
            for line in self.config_changes():
                log.warning("confluence.citizen_config_changed", detail=line)

    def config_changes(self) -> list[str]:
        """Re-read every citizen config; one line per citizen whose committee changed (its
        stable id bumped, or the same id with other content), counted in the metric."""
        out = []
        for i, (path, spec) in enumerate(zip(self.paths, self.specs, strict=True)):
            now: CommitteeSpec | None
            try:
                now = load_config(path, check_key=False).committee_spec()
            except CoalitiondError as exc:
                now, problem = None, f"no longer loads: {exc}"
            if now == self.seen[i]:
                continue  # reported already, or unchanged
            self.seen[i] = now
            if now is None:
                what = problem
            elif now == spec:
                what = "is back to the followed committee"
            elif now.committee_id != spec.committee_id:
                what = f"its stable id bumped to {now.committee_id.hex()}"
            else:
                what = "its content changed"
            out.append(f"citizen {label(spec.committee_id)}: {path}: {what}; the confluence "
                       "keeps following the committee it started with: file an advisory "
                       "(coalitiond advisory) and review the confluence config")
            CONFIG_CHANGES.labels(label(spec.committee_id)).inc()
        return out
