"""Confluences over real certified feed chains, honest or with a Byzantine majority.

Test harness only (never imported by the daemon, never reachable from a configuration):

* `FeedCitizen` — a citizen feed committee (seeded keys, real signatures, real feed
  execution) that tests publish intents, refunds and slot markers into; it keeps the
  certified blocks (for archives) and a `MemoryView` of what a follower verified.
* `ConfluenceRun` — a confluence committee over such citizens: each `step()` builds the next
  block from what its leader would propose (`leader_commands`), certifies it with a quorum
  and executes it. With a tampered component class the whole quorum runs it: this is how
  tests produce the wrong commits a Byzantine majority could certify.
* The tampered components (`TAMPERS`): each breaks one rule of the honest state machine,
  for `coalitiond audit` to catch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..commands.client import EnvelopeSigner, publish
from ..commands.envelope import Acl
from ..commands.member import MemberCommand
from ..components.confluence.component import Confluence
from ..components.confluence.intents import Intents
from ..components.confluence.leader import leader_commands
from ..components.confluence.ledger import Ledger
from ..components.confluence.records import INGEST_OP, MemoryView
from ..components.executor import STAMP_OP, Executor, Stamp
from ..components.feed.component import Feed
from ..consensus.types import Block, genesis_block
from ..log.sqlite import BlockToAppend
from ..primitives.committee import CommitteeSpec, default_fault_bound
from ..primitives.crypto import SigningKey
from ..primitives.encoding import decode
from ..primitives.identity import digest, hash_structure
from .chain import ChainBuilder, seeded_key

ALMANAC_ID = b"\xa1" * 32


class FeedCitizen:
    """One citizen: a certified feed chain and a verified view of it. Seeded by default;
    `committee`, `keys`, `publisher` and `params` make it the committee a config describes."""

    def __init__(self, seed: int = 0, *, committee: CommitteeSpec | None = None,
                 keys: Sequence[SigningKey] | None = None, publisher: SigningKey | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        keys = list(keys) if keys is not None else [seeded_key(seed, i) for i in range(4)]
        publisher = publisher or seeded_key(seed, 10_000)
        if committee is None:
            committee = CommitteeSpec("fixture-net", "feed", "feed-citizen",
                                      tuple(k.public for k in keys), default_fault_bound(len(keys)))
        self.committee = committee
        self.chain = ChainBuilder(len(keys))
        self.chain.keys, self.chain.committee = list(keys), committee
        self.chain.head, self.chain.view = genesis_block(committee), 0
        self.publisher = publisher
        feed = Feed.from_params(params or {"publishers": [publisher.public]})
        feed.bind(committee)
        self.executor = Executor(committee.committee_id, Acl.allow([publisher.public]), feed)
        self.stable_id = committee.committee_id
        self.key20 = self.stable_id[:20]
        self.signer = EnvelopeSigner(publisher, self.stable_id)
        self.queued: list[bytes] = []
        self.items: list[BlockToAppend] = []
        self.view = MemoryView([], {})

    def feed(self) -> Feed:
        component = self.executor.component
        assert isinstance(component, Feed)
        return component

    def publish(self, kind: str, body: Any) -> None:
        self.queued.append(self.signer.sign([publish(kind, body)]).raw)

    def intent(self, intent_id: bytes, targets: Sequence[tuple[bytes, int]]) -> None:
        self.publish("intent", {"intent_id": intent_id, "origin": self.key20,
                                "targets": [[t, s] for t, s in targets]})

    def refund(self, submission_id: bytes, slot: int, recipient: bytes, amount: int) -> None:
        self.publish("refund", {"submission_id": submission_id, "origin": self.key20,
                                "slot": slot, "recipient": recipient, "amount": amount})

    def slot(self, slot: int) -> None:
        self.publish("slot", {"slot": slot})

    def block(self) -> BlockToAppend:
        """Certify a block of everything queued; the view learns it."""
        item = self.chain.next(tuple(self.queued))
        self.queued = []
        self.items.append(item)
        self.executor.apply_block(item.block.height, item.block.digest, item.block.commands)
        feed = self.feed()
        self.view.entries = [feed.encoded(i) for i in range(len(feed))]
        self.view.blocks[item.block.height] = (item.block.digest, len(feed))
        return item


def confluence_committee(kind: str, params: Mapping[str, Any], *, n: int = 4,
                         seed: int = 7) -> tuple[CommitteeSpec, list[Any]]:
    keys = [seeded_key(seed, i) for i in range(n)]
    spec = CommitteeSpec("fixture-net", kind, f"{kind}-test", tuple(k.public for k in keys),
                         default_fault_bound(n),
                         component_config_digest=hash_structure("component-config", 1, kind,
                                                                dict(params), {}))
    return spec, keys


class ConfluenceRun:
    """A confluence committee whose quorum runs `cls` (honest by default)."""

    def __init__(self, kind: str, citizens: Sequence[FeedCitizen], *,
                 failure_mode: str = "stall", deadline: int = 0,
                 cls: type[Confluence] | None = None,
                 tamper_ingest: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 committee: CommitteeSpec | None = None,
                 keys: Sequence[SigningKey] | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        self.citizens = list(citizens)
        self.params: dict[str, Any] = {"citizens": [c.stable_id for c in citizens],
                                       "failure_mode": failure_mode,
                                       "follow_almanac": ALMANAC_ID if failure_mode == "partial"
                                       else None}
        if failure_mode == "partial":
            self.params["partial_deadline_ticks"] = deadline
        if params is not None:  # a member config's [component] section
            self.params = dict(params)
        base: type[Confluence] = Intents if kind == "intents" else Ledger
        self.cls = cls or base
        if committee is None or keys is None:
            committee, keys = confluence_committee(kind, self.params)
        self.committee = committee
        self.chain = ChainBuilder(len(keys))
        self.chain.keys, self.chain.committee = list(keys), self.committee
        self.chain.head, self.chain.view = genesis_block(self.committee), 0
        self.component = self.make_component(self.cls)
        self.executor = Executor(self.committee.committee_id, Acl.allow([]), self.component,
                                 follow_almanac=self.params["follow_almanac"])
        self.tamper_ingest = tamper_ingest
        self.items: list[BlockToAppend] = []
        self.results: list[Any] = []
        self.tick = 0

    def make_component(self, cls: type[Confluence]) -> Confluence:
        component = cls.from_params(self.params)
        component.bind(self.committee)
        return component

    @property
    def blocks(self) -> list[Block]:
        return [i.block for i in self.items]

    def views(self) -> list[MemoryView]:
        return [c.view for c in self.citizens]

    def step(self, *, advance_tick: bool = False, blind: Sequence[int] = ()) -> Any:
        """One confluence block: what the leader proposes (citizens in `blind` unread)."""
        cid = self.committee.committee_id
        commands: list[bytes] = []
        if advance_tick:
            self.tick += 1
            commands.append(MemberCommand.make(cid, STAMP_OP, Stamp(
                ALMANAC_ID, self.tick, self.tick, digest(b"tick%d" % self.tick)).to_args()).raw)
        views = [None if i in blind else v for i, v in enumerate(self.views())]
        for raw in leader_commands(cid, self.component, views):
            command = MemberCommand.decode(raw)
            if command.op == INGEST_OP and self.tamper_ingest is not None:
                raw = MemberCommand.make(cid, INGEST_OP,
                                         self.tamper_ingest(dict(command.args))).raw
            commands.append(raw)
        item = self.chain.next(commands)
        self.items.append(item)
        result = self.executor.apply_block(item.block.height, item.block.digest,
                                           item.block.commands)
        self.results.append(result)
        return result

    def run(self, steps: int = 4, **kwargs: Any) -> None:
        for _ in range(steps):
            self.step(**kwargs)

    def committed(self) -> list[dict[str, Any]]:
        """Every record this run's quorum applied, in order."""
        return [e for r in self.results for e in _records(r)]


def _records(result: Any) -> list[dict[str, Any]]:
    out = []
    for entry in result.entries:
        obj = decode(entry.data)
        if isinstance(obj, list) and len(obj) == 2 and obj[0] in ("route", "attest"):
            out.append(obj[1])
    return out


# ---------------------------------------------------------------------------------------
# Tampered state machines (a Byzantine majority runs one; the audit must catch it)

FAKE_ID = b"\xee" * 32


class _Unchecked:
    """Skip the honest record shape check (a Byzantine quorum certifies anything)."""

    def check_output(self, args: Mapping[str, Any]) -> None:
        return


def _tamper_seals(base: type[Confluence], name: str,
                  change: Callable[[dict[str, Any]], None]) -> type[Confluence]:
    def seal(self: Confluence, key: Any, record: dict[str, Any], slot: int) -> None:
        record = dict(record)
        change(record)
        base.seal(self, key, record, slot)

    return type(name, (_Unchecked, base), {"seal": seal})


def _drop_first(field: str) -> Callable[[dict[str, Any]], None]:
    def change(r: dict[str, Any]) -> None:
        if r[field]:
            dropped = r[field][0]
            r[field] = r[field][1:]
            if field == "submissions":
                r["amount"] -= dropped[5]
                r["total"] -= dropped[5]
    return change


def _duplicate_first(field: str) -> Callable[[dict[str, Any]], None]:
    def change(r: dict[str, Any]) -> None:
        if r[field]:
            r[field] = [r[field][0], *r[field]]
            if field == "submissions":
                r["amount"] += r[field][0][5]
                r["total"] += r[field][0][5]
    return change


def _invent(field: str) -> Callable[[dict[str, Any]], None]:
    def change(r: dict[str, Any]) -> None:
        if r[field]:
            fake = [FAKE_ID, *r[field][0][1:]]
            r[field] = [*r[field], fake]
            if field == "submissions":
                r["amount"] += fake[5]
                r["total"] += fake[5]
    return change


def _mis_sum(r: dict[str, Any]) -> None:
    r["amount"] += 1
    r["total"] += 1


TAMPERS: dict[str, type[Confluence]] = {
    "intents-drop": _tamper_seals(Intents, "DroppingIntents", _drop_first("intents")),
    "intents-duplicate": _tamper_seals(Intents, "DuplicatingIntents",
                                       _duplicate_first("intents")),
    "intents-invent": _tamper_seals(Intents, "InventingIntents", _invent("intents")),
    "ledger-drop": _tamper_seals(Ledger, "DroppingLedger", _drop_first("submissions")),
    "ledger-duplicate": _tamper_seals(Ledger, "DuplicatingLedger",
                                      _duplicate_first("submissions")),
    "ledger-invent": _tamper_seals(Ledger, "InventingLedger", _invent("submissions")),
    "ledger-mis-sum": _tamper_seals(Ledger, "MisSummingLedger", _mis_sum),
}


def drop_first_item(args: dict[str, Any]) -> dict[str, Any]:
    """An ingest tamper: leave out the first relevant item (and its block if now unused)."""
    items = list(args["items"])
    if items:
        items = items[1:]
        used = {i[2] for i in items}
        args["blocks"] = [b for b in args["blocks"] if b[0] in used]
    args["items"] = items
    return args
