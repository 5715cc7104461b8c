"""State sync: a new or wiped member starts from a peer's snapshot whose roots a finalised
block certifies, instead of replaying from genesis (docs/protocol.md §12).

Serving (`SnapshotServer`, every member): `snapshot?` requests on the sync channel, one at a
time from a bounded queue; each answer is one page of at most `MAX_SYNC_CHUNK` bytes of a
snapshot file as it lies in `<data_dir>/snapshots/`, with the member's log frontier at the
snapshot's log size.

Syncing (`StateSync`, a member whose log is empty and whose `node.state_sync` is true, before
it joins): ask each other member in turn for its newest snapshot, page it in, fetch the blocks
after it (the `blocks?` pair of catch-up) up to a finalised block that certifies a height at or
above the snapshot's, and check everything (`verify_synced`) before a byte is written. A peer
whose answer does not verify, or that does not answer within `SYNC_REPLY_TIMEOUT_S`, is
refused with one log line naming it and the reason, and the next one is asked.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from ..components.base import MalformedSnapshot
from ..components.executor import Executor
from ..consensus.messages import verify_fetched
from ..log.aio import AsyncStore
from ..log.base import BadFrontier, make_frontier
from ..log.records import FinalizedBlock, entry_leaves
from ..log.sqlite import BlockToAppend, Store
from ..primitives import merkle
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import LocalError, RemoteError
from ..primitives.identity import short
from ..primitives.logs import get_logger
from ..primitives.metrics import counter
from ..transport.router import Channel, Router
from . import wire
from .resolver import chain_of
from .snapshots import SnapshotFile, SnapshotRefused, SnapshotStore

log = get_logger(__name__)

#: `snapshot?` requests waiting to be served (all peers together; more are dropped).
MAX_SNAPSHOT_REQUESTS: Final = 16
#: How long a syncing member waits for one answer before it refuses the peer.
SYNC_REPLY_TIMEOUT_S: Final = 5.0
#: Blocks after the snapshot fetched at most while looking for the block that certifies it.
MAX_SYNC_BLOCKS: Final = 1024
#: Rounds over the peers before giving up on state sync (each round asks every member not
#: yet refused; between rounds the member waits `SYNC_ROUND_WAIT_S` for links to come up).
MAX_SYNC_ROUNDS: Final = 30
SYNC_ROUND_WAIT_S: Final = 1.0
#: Before the first round the member waits up to this long for links to every other member
#: (they come up just before the sync starts), so it asks in member order rather than
#: whoever linked first; past it, it asks those linked.
SYNC_LINK_WAIT_S: float = 5.0

SNAPSHOT_REQUESTS = counter("state_sync_requests_total",
                            "snapshot? requests, by what became of them", ("result",))
SYNC_REFUSED = counter("state_sync_refused_total",
                       "Peers whose snapshot a syncing member refused")


class SyncRefused(RemoteError):
    """A peer's snapshot or blocks that do not verify (or no answer); names the peer."""


class NoSnapshot(RemoteError):
    """The peer holds no snapshot to serve (a young committee, or snapshots turned off)."""


# ---------------------------------------------------------------------------------------
# serving


@dataclass(frozen=True, slots=True)
class _Meta:
    height: int
    total: int
    log_size: int
    frontier: tuple[bytes, ...]


class SnapshotServer:
    """Answers `snapshot?` requests from the member's own snapshot files, one at a time."""

    def __init__(self, snapshots: SnapshotStore, store: AsyncStore, router: Router,
                 diverged: Callable[[], str | None]) -> None:
        self.snapshots = snapshots
        self.store = store
        self.router = router
        self.diverged = diverged
        self._send, self._recv = trio.open_memory_channel[tuple[bytes, wire.SnapshotRequest]](
            MAX_SNAPSHOT_REQUESTS)
        #: Size and frontier of each snapshot file paged so far, by height (a sync pages
        #: through one file; reading it again per page would cost the whole file each time).
        #: Only heights still on disk are kept: at most `snapshots_kept` entries.
        self._meta: dict[int, _Meta] = {}

    def queue_request(self, peer: bytes, request: wire.SnapshotRequest) -> None:
        try:
            self._send.send_nowait((peer, request))
        except trio.WouldBlock:
            SNAPSHOT_REQUESTS.labels("dropped").inc()

    async def run(self) -> None:
        async for peer, request in self._recv:
            try:
                reply = await self.answer(request)
            except (LocalError, RemoteError, OSError) as e:
                reply = wire.Refused(request.request_id, f"snapshot: {e}")
            SNAPSHOT_REQUESTS.labels("refused" if isinstance(reply, wire.Refused)
                                     else "served").inc()
            await self.router.send(Channel.SYNC, peer, wire.encode_message(reply))

    async def answer(self, request: wire.SnapshotRequest
                     ) -> wire.SnapshotChunk | wire.Refused:
        diverged = self.diverged()
        if diverged is not None:
            return wire.Refused(request.request_id, f"state diverged: {diverged}")
        heights = self.snapshots.heights()
        height = request.height or (heights[0] if heights else 0)
        if height == 0:
            return wire.Refused(request.request_id, "no snapshot held")
        if height not in heights:
            return wire.Refused(request.request_id, f"no snapshot at height {height} held "
                                f"(newest: {heights[0] if heights else 'none'})")
        for gone in [h for h in self._meta if h not in heights]:
            del self._meta[gone]
        meta = self._meta.get(height)
        if meta is None:
            meta = self._meta[height] = await self._read_meta(height)
        if request.offset >= meta.total:
            return wire.Refused(request.request_id, f"offset {request.offset} is beyond the "
                                f"{meta.total}-byte snapshot at height {height}")
        chunk = await trio.to_thread.run_sync(self._read_chunk, height, request.offset)
        return wire.SnapshotChunk(request.request_id, height, meta.total, request.offset,
                                  meta.log_size, meta.frontier, chunk)

    async def _read_meta(self, height: int) -> _Meta:
        snap = await trio.to_thread.run_sync(self.snapshots.read, height)
        total = os.stat(self.snapshots.path(height)).st_size
        size = snap.roots.log_size
        frontier = await self.store.run(lambda s: s.frontier_hashes(size))
        return _Meta(height, total, size, tuple(frontier))

    def _read_chunk(self, height: int, offset: int) -> bytes:
        with open(self.snapshots.path(height), "rb") as f:
            f.seek(offset)
            return f.read(wire.MAX_SYNC_CHUNK)


# ---------------------------------------------------------------------------------------
# checking what a peer sent


@dataclass(frozen=True, slots=True)
class Synced:
    """A verified state sync, ready to be written: the snapshot (its block is the base), the
    log's size and frontier after it, and the blocks after it up to a finalised one."""

    peer: bytes
    snapshot: SnapshotFile
    log_size: int
    frontier: tuple[bytes, ...]
    blocks: tuple[BlockToAppend, ...]

    @property
    def head(self) -> int:
        return self.blocks[-1].block.height


def verify_synced(committee: CommitteeSpec, executor: Executor, snap: SnapshotFile,
                  log_size: int, frontier: Sequence[bytes],
                  fetched: Sequence[FinalizedBlock], who: str) -> tuple[BlockToAppend, ...]:
    """Worker thread: check a peer's snapshot against the certified chain, or SyncRefused.

    `fetched` are the blocks after the snapshot's, the last one carrying its own finalize
    certificate. Checked: they are a finalised chain (certificates against the committee)
    that links to the snapshot's block; the frontier has the shape of `log_size` and
    reproduces the snapshot's log root; the snapshot restores (every row checked) to the
    state of its block; and replaying the blocks from it gives, for some height from the
    snapshot's on, exactly the (state root, log size, log root) a finalised block of the chain
    certifies — and no different roots for any height a block certifies. `executor` is left
    as it was."""
    h = snap.height
    if snap.committee_id != committee.committee_id:
        raise SyncRefused(f"{who}: a snapshot of committee {snap.committee_id.hex()[:16]}")
    chain = chain_of(fetched)
    if not fetched or len(chain) != len(fetched):
        raise SyncRefused(f"{who}: the blocks after height {h} are not all finalised")
    try:
        verify_fetched(committee, chain)
    except RemoteError as e:
        raise SyncRefused(f"{who}: blocks after height {h}: {e}") from None
    first = fetched[0].block
    if first.height != h + 1 or first.parent != snap.block.digest:
        raise SyncRefused(f"{who}: block {first.height} does not link to the snapshot's "
                          f"block at height {h}")
    try:
        tree = make_frontier(log_size, frontier)
    except BadFrontier as e:
        raise SyncRefused(f"{who}: frontier: {e}") from None
    if (log_size, tree.root()) != (snap.roots.log_size, snap.roots.log_root):
        raise SyncRefused(f"{who}: the frontier (size {log_size}, root "
                          f"{tree.root().hex()[:16]}) is not the snapshot's log (size "
                          f"{snap.roots.log_size}, root {snap.roots.log_root.hex()[:16]})")
    fresh = executor.snapshot()
    try:
        try:
            executor.restore(snap.executor)
        except MalformedSnapshot as e:
            raise SyncRefused(f"{who}: snapshot at height {h}: {e}") from None
        if (executor.executed_height, executor.last_digest) != (h, snap.block.digest):
            raise SyncRefused(f"{who}: the snapshot's state is not of its block {h}")
        mine = {h: (executor.state_root(), tree.size, tree.root())}
        certified: int | None = None
        for fb in fetched:
            b, c = fb.block, fb.block.roots
            if c.height in mine:
                ours = mine[c.height]
                if ours != (c.state_root, c.log_size, c.log_root):
                    raise SyncRefused(
                        f"{who}: finalised block {b.height} certifies state root "
                        f"{c.state_root.hex()[:16]}, log size {c.log_size}, log root "
                        f"{c.log_root.hex()[:16]} at height {c.height}; the snapshot at "
                        f"height {h} gives {ours[0].hex()[:16]}, {ours[1]}, "
                        f"{ours[2].hex()[:16]}")
                certified = c.height
            root = executor.apply_block(b.height, b.digest, b.commands).state_root
            for leaf in entry_leaves(b):
                tree.append(merkle.leaf_hash(leaf))
            mine[b.height] = (root, tree.size, tree.root())
        if certified is None:
            raise SyncRefused(f"{who}: no finalised block up to {fetched[-1].height} "
                              f"certifies the roots of height {h} or later")
    finally:
        executor.restore(fresh)
    return tuple(BlockToAppend(fb.block, fb.finalization) for fb in fetched)


# ---------------------------------------------------------------------------------------
# syncing


class StateSync:
    """Fetches and checks a snapshot from the other members, in turn, before the member
    starts (nothing else reads the sync channel meanwhile). `run` returns the first one that
    verifies, or None when every member said it holds none or was refused, or after
    MAX_SYNC_ROUNDS rounds."""

    def __init__(self, committee: CommitteeSpec, own_peer: bytes, executor: Executor,
                 router: Router, member_links: Callable[[], list[bytes]],
                 reply_timeout: float = SYNC_REPLY_TIMEOUT_S,
                 links_changed: Callable[[Callable[[], bool]], Awaitable[None]] | None = None
                 ) -> None:
        self.committee = committee
        self.own_peer = own_peer
        self.executor = executor
        self.router = router
        self.member_links = member_links
        self.links_changed = links_changed
        self.reply_timeout = reply_timeout
        self._next_id = 1
        #: One line per refusal, in order (what the member logged).
        self.refusals: list[str] = []

    def _who(self, peer: bytes) -> str:
        index = self.committee.index_of(peer)
        return f"state sync: member {index} ({short(peer)})"

    async def run(self) -> Synced | None:
        done: set[bytes] = set()  # refused, or holds no snapshot
        others = [m for m in self.committee.members if m != self.own_peer]
        if self.links_changed is not None:
            with trio.move_on_after(SYNC_LINK_WAIT_S):
                await self.links_changed(lambda: set(others) <= set(self.member_links()))
        for _ in range(MAX_SYNC_ROUNDS):
            linked = set(self.member_links())
            for peer in others:
                if peer in done or peer not in linked:
                    continue
                try:
                    synced = await self._from_peer(peer)
                except NoSnapshot as e:
                    log.info("state_sync.no_snapshot", peer=short(peer), reason=str(e))
                    done.add(peer)
                    continue
                except SyncRefused as e:
                    SYNC_REFUSED.inc()
                    self.refusals.append(str(e))
                    log.warning("state_sync.refused", reason=str(e))
                    done.add(peer)
                    continue
                log.info("state_sync.verified", peer=short(peer), height=synced.snapshot.height,
                         head=synced.head, log_size=synced.log_size)
                return synced
            if done.issuperset(others):
                return None
            await trio.sleep(SYNC_ROUND_WAIT_S)
        return None

    async def _ask(self, peer: bytes, msg: wire.SnapshotRequest | wire.BlocksRequest, *,
                   timeout: float | None = None) -> wire.Message:
        """Send `msg` and wait for the peer's answer to it; what else arrives on the sync
        channel meanwhile is dropped (the member serves nothing before it has a log)."""
        who = self._who(peer)
        if not await self.router.send(Channel.SYNC, peer, wire.encode_message(msg)):
            raise SyncRefused(f"{who}: not connected")
        timeout = self.reply_timeout if timeout is None else timeout
        with trio.move_on_after(timeout):
            async for sender, data in self.router.receive(Channel.SYNC):
                if sender != peer:
                    continue
                try:
                    reply = wire.decode_message(data)
                except RemoteError as e:
                    raise SyncRefused(f"{who}: {e}") from None
                if isinstance(reply, wire.Refused | wire.SnapshotChunk | wire.Blocks) \
                        and reply.request_id == msg.request_id:
                    return reply
        raise SyncRefused(f"{who}: no answer within {timeout:g} s")

    def _rid(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _from_peer(self, peer: bytes) -> Synced:
        who = self._who(peer)
        first = await self._ask(peer, wire.SnapshotRequest(self._rid(), 0, 0))
        if isinstance(first, wire.Refused):
            raise NoSnapshot(f"{who}: {first.reason}")
        if not isinstance(first, wire.SnapshotChunk) or first.offset != 0:
            raise SyncRefused(f"{who}: the first page is not bytes 0.. of a snapshot")
        data = bytearray()
        page = first
        while True:
            expected = min(wire.MAX_SYNC_CHUNK, first.total - len(data))
            same = (page.height, page.total, page.offset, page.log_size, page.frontier) == (
                first.height, first.total, len(data), first.log_size, first.frontier)
            if not same:
                raise SyncRefused(f"{who}: page at offset {page.offset} is of another snapshot "
                                  f"or offset (asked for {len(data)} of height {first.height})")
            if len(page.chunk) != expected:
                raise SyncRefused(f"{who}: a page of {len(page.chunk)} bytes at offset "
                                  f"{page.offset}, expected {expected} of {first.total}")
            data += page.chunk
            if len(data) == first.total:
                break
            reply = await self._ask(peer, wire.SnapshotRequest(self._rid(), first.height,
                                                               len(data)))
            if not isinstance(reply, wire.SnapshotChunk):
                raise SyncRefused(f"{who}: stopped serving its snapshot at offset {len(data)}: "
                                  f"{getattr(reply, 'reason', 'not a snapshot page')}")
            page = reply
        try:
            snap = SnapshotFile.decode(bytes(data), f"{who}: snapshot at height {first.height}")
        except SnapshotRefused as e:
            raise SyncRefused(str(e)) from None
        del data
        if snap.height != first.height:
            raise SyncRefused(f"{who}: the file at height {first.height} holds height "
                              f"{snap.height}")
        fetched = await self._certifying_blocks(peer, snap)
        blocks = await trio.to_thread.run_sync(
            verify_synced, self.committee, self.executor, snap, first.log_size,
            first.frontier, fetched, who)
        return Synced(peer, snap, first.log_size, first.frontier, blocks)

    async def _certifying_blocks(self, peer: bytes, snap: SnapshotFile
                                 ) -> list[FinalizedBlock]:
        """The blocks after the snapshot's up to the first one at or after a block whose
        roots are of the snapshot's height or later that carries its own finalize
        certificate (checked later by `verify_synced`)."""
        who = self._who(peer)
        fetched: list[FinalizedBlock] = []
        certifier: int | None = None
        while len(fetched) < MAX_SYNC_BLOCKS:
            start = snap.height + 1 + len(fetched)
            # `wait`: a peer's newest snapshot is often of its newest block; the block that
            # certifies it is the next one or the one after.
            reply = await self._ask(peer, wire.BlocksRequest(
                self._rid(), start, min(wire.MAX_BLOCKS_PER_REPLY,
                                        MAX_SYNC_BLOCKS - len(fetched)), True),
                timeout=wire.BLOCKS_WAIT_S + self.reply_timeout)
            if isinstance(reply, wire.Refused):
                raise SyncRefused(f"{who}: blocks from {start}: {reply.reason}")
            if not isinstance(reply, wire.Blocks) or not reply.blocks:
                raise SyncRefused(f"{who}: holds no blocks from {start}")
            for i, fb in enumerate(reply.blocks):
                if fb.height != start + i:
                    raise SyncRefused(f"{who}: asked for blocks from {start}, got "
                                      f"{fb.height} at position {i}")
                fetched.append(fb)
                if certifier is None and fb.block.roots.height >= snap.height:
                    certifier = fb.height
                own = fb.finalization
                if certifier is not None and own is not None and own.digest == fb.block.digest:
                    return fetched
        raise SyncRefused(f"{who}: no finalised block within {MAX_SYNC_BLOCKS} blocks after "
                          f"height {snap.height} certifies it")


async def write_synced(store: AsyncStore, snapshots: SnapshotStore, synced: Synced) -> None:
    """Write a verified sync: the snapshot file (the member's own from now on), then the
    log's base and the blocks after it (one transaction). A crash in between leaves an
    empty log, which syncs again at the next start."""
    await trio.to_thread.run_sync(snapshots.write, synced.snapshot)
    await store.run(lambda s: _install(s, synced))


def _install(s: Store, synced: Synced) -> None:
    s.install_base(synced.snapshot.block, synced.log_size, synced.frontier, synced.blocks)


def needs_sync(s: Store) -> bool:
    """An empty log (no block, no base): the only one state sync may fill."""
    return s.height == 0 and s.base is None

