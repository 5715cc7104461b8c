"""What the log keeps with each finalised block besides the block: its certificates and
every vote this member collected for it — including the votes of the slowest members,
which arrive after the block was handed to the store.

Sans-IO and synchronous: the member's tasks call it on the event loop, between awaits.
The member feeds it every verified vote and notarization (`observe`), every block the core
finalises (`finalized`) and every block fetched in catch-up (`fetched`); before each store
commit it asks what to write (`take_blocks`, `take_late_votes`) and after the commit says
what became durable (`stored`).

The rule that keeps late votes (docs/formats.md, "Late votes"): a vote for a block that has
been handed to the store — stored, or in the commit being written right now — is a *late
vote*; it waits for the first commit after the block is durable and is added to the block's
votes there. A block handed to the store is known by its (view, digest) from the moment it
is taken, not from when its commit returns: a vote observed while the commit is in flight
(the member's intake runs during that await) would otherwise be filed under a block that is
never stored again, and lost.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, TypeVar

from ..consensus.messages import Message, Notarization
from ..consensus.types import Block, Certificate, Vote, VoteKind
from ..log.records import FinalizedBlock
from ..log.sqlite import BlockToAppend

#: Blocks whose votes and notarization are kept until they finalise, fetched blocks kept
#: until the core finalises them, and blocks handed to the store whose late votes are still
#: taken: each table holds at most this many (oldest dropped first).
MAX_TRACKED_BLOCKS: Final = 1024
#: Late votes waiting for a commit; beyond this they are dropped (the block keeps its
#: certificate and the votes it was stored with). One per (height, kind, signer): a member
#: repeating its vote takes one place.
MAX_LATE_VOTES: Final = 1024

_Key = tuple[int, bytes]  # (view, digest): a vote naming a known digest under another view
#                           is about another block and must never be filed under this one.


@dataclass(frozen=True, slots=True)
class _Finalised:
    """A block the core finalised, not yet handed to the store."""

    block: Block
    finalization: Certificate | None
    fetched: FinalizedBlock | None


def _about(cert: Certificate | None, kind: VoteKind, block: Block) -> Certificate | None:
    """`cert` if it is a `kind` certificate of exactly `block`, else None."""
    if cert is None or (cert.kind, cert.epoch, cert.view, cert.digest) != (
            kind, block.epoch, block.view, block.digest):
        return None
    return cert


K = TypeVar("K")
V = TypeVar("V")


def bounded_put(table: OrderedDict[K, V], key: K, value: V, limit: int = MAX_TRACKED_BLOCKS
                ) -> None:
    """Insert or refresh `key` as the newest entry; drop the oldest beyond `limit`."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


class BlockJournal:
    """Certificates and votes of finalised blocks, on their way into the log."""

    def __init__(self, quorum: int, durable_height: int) -> None:
        self._quorum = quorum
        #: The highest height the store holds (its last commit returned).
        self.durable_height = durable_height
        self._votes: OrderedDict[_Key, dict[tuple[int, int], Vote]] = OrderedDict()
        self._notarizations: OrderedDict[_Key, Certificate] = OrderedDict()
        self._fetched: OrderedDict[bytes, FinalizedBlock] = OrderedDict()
        #: Finalised, not yet handed to the store: the last one's finalization has not
        #: arrived (it is final through a descendant we do not hold yet).
        self._unstored: list[_Finalised] = []
        #: Handed to the store (stored, or in the commit being written): key -> height.
        self._handed: OrderedDict[_Key, int] = OrderedDict()
        self._late: dict[tuple[int, int, int], Vote] = {}
        #: Late votes dropped because MAX_LATE_VOTES were waiting, since the last
        #: `take_late_votes`.
        self.late_votes_dropped = 0

    # -- what the member saw ---------------------------------------------------------------

    def observe(self, msg: Message) -> None:
        """A verified message received or sent: keep its vote or notarization."""
        if isinstance(msg, Vote) and msg.kind is not VoteKind.NULLIFY:
            key = (msg.view, msg.digest)
            height = self._handed.get(key)
            if height is not None:
                self._add_late(height, msg)
                return
            votes = self._votes.get(key)
            if votes is None:
                votes = {}
                bounded_put(self._votes, key, votes)
            votes.setdefault((int(msg.kind), msg.signer), msg)
        elif isinstance(msg, Notarization):
            cert = msg.certificate
            bounded_put(self._notarizations, (cert.view, cert.digest), cert)

    def fetched(self, fb: FinalizedBlock) -> None:
        """A block fetched in catch-up whose votes and certificates were verified."""
        bounded_put(self._fetched, fb.block.digest, fb)

    def finalized(self, block: Block, certificate: Certificate) -> None:
        """The core finalised `block` (with `certificate`, its own or a descendant's)."""
        fetched = self._fetched.pop(block.digest, None)
        finalization = _about(certificate, VoteKind.FINALIZE, block)
        if finalization is None and fetched is not None:
            finalization = _about(fetched.finalization, VoteKind.FINALIZE, block)
        self._unstored.append(_Finalised(block, finalization, fetched))

    def _add_late(self, height: int, vote: Vote) -> None:
        slot = (height, int(vote.kind), vote.signer)
        if slot in self._late:
            return
        if len(self._late) >= MAX_LATE_VOTES:
            self.late_votes_dropped += 1
            return
        self._late[slot] = vote

    # -- what the next commit writes --------------------------------------------------------

    def take_blocks(self) -> list[BlockToAppend]:
        """The finalised blocks to append now, with every certificate and vote held for
        each: all of them once the last carries a finalization (the store takes a chain
        only then), else none. From here on, votes for them are late votes."""
        if not self._unstored or self._unstored[-1].finalization is None:
            return []
        taken, self._unstored = self._unstored, []
        out = []
        for f in taken:
            out.append(self._to_append(f))
            bounded_put(self._handed, (f.block.view, f.block.digest), f.block.height)
        return out

    def _to_append(self, f: _Finalised) -> BlockToAppend:
        block = f.block
        key = (block.view, block.digest)
        votes = dict(self._votes.pop(key, {}))
        notarization = _about(self._notarizations.pop(key, None), VoteKind.NOTARIZE, block)
        if f.fetched is not None:
            for v in f.fetched.votes:
                votes.setdefault((int(v.kind), v.signer), v)
            if notarization is None:
                notarization = _about(f.fetched.notarization, VoteKind.NOTARIZE, block)
        votes = {k: v for k, v in votes.items()
                 if (v.epoch, v.view, v.digest) == (block.epoch, block.view, block.digest)}
        if f.finalization is None and notarization is None:
            # Formed by the core from votes we hold: rebuild it from them.
            notes = [v for (k, _), v in sorted(votes.items()) if k == VoteKind.NOTARIZE]
            if len(notes) >= self._quorum:
                notarization = Certificate.from_votes(notes)
        return BlockToAppend(block, f.finalization, tuple(v for _, v in sorted(votes.items())),
                             notarization)

    def take_late_votes(self) -> list[tuple[int, Vote]]:
        """Late votes for blocks the store holds, in (height, kind, signer) order; those for
        blocks still in flight wait for a later commit (the store refuses a vote for a block
        it does not hold)."""
        ready = sorted(slot for slot in self._late if slot[0] <= self.durable_height)
        self.late_votes_dropped = 0
        return [(slot[0], self._late.pop(slot)) for slot in ready]

    def put_back_late_votes(self, late: list[tuple[int, Vote]]) -> None:
        """Late votes taken for a commit that was not made after all."""
        for height, vote in late:
            self._add_late(height, vote)

    def stored(self, items: list[BlockToAppend]) -> None:
        """The commit holding `items` returned: they are durable."""
        if items:
            self.durable_height = max(self.durable_height, items[-1].block.height)

    @property
    def late_votes_waiting(self) -> int:
        return len(self._late)
