"""`coalitiond audit`: re-derive every confluence commit from the citizens' certified logs.

Nothing the confluence committee says is taken on trust except *what it committed* (its
certified blocks, verified against its committee like any archive). The audit:

1. verifies every archive (confluence and citizens) against its committee, and replays each
   citizen's feed through a fresh executor into a `MemoryView` (entries, block digests);
2. walks the confluence's certified blocks in order with an honest replica of the confluence
   state machine. Each `ingest` is rebuilt from the citizen's own log (same entries, same
   block): every item it dropped, invented, altered or repeated is a mismatch, and the
   replica is fed the rebuilt (upstream) items, never the claimed ones. Each `route`/`attest`
   is compared with the record the replica sealed for that key: every intent or submission
   dropped, invented, repeated or altered, every mis-summed amount or total, every other
   field that differs, is a mismatch;
3. reports each mismatch with the confluence block that certified it and the evidence
   pointer `(citizen, entry, height, block)` of the upstream entry concerned.

Exit 1 (cli/audit.py) when there is any mismatch. What the audit cannot see: stamps are
taken as committed (checking them needs the Almanac's archive, `coalitiond verify`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..commands.envelope import Acl
from ..commands.member import MalformedMemberCommand, MemberCommand, is_member_command
from ..components import base as component_base
from ..components.confluence.component import Confluence
from ..components.confluence.records import (
    INGEST_KEYS,
    INGEST_OP,
    CitizenView,
    MemoryView,
    build_ingest,
    show_pointer,
)
from ..components.executor import Executor
from ..components.feed.component import Feed
from ..config import ConfigError, MemberConfig, parse_config
from ..consensus.types import Block
from ..log.archive import read_blocks, read_header, verify_archive
from ..log.audit import AuditFailure
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import encode
from ..primitives.errors import CoalitiondError, OperatorError
from ..primitives.identity import digest


@dataclass(frozen=True, slots=True)
class Mismatch:
    height: int
    code: str
    detail: str
    pointer: tuple[Any, ...] | None = None

    def render(self, citizen_ids: Sequence[bytes] | None = None) -> str:
        where = "" if self.pointer is None else f" [{show_pointer(self.pointer, citizen_ids)}]"
        return f"confluence block {self.height}: {self.code}: {self.detail}{where}"


@dataclass
class AuditReport:
    blocks: int = 0
    ingests: int = 0
    records: int = 0
    uncommitted: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.mismatches


# ---------------------------------------------------------------------------------------
# Re-derivation (pure: blocks and views in, mismatches out)


class _Auditor:
    def __init__(self, component: Confluence, committee_id: bytes,
                 views: Sequence[CitizenView], report: AuditReport) -> None:
        self.c = component
        self.cid = committee_id
        self.views = views
        self.report = report
        self.executor = Executor(committee_id, Acl.allow([]), component,
                                 follow_almanac=component.follow_almanac)

    def miss(self, height: int, code: str, detail: str, ptr: Sequence[Any] | None = None
             ) -> None:
        self.report.mismatches.append(Mismatch(height, code, detail,
                                               None if ptr is None else tuple(ptr)))

    def block(self, block: Block) -> None:
        commands: list[bytes] = []
        sealed = dict(self.c.pending)
        done = dict(self.c.committed)
        for data in block.commands:
            if not is_member_command(data):
                commands.append(data)  # the replica refuses client commands as it should
                continue
            try:
                command = MemberCommand.decode(data)
            except MalformedMemberCommand as exc:
                self.miss(block.height, "malformed_command", str(exc))
                continue
            if command.op == INGEST_OP:
                self.report.ingests += 1
                rebuilt = self.ingest(block.height, command.args)
                if rebuilt is not None:
                    commands.append(rebuilt)
            elif command.op == self.c.OUTPUT_OP:
                self.report.records += 1
                self.record(block.height, command.args, sealed, done)
                commands.append(data)
            else:
                commands.append(data)
        self.executor.apply_block(block.height, block.digest, commands)
        self.report.blocks += 1

    # -- ingests --------------------------------------------------------------------------

    def ingest(self, height: int, args: Mapping[str, Any]) -> bytes | None:
        n = len(self.views)
        if set(args) != INGEST_KEYS or not (isinstance(args["citizen"], int)
                                            and 0 <= args["citizen"] < n
                                            and isinstance(args["items"], list)):
            self.miss(height, "malformed_ingest", f"ingest args {sorted(args)} are not an "
                      "ingest of a spanned citizen")
            return None
        c, start, end, at = args["citizen"], args["from"], args["to"], args["height"]
        view = self.views[c]
        rebuilt = None
        if all(isinstance(x, int) and x >= 0 for x in (start, end, at)):
            rebuilt = build_ingest(view, c, self.c.KINDS, start, end=end, height=at)
        if rebuilt is None:
            self.miss(height, "ingest_unknown_position",
                      f"ingest of citizen {c} entries {start}..{end} up to block {at}: the "
                      "citizen's certified log does not hold that")
            return None
        if rebuilt.block != args["block"]:
            self.miss(height, "ingest_wrong_block",
                      f"citizen {c} block {at} is {rebuilt.block.hex()[:16]}, the ingest says "
                      f"{bytes(args['block']).hex()[:16] if isinstance(args['block'], bytes) else args['block']}")
        expected = {item[1]: list(item) for item in rebuilt.to_args()["items"]}
        digests = dict(rebuilt.blocks)
        seen: set[int] = set()
        for item in args["items"]:
            if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[1], int)):
                self.miss(height, "ingest_malformed_item", f"item {item!r:.80}")
                continue
            seq = item[1]
            claimed_ptr = [c, seq, item[2], _digest_in(args.get("blocks"), item[2])]
            if seq in seen:
                self.miss(height, "ingest_duplicated_item",
                          f"citizen {c} entry {seq} appears twice in one ingest", claimed_ptr)
            elif seq not in expected:
                self.miss(height, "ingest_invented_item",
                          f"{item[0]} item for citizen {c} entry {seq}: the citizen's log "
                          "holds no such item there", claimed_ptr)
            elif item != expected[seq]:
                self.miss(height, "ingest_altered_item",
                          f"citizen {c} entry {seq}: the ingest's {item[0]} item differs from "
                          "the citizen's entry", [c, seq, expected[seq][2],
                                                  digests[expected[seq][2]]])
            seen.add(seq)
        for seq in sorted(set(expected) - seen):
            e = expected[seq]
            self.miss(height, "ingest_dropped_item",
                      f"citizen {c} entry {seq} ({e[0]}) is missing from the ingest",
                      [c, seq, e[2], digests[e[2]]])
        return MemberCommand.make(self.cid, INGEST_OP, rebuilt.to_args()).raw

    # -- records --------------------------------------------------------------------------

    def record(self, height: int, args: Mapping[str, Any], sealed: dict[Any, Any],
               done: dict[Any, bytes]) -> None:
        try:
            key = self.c.key_of(args)
            hash(key)
        except (KeyError, TypeError):
            self.miss(height, "malformed_record", f"{self.c.OUTPUT_OP} args {sorted(args)}")
            return
        name = f"{self.c.OUTPUT_OP} {self.c.show_key(key)}"
        honest = sealed.get(key)
        if honest is None:
            if key in done:
                if digest(encode(dict(args))) != done[key]:
                    self.miss(height, "record_second_commit",
                              f"{name} committed a second time with different content")
                return
            self.miss(height, "record_not_sealed",
                      f"{name}: the citizens' logs up to this point do not make this key "
                      "final (invented key, or committed before its slot was final)")
            self.rows(height, name, args, {"intents": [], "submissions": []})
            return
        del sealed[key]
        done[key] = digest(encode(honest))
        if encode(dict(args)) == encode(honest):
            return
        self.rows(height, name, args, honest)
        for f in sorted(honest):
            if f in ("intents", "submissions", "amount", "total"):
                continue
            if args.get(f) != honest[f]:
                self.miss(height, f"record_{f}", f"{name}: {f} is {args.get(f)!r:.100}, "
                          f"derived {honest[f]!r:.100}")
        if "amount" in honest:
            claimed_rows = args.get("submissions") or []
            summed = sum(r[5] for r in claimed_rows
                         if isinstance(r, list) and len(r) == 6 and isinstance(r[5], int))
            if args.get("amount") != summed:
                self.miss(height, "record_mis_sum",
                          f"{name}: amount {args.get('amount')} is not the sum {summed} of "
                          "its own submissions")
            for f in ("amount", "total"):
                if args.get(f) != honest[f]:
                    self.miss(height, f"record_wrong_{f}",
                              f"{name}: {f} {args.get(f)} committed, {honest[f]} derived")

    def rows(self, height: int, name: str, args: Mapping[str, Any],
             honest: Mapping[str, Any]) -> None:
        f = "intents" if self.c.OUTPUT_OP == "route" else "submissions"
        what = "intent" if f == "intents" else "submission"
        raw = args.get(f)
        claimed: list[Any] = raw if isinstance(raw, list) else []
        derived = {bytes(r[0]): r for r in honest.get(f, [])}
        seen: set[bytes] = set()
        for r in claimed:
            if not (isinstance(r, list) and len(r) >= 5 and isinstance(r[0], bytes)):
                self.miss(height, f"record_malformed_{what}", f"{name}: row {r!r:.80}")
                continue
            ptr = r[1:5]
            if r[0] in seen:
                self.miss(height, f"record_duplicated_{what}",
                          f"{name}: {what} {r[0].hex()[:16]} listed more than once", ptr)
            elif r[0] not in derived:
                self.miss(height, f"record_invented_{what}",
                          f"{name}: {what} {r[0].hex()[:16]} is not in the citizens' logs "
                          "for this key", ptr)
            elif r != derived[r[0]]:
                self.miss(height, f"record_altered_{what}",
                          f"{name}: {what} {r[0].hex()[:16]} differs from its upstream entry",
                          derived[r[0]][1:5])
            seen.add(r[0])
        for key in sorted(set(derived) - seen):
            self.miss(height, f"record_dropped_{what}",
                      f"{name}: {what} {key.hex()[:16]} is missing", derived[key][1:5])


def _digest_in(blocks: Any, height: Any) -> bytes:
    if isinstance(blocks, list):
        for b in blocks:
            if isinstance(b, list) and len(b) == 2 and b[0] == height and isinstance(b[1], bytes):
                return b[1]
    return b"\x00" * 32


def audit_blocks(component: Confluence, committee_id: bytes, blocks: Iterable[Block],
                 views: Sequence[CitizenView]) -> AuditReport:
    """Re-derive the commits of a confluence's certified `blocks` (height order, verified by
    the caller) from `views` of its citizens' certified logs, with `component` a fresh honest
    replica of the confluence's state machine."""
    report = AuditReport()
    auditor = _Auditor(component, committee_id, views, report)
    for block in blocks:
        auditor.block(block)
    report.uncommitted = len(component.pending)
    return report


# ---------------------------------------------------------------------------------------
# Archives


def _config_of(text: str | None, committee: CommitteeSpec, given: MemberConfig | None,
               what: str) -> MemberConfig:
    configs = [given] if given is not None else []
    if text is not None:
        try:
            configs.append(parse_config(tomllib.loads(text), Path(f"{what}-config.toml")))
        except (tomllib.TOMLDecodeError, ConfigError) as e:
            raise AuditFailure(f"{what}: the archive's config text does not parse: {e}") from None
    for cfg in configs:
        if cfg.committee_spec().committee_id == committee.committee_id:
            return cfg
    raise AuditFailure(f"{what}: no member config of committee {committee.committee_id.hex()} "
                       "(export the archive with --config, or pass one)")


def citizen_view(path: Path, stable_id: bytes, config: MemberConfig | None = None
                 ) -> MemoryView:
    """Verify a citizen feed archive against its stable id and replay it into a view."""
    verify_archive(path, expect_committee=stable_id)
    header = read_header(path)
    cfg = _config_of(header.config_text, header.committee, config, str(path))
    feed = component_base.build("feed", cfg.component.to_cbor())
    if not isinstance(feed, Feed):
        raise AuditFailure(f"{path}: citizen {stable_id.hex()[:16]} is not a feed committee")
    feed.bind(header.committee)
    executor = Executor(stable_id, Acl.allow(cfg.committee.acl.clients,
                                             cfg.committee.acl.ticket_issuers), feed,
                        follow_almanac=getattr(cfg.component, "follow_almanac", None))
    view = MemoryView([], {})
    with read_blocks(path) as (_, blocks):
        for fb in blocks:
            try:
                executor.apply_block(fb.height, fb.block.digest, fb.block.commands)
            except CoalitiondError as e:
                raise AuditFailure(f"{path}: replay failed at height {fb.height}: {e}") from None
            view.blocks[fb.height] = (fb.block.digest, len(feed))
    view.entries = [feed.encoded(i) for i in range(len(feed))]
    return view


def audit_archives(confluence: Path, citizens: Sequence[Path], *,
                   config: MemberConfig | None = None,
                   citizen_configs: Sequence[MemberConfig] = ()) -> tuple[AuditReport,
                                                                           list[bytes]]:
    """Audit a confluence archive against its citizens' archives (any order). AuditFailure
    when an archive does not verify or one is missing; mismatches in the report."""
    rep = verify_archive(confluence)
    committee = rep.header.committee
    cfg = _config_of(rep.header.config_text, committee, config, str(confluence))
    if committee.component_kind not in ("intents", "ledger"):
        raise AuditFailure(f"{confluence}: a {committee.component_kind!r} committee is not a "
                           "confluence")
    try:
        component = component_base.build(committee.component_kind, cfg.component.to_cbor())
    except CoalitiondError as e:
        raise AuditFailure(f"{confluence}: confluence parameters: {e}") from None
    assert isinstance(component, Confluence)
    component.bind(committee)
    by_id: dict[bytes, Path] = {}
    for path in citizens:
        by_id[read_header(path).committee.committee_id] = path
    given = {c.committee_spec().committee_id: c for c in citizen_configs}
    views: list[CitizenView] = []
    for stable_id in component.citizens:
        found = by_id.get(stable_id)
        if found is None:
            raise OperatorError(f"no archive of spanned citizen {stable_id.hex()} (pass it "
                                "with --citizen)")
        views.append(citizen_view(found, stable_id, given.get(stable_id)))
    with read_blocks(confluence) as (_, blocks):
        report = audit_blocks(component, committee.committee_id,
                              (fb.block for fb in blocks), views)
    return report, list(component.citizens)


__all__ = ["AuditReport", "Mismatch", "audit_archives", "audit_blocks", "citizen_view"]
