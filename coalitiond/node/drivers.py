"""Component drivers: the non-deterministic side of a component, owned by the member shell.

A component's state machine is pure (`coalitiond.components`). Some of what feeds it is not:
an Almanac member reads its clock and signs the reading; a committee that follows an Almanac
learns the latest tick from that committee's log; a Compute member checks a provider's TDX
quote against today's collateral; a Chronicle member hands anchors to a sink. Each of those is
a driver. The member calls every driver at fixed points, and that is the whole interface:

* `run()` — the driver's own task, in the member's nursery (return at once if none);
* `member_commands()` — encoded member commands this member would put into a proposal now
  (the consensus core's hook; asked only when this member leads a view);
* `vote_check(command)` — checks that depend on this member's own view of the world (its
  clock, its collateral, its copy of another committee's log), run before voting for a
  proposed block; a reason string refuses the vote. Never run on finalised blocks: what a
  quorum certified is applied as is, so replay years later gives the same state;
* `on_observation(sender, data)` — a member-to-member gossip observation;
* `on_applied(result)` — after every executed block.

Drivers never touch the executor's state except through reads on the trio thread.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import trio

from ..commands.envelope import Acl, Envelope
from ..commands.member import MemberCommand
from ..components import base as component_base
from ..components.chronicle.anchors import AnchorPublisher, AnchorSink, anchors_in, query_reader
from ..components.chronicle.config import DEFAULT_LAG_ALERT_ENTRIES
from ..components.executor import (
    ADMIT_CLIENTS_OP,
    MAX_CLIENTS_PER_COMMAND,
    REMOVE_CLIENTS_OP,
    STAMP_OP,
    BlockResult,
    Executor,
    Stamp,
)
from ..components.tickets.component import Tickets
from ..config import MemberConfig, load_config
from ..consensus.types import ZERO_DIGEST, Block, CertifiedRoots, genesis_block
from ..log.chain import ChainVerifier
from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SigningKey
from ..primitives.errors import OperatorError, RemoteError
from ..primitives.logs import get_logger
from ..primitives.metrics import counter, gauge
from .client import CommitteeClient
from .snapshots import (
    MAX_SNAPSHOT_CANDIDATES,
    CertifiedReplay,
    SnapshotFile,
    SnapshotRefused,
    SnapshotStore,
    restore_replica,
)

log = get_logger(__name__)

Checked = Envelope | MemberCommand


class Driver:
    """The do-nothing driver; subclasses override what they need."""

    #: Whether `vote_check` looks at client envelopes too (else: member commands only).
    checks_envelopes = False

    async def run(self) -> None:
        return

    def member_commands(self) -> tuple[bytes, ...]:
        return ()

    def vote_check(self, command: Checked) -> str | None:
        return None

    def on_observation(self, sender: int, data: bytes) -> None:
        return

    def on_applied(self, result: BlockResult) -> None:
        return


# ---------------------------------------------------------------------------------------
# Following an Almanac: stamps

#: Almanac blocks whose (digest, tick after it) this member remembers for checking stamps.
MAX_REMEMBERED_ALMANAC_BLOCKS: Final = 4096
#: A leader stamps a tick only once it has known it this long, so the other members' own
#: followers have most likely seen it too and vote for the block.
STAMP_SETTLE_S: Final = 0.5
#: Blocks asked per read of the Almanac's log.
FOLLOW_BATCH: Final = 64
#: Wait before reconnecting after the Almanac could not be read.
FOLLOW_RETRY_S: Final = 2.0

FOLLOWED_TICK = gauge("almanac_followed_tick", "Latest tick verified in the followed Almanac")
FOLLOW_ERRORS = counter("follow_errors_total",
                        "Failures reading or verifying a followed committee (an Almanac, a "
                        "ticket issuer)", ("component", "reason"))


def load_almanac_spec(config: MemberConfig) -> tuple[MemberConfig, CommitteeSpec]:
    """The followed Almanac's member config and committee, checked against the id this
    committee's component names (`component.follow_almanac`)."""
    follow = getattr(config.component, "follow_almanac", None)
    path = config.node.almanac_config
    if path is None:
        raise OperatorError(f"{config.path}: node.almanac_config: required when "
                            "component.follow_almanac is set (a member config of that Almanac)")
    almanac_config = load_config(path, check_key=False)
    spec = almanac_config.committee_spec()
    if spec.component_kind != "almanac":
        raise OperatorError(f"{config.path}: node.almanac_config: {path} describes a "
                            f"{spec.component_kind!r} committee, not an Almanac")
    if spec.committee_id != follow:
        raise OperatorError(
            f"{config.path}: node.almanac_config: {path} describes committee "
            f"{spec.committee_id.hex()}, but component.follow_almanac is "
            f"{follow.hex() if isinstance(follow, bytes) else follow}")
    return almanac_config, spec


class CommitteeFollower(Driver):
    """Follows another committee's certified log as an integrator would: finalised blocks
    checked against that committee's certificates (trusting none of its members), replayed
    through an executor of its own. Subclasses read the replayed state."""

    def __init__(self, key: SigningKey, executor: Executor, followed_config: MemberConfig,
                 followed: CommitteeSpec, *, position: SnapshotStore | None = None,
                 position_interval: int = 0) -> None:
        self.key = key
        self.executor = executor
        self.followed = followed
        self.connect = tuple((m.address.host, m.address.port)
                             for m in followed_config.committee.members)
        self._followed_config = followed_config
        self.replay = self._fresh_replay()
        #: The last block replayed; the chain starts at the followed committee's genesis, so
        #: a member that answers with a later block than asked is refused (it does not link).
        self._last_block: Block = genesis_block(followed)
        #: Where the replica's position is kept (snapshot files of the followed committee's
        #: state, every `position_interval` blocks), so a restart resumes instead of
        #: replaying the followed log from its genesis (docs/formats.md §8).
        self.position = position
        self.position_interval = position_interval
        #: While resumed from a position file and not yet confirmed: checks the roots the
        #: followed blocks certify against the replica's (node/snapshots.py).
        self._unconfirmed: CertifiedReplay | None = None
        self._log_size = 0

    def _fresh_replay(self) -> Executor:
        component = component_base.build(self.followed.component_kind,
                                         self._followed_config.component.to_cbor())
        component.bind(self.followed)
        return Executor(self.followed.committee_id, _acl_of(self._followed_config), component)

    def resume(self) -> None:
        """Start the replica from the newest position file that passes its checks; one that
        does not is refused with a log line and the next older one tried (else: genesis)."""
        if self.position is None:
            return
        for height in self.resume_heights()[:MAX_SNAPSHOT_CANDIDATES]:
            where = str(self.position.path(height))
            try:
                snap = self.position.read(height)
                restore_replica(self.replay, snap, self.followed.committee_id, where)
            except SnapshotRefused as exc:
                log.warning("follow.position_refused", committee=self.followed.component_kind,
                            reason=str(exc))
                self.replay = self._fresh_replay()
                continue
            self._last_block = snap.block
            self._log_size = snap.roots.log_size
            self._unconfirmed = CertifiedReplay(snap.roots, check=True)
            self.on_followed_block(snap.block)  # what the replica holds is verified here
            log.info("follow.resumed", committee=self.followed.component_kind, height=height)
            return

    def resume_heights(self) -> list[int]:
        """Position files to try, newest first (a subclass may rule some out)."""
        assert self.position is not None
        return self.position.heights()

    def _apply(self, block: Block) -> bytes:
        return self.replay.apply_block(block.height, block.digest, block.commands).state_root

    async def _replayed(self, block: Block) -> None:
        """Apply one final block of the followed log (checking, while resumed and not yet
        confirmed, the roots it certifies), then keep the position if due."""
        if self._unconfirmed is not None:
            where = "position file"
            if self.position is not None:
                where = str(self.position.path(self._unconfirmed.start))
            self._unconfirmed.block(block, self._apply, where)  # SnapshotRefused: reset
            if self._unconfirmed.certified_at is not None:
                self._unconfirmed = None  # confirmed by a certified root
            root = self.replay.state_root()
        else:
            root = self._apply(block)
        self._log_size += len(block.commands)
        if (self.position is not None and self.position_interval > 0
                and block.height % self.position_interval == 0):
            snap = SnapshotFile(self.followed.committee_id, block,
                                CertifiedRoots(block.height, root, self._log_size, ZERO_DIGEST),
                                self.replay.snapshot())
            try:
                await trio.to_thread.run_sync(self.position.write, snap)
            except OSError as exc:
                log.error("follow.position_write_failed", height=block.height,
                          error=exc.strerror or str(exc))

    async def run(self) -> None:
        self.resume()
        while True:
            try:
                async with CommitteeClient.connect(self.key, self.followed,
                                                   self.connect) as client:
                    await self._follow(client)
            except Exception as e:
                # Errors come wrapped in exception groups from the client's nursery. Bad or
                # absent answers (RemoteError, OperatorError): retry. Anything else is a
                # certified block our replica could not apply — a bug, or the followed
                # committee broke its own rules: start the replica over, and meanwhile keep
                # refusing to vote for what we cannot check.
                leaves = _leaf_exceptions(e)
                expected = all(isinstance(x, RemoteError | OperatorError) for x in leaves)
                FOLLOW_ERRORS.labels(self.followed.component_kind,
                                     "unreachable_or_bad_answer" if expected else "replay").inc()
                log.warning("follow.failed", committee=self.followed.component_kind,
                            error="; ".join(f"{type(x).__name__}: {x}" for x in leaves))
                if not expected:
                    self.replay = self._fresh_replay()
                    self._last_block = genesis_block(self.followed)
                    self._log_size = 0
                    if self._unconfirmed is not None and self.position is not None:
                        self.position.clear()  # they led to a state the chain disowns
                    self._unconfirmed = None
                    self.on_replay_reset()
            await trio.sleep(FOLLOW_RETRY_S)

    async def _follow(self, client: CommitteeClient) -> None:
        # From the last block applied: blocks fed but not yet final are asked for again.
        verifier = ChainVerifier(self.followed, self._last_block)
        while True:
            assert verifier.previous is not None
            start = verifier.previous.height + 1
            reply = await client.blocks(start, max_blocks=FOLLOW_BATCH, wait=True)
            for fb in reply.blocks:
                for final in verifier.feed(fb):
                    block = final.block
                    await self._replayed(block)
                    self._last_block = block
                    self.on_followed_block(block)

    def on_replay_reset(self) -> None:
        return

    def on_followed_block(self, block: Block) -> None:
        return


class AlmanacFollower(CommitteeFollower):
    """Follows an Almanac committee and stamps this committee's blocks with its ticks.

    It remembers, per Almanac block, the latest tick after it. A stamp `{almanac, seq,
    height, block}` is voted for only if this member verified exactly that: block `height`
    has digest `block` and the tick after it is `seq`.
    """

    def __init__(self, key: SigningKey, executor: Executor, almanac_config: MemberConfig,
                 almanac: CommitteeSpec, *, position: SnapshotStore | None = None,
                 position_interval: int = 0) -> None:
        super().__init__(key, executor, almanac_config, almanac, position=position,
                         position_interval=position_interval)
        self.verified: OrderedDict[int, tuple[bytes, int | None]] = OrderedDict()
        self.latest: Stamp | None = None
        self.latest_known_at = 0.0

    def on_replay_reset(self) -> None:
        self.verified.clear()

    def on_followed_block(self, block: Block) -> None:
        latest = self.replay.component.query("latest", {})
        seq = None if latest is None else int(latest["seq"])
        self.verified[block.height] = (block.digest, seq)
        while len(self.verified) > MAX_REMEMBERED_ALMANAC_BLOCKS:
            self.verified.popitem(last=False)
        if seq is not None and (self.latest is None or seq > self.latest.seq):
            self.latest = Stamp(self.followed.committee_id, seq, block.height, block.digest)
            self.latest_known_at = trio.current_time()
            FOLLOWED_TICK.set(seq)

    # -- the member's hooks -----------------------------------------------------------

    def member_commands(self) -> tuple[bytes, ...]:
        latest = self.latest
        if latest is None or trio.current_time() - self.latest_known_at < STAMP_SETTLE_S:
            return ()
        stamped = self.executor.stamp
        if stamped is not None and stamped.seq >= latest.seq:
            return ()
        return (MemberCommand.make(self.executor.committee_id, STAMP_OP, latest.to_args()).raw,)

    def vote_check(self, command: Checked) -> str | None:
        if not (isinstance(command, MemberCommand) and command.op == STAMP_OP):
            return None
        stamp = Stamp.from_args(command.args)  # checked already by the executor
        known = self.verified.get(stamp.height)
        if known is None:
            return f"stamp: Almanac block {stamp.height} is not verified here (yet)"
        if known != (stamp.block, stamp.seq):
            return (f"stamp: Almanac block {stamp.height} is {known[0].hex()[:16]} with tick "
                    f"{known[1]}, the stamp says {stamp.block.hex()[:16]} with tick {stamp.seq}")
        return None


# ---------------------------------------------------------------------------------------
# Admitting clients by ticket

#: Tolerance for members' clocks disagreeing near a ticket's validity bounds.
TICKET_CLOCK_TOLERANCE_S: Final = 30
#: How often the set of clients that should be admitted is recomputed without news.
TICKET_RECHECK_S: Final = 1.0


def load_ticket_issuers(config: MemberConfig) -> list[tuple[bytes, MemberConfig, CommitteeSpec]]:
    """(issuer root, issuer member config, issuer committee) for every ticket issuer the ACL
    recognises, from `node.ticket_issuer_configs`. The root binds the committee: it is
    derived from a coalition whose `ticket_issuer` is the issuer committee's id."""
    roots = config.committee.acl.ticket_issuers
    found: dict[bytes, tuple[bytes, MemberConfig, CommitteeSpec]] = {}
    for path in config.node.ticket_issuer_configs:
        issuer_config = load_config(path, check_key=False)
        spec = issuer_config.committee_spec()
        where = f"{config.path}: node.ticket_issuer_configs: {path}"
        coalition = issuer_config.coalition
        if spec.component_kind != "tickets":
            raise OperatorError(f"{where} describes a {spec.component_kind!r} committee, not "
                                "a ticket issuer")
        if coalition is None or coalition.ticket_issuer != spec.committee_id:
            raise OperatorError(f"{where}: its [coalition] must name this committee "
                                f"({spec.committee_id.hex()}) as ticket_issuer")
        root = coalition.ticket_issuer_root
        if root not in roots:
            raise OperatorError(f"{where}: issuer root {root.hex() if root else None} is not "
                                "in committee.acl.ticket_issuers")
        found[root] = (root, issuer_config, spec)
    missing = [r.hex() for r in roots if r not in found]
    if missing:
        raise OperatorError(f"{config.path}: node.ticket_issuer_configs: no issuer config for "
                            f"ticket issuer root {missing[0]} (needed to check its tickets)")
    return [found[r] for r in roots]


class TicketFollower(CommitteeFollower):
    """Follows a ticket issuer and keeps this committee's ticket-admitted clients current.

    A client is admitted while it is the subject of an unrevoked ticket whose validity
    window holds at the member's clock; the leader proposes `admit_clients` and
    `remove_clients` member commands, and every voter checks each row against its own
    replica of the issuer's log and its own clock (with TICKET_CLOCK_TOLERANCE_S of slack)."""

    def __init__(self, key: SigningKey, executor: Executor, root: bytes,
                 issuer_config: MemberConfig, issuer: CommitteeSpec,
                 wall: Callable[[], float] = time.time, position: SnapshotStore | None = None,
                 position_interval: int = 0) -> None:
        super().__init__(key, executor, issuer_config, issuer, position=position,
                         position_interval=position_interval)
        self.root = root
        self.wall = wall
        self._wanted: dict[bytes, bytes] = {}
        self._computed_at: float | None = None
        self._first_seen: dict[bytes, float] = {}

    def _tickets(self) -> Tickets:
        component = self.replay.component
        assert isinstance(component, Tickets)
        return component

    def on_followed_block(self, block: Block) -> None:
        self._computed_at = None  # recompute on next use

    def on_replay_reset(self) -> None:
        self._computed_at = None

    def wanted(self) -> dict[bytes, bytes]:
        """client -> ticket id: who should be admitted now (the latest-expiring valid ticket)."""
        now_trio = trio.current_time()
        if self._computed_at is not None and now_trio - self._computed_at < TICKET_RECHECK_S:
            return self._wanted
        now = int(self.wall())
        best: dict[bytes, tuple[int, bytes]] = {}
        for ticket_id, record in self._tickets().records():
            t = record.ticket
            self._first_seen.setdefault(ticket_id, now_trio)
            if record.revoked_height is None and t.not_before <= now < t.expires:
                current = best.get(t.subject)
                if current is None or (t.expires, ticket_id) > current:
                    best[t.subject] = (t.expires, ticket_id)
        self._wanted = {client: tid for client, (_, tid) in sorted(best.items())}
        self._computed_at = now_trio
        return self._wanted

    def member_commands(self) -> tuple[bytes, ...]:
        wanted = self.wanted()
        now_trio = trio.current_time()
        admitted = self.executor.ticket_clients
        admit = [[c, tid] for c, tid in wanted.items()
                 if admitted.get(c) != (self.root, tid)
                 and now_trio - self._first_seen.get(tid, now_trio) >= STAMP_SETTLE_S]
        remove = [c for c in sorted(admitted)
                  if admitted[c][0] == self.root and c not in wanted]
        out = []
        if admit:
            out.append(MemberCommand.make(self.executor.committee_id, ADMIT_CLIENTS_OP, {
                "issuer": self.root, "clients": admit[:MAX_CLIENTS_PER_COMMAND]}).raw)
        if remove:
            out.append(MemberCommand.make(self.executor.committee_id, REMOVE_CLIENTS_OP, {
                "issuer": self.root, "clients": remove[:MAX_CLIENTS_PER_COMMAND]}).raw)
        return tuple(out)

    def vote_check(self, command: Checked) -> str | None:
        if not (isinstance(command, MemberCommand)
                and command.op in (ADMIT_CLIENTS_OP, REMOVE_CLIENTS_OP)
                and command.args.get("issuer") == self.root):
            return None
        now = int(self.wall())
        slack = TICKET_CLOCK_TOLERANCE_S
        tickets = self._tickets()
        if command.op == ADMIT_CLIENTS_OP:
            for client, ticket_id in command.args["clients"]:
                record = tickets.record(ticket_id)
                if record is None:
                    return f"admit_clients: ticket {ticket_id.hex()[:16]} not known here (yet)"
                t = record.ticket
                if t.subject != client:
                    return f"admit_clients: ticket {ticket_id.hex()[:16]} is for another client"
                if record.revoked_height is not None:
                    return f"admit_clients: ticket {ticket_id.hex()[:16]} is revoked"
                if not t.not_before - slack <= now < t.expires + slack:
                    return f"admit_clients: ticket {ticket_id.hex()[:16]} is not valid now"
            return None
        for client in command.args["clients"]:
            entry = self.executor.ticket_clients.get(client)
            if entry is None or entry[0] != self.root:
                continue  # nothing to remove: the command does nothing for this row
            record = tickets.record(entry[1])
            if record is None:
                return f"remove_clients: ticket {entry[1].hex()[:16]} not known here (yet)"
            t = record.ticket
            if record.revoked_height is None and t.not_before - slack <= now < t.expires - slack \
                    and self.wanted().get(client) == entry[1]:
                return f"remove_clients: client {client.hex()[:16]}'s ticket is still valid"
        return None


def _leaf_exceptions(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaf_exceptions(sub)]
    return [e]


def _acl_of(config: MemberConfig) -> Acl:
    return Acl.allow(config.committee.acl.clients, config.committee.acl.ticket_issuers)


# ---------------------------------------------------------------------------------------
# Chronicle: anchors to the configured sink


class AnchorPublishing(Driver):
    """Hands every anchor the Chronicle commits to the anchor sink (coalitiond/components/chronicle/anchors.py).

    The sink's own record (the file's last line) says where a restart resumes; anchors
    committed while the member was down are caught up from the component's state."""

    def __init__(self, executor: Executor, sink: AnchorSink, *,
                 lag_alert_entries: int = DEFAULT_LAG_ALERT_ENTRIES) -> None:
        self.publisher = AnchorPublisher(sink, executor.committee_id,
                                         query_reader(executor.query),
                                         lag_alert_entries=lag_alert_entries)

    async def run(self) -> None:
        await self.publisher.run()

    def on_applied(self, result: BlockResult) -> None:
        self.publisher.offer(anchors_in(result))


# ---------------------------------------------------------------------------------------


class Drivers(Driver):
    """Several drivers behind one interface, called in a fixed order."""

    def __init__(self, drivers: Sequence[Driver]) -> None:
        self.drivers = tuple(drivers)
        self.checks_envelopes = any(d.checks_envelopes for d in self.drivers)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for d in self.drivers:
                nursery.start_soon(d.run)

    def member_commands(self) -> tuple[bytes, ...]:
        return tuple(c for d in self.drivers for c in d.member_commands())

    def vote_check(self, command: Checked) -> str | None:
        for d in self.drivers:
            reason = d.vote_check(command)
            if reason is not None:
                return reason
        return None

    def on_observation(self, sender: int, data: bytes) -> None:
        for d in self.drivers:
            d.on_observation(sender, data)

    def on_applied(self, result: BlockResult) -> None:
        for d in self.drivers:
            d.on_applied(result)
