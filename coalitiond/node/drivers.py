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

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import trio

from ..anchors import AnchorPublisher, AnchorSink, anchors_in, query_reader
from ..commands import Acl, Envelope
from ..committee import CommitteeSpec
from ..components import base as component_base
from ..components.executor import STAMP_OP, BlockResult, Executor, Stamp
from ..config import MemberConfig, load_config
from ..consensus.types import Block
from ..crypto import SigningKey
from ..errors import OperatorError, RemoteError
from ..logs import get_logger
from ..member_commands import MemberCommand
from ..metrics import counter, gauge
from ..store.records import FinalizedBlock
from .client import ChainVerifier, CommitteeClient

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
STAMP_SETTLE_S: Final = 0.2
#: Blocks asked per read of the Almanac's log.
FOLLOW_BATCH: Final = 64
#: Wait before reconnecting after the Almanac could not be read.
FOLLOW_RETRY_S: Final = 2.0

FOLLOWED_TICK = gauge("almanac_followed_tick", "Latest tick verified in the followed Almanac")
FOLLOW_ERRORS = counter("almanac_follow_errors_total",
                        "Failures reading or verifying the followed Almanac", ("reason",))


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


class AlmanacFollower(Driver):
    """Follows an Almanac committee's certified log and stamps this committee's blocks.

    It reads the Almanac's finalised blocks as any integrator would (certificates checked
    against the Almanac's committee, trusting no member), replays them through an Almanac
    executor of its own, and remembers, per Almanac block, the latest tick after it. A stamp
    `{almanac, seq, height, block}` is voted for only if this member verified exactly that:
    block `height` has digest `block` and the tick after it is `seq`.
    """

    def __init__(self, key: SigningKey, executor: Executor, almanac_config: MemberConfig,
                 almanac: CommitteeSpec) -> None:
        self.key = key
        self.executor = executor
        self.almanac = almanac
        self.connect = tuple((m.address.host, m.address.port)
                             for m in almanac_config.committee.members)
        component = component_base.build("almanac", almanac_config.component.to_cbor())
        component.bind(almanac)
        self.replay = Executor(almanac.committee_id, _acl_of(almanac_config), component)
        self.verified: OrderedDict[int, tuple[bytes, int | None]] = OrderedDict()
        self.latest: Stamp | None = None
        self.latest_known_at = 0.0
        self._last_block: Block | None = None

    # -- reading the Almanac ---------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                async with CommitteeClient.connect(self.key, self.almanac,
                                                   self.connect) as client:
                    await self._follow(client)
            except (RemoteError, OperatorError) as e:
                FOLLOW_ERRORS.labels(type(e).__name__).inc()
                log.warning("almanac.follow_failed", error=str(e))
            await trio.sleep(FOLLOW_RETRY_S)

    async def _follow(self, client: CommitteeClient) -> None:
        # From the last block applied: blocks fed but not yet final are asked for again.
        verifier = ChainVerifier(self.almanac, self._last_block)
        while True:
            start = (0 if verifier.previous is None else verifier.previous.height) + 1
            reply = await client.blocks(start, max_blocks=FOLLOW_BATCH, wait=True)
            for fb in reply.blocks:
                for final in verifier.feed(fb):
                    self._apply(final)

    def _apply(self, fb: FinalizedBlock) -> None:
        block = fb.block
        self._last_block = block
        self.replay.apply_block(block.height, block.digest, block.commands)
        latest = self.replay.component.query("latest", {})
        seq = None if latest is None else int(latest["seq"])
        self.verified[block.height] = (block.digest, seq)
        while len(self.verified) > MAX_REMEMBERED_ALMANAC_BLOCKS:
            self.verified.popitem(last=False)
        if seq is not None and (self.latest is None or seq > self.latest.seq):
            self.latest = Stamp(self.almanac.committee_id, seq, block.height, block.digest)
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


def _acl_of(config: MemberConfig) -> Acl:
    return Acl.allow(config.committee.acl.clients)


# ---------------------------------------------------------------------------------------
# Chronicle: anchors to the configured sink


class AnchorPublishing(Driver):
    """Hands every anchor the Chronicle commits to the anchor sink (coalitiond/anchors.py).

    The sink's own record (the file's last line) says where a restart resumes; anchors
    committed while the member was down are caught up from the component's state."""

    def __init__(self, executor: Executor, sink: AnchorSink) -> None:
        self.publisher = AnchorPublisher(sink, executor.committee_id,
                                         query_reader(executor.query))

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
