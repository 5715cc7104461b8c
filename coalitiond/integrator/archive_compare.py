"""Compare two archives of one Chronicle committee entry by entry (SPEC §3.3).

`coalitiond verify --archive A --against B` finds the first height where two logs differ;
for a Chronicle an auditor wants more: which audit-log *entries* differ, and whose
signatures stand behind each side. `compare_chronicle_archives` replays each archive's
blocks through an `Executor` with a `Chronicle` (exactly as a member rebuilds its state on
start), then walks the two entry lists by `seq`:

* `equal` — the same entry bytes on both sides;
* `differ` — both sides hold an entry with this seq, different bytes;
* `only_a` / `only_b` — one side is longer.

For every non-equal seq (the first `MAX_REPORTED_DIFFERENCES`), each side names the block
holding the entry (height, digest, view) and the members whose *valid* finalize and notarize
signatures stand behind it: the finalization (or notarization) certificate's signers and the
individual votes the archive keeps in `FinalizedBlock.votes`. The anchors each side committed
are compared too.

The replay needs the Chronicle's parameters and the committee's client ACL. Given
explicitly, they must hash to the committee's `component_config_digest` (so nobody can
replay an archive under other rules); otherwise they come from the member config text the
archive carries (`coalitiond export --config`), checked the same way.

Signature checks here only attribute blocks; run `archive.verify_archive` on both archives
for the full offline audit (the CLI does, before comparing).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..commands.envelope import Acl
from ..components.chronicle.component import Chronicle
from ..components.chronicle.records import ChronicleAnchor, ChronicleEntry
from ..components.executor import Executor
from ..config import AclConfig, parse_config
from ..log.archive import ArchiveHeader, Side, block_signers, read_blocks, read_header
from ..log.audit import AuditFailure
from ..log.records import FinalizedBlock
from ..primitives.committee import CommitteeSpec
from ..primitives.errors import CoalitiondError, ConfigError, LocalError, OperatorError
from ..primitives.identity import digest, hash_structure, short

EQUAL: Final = "equal"
DIFFER: Final = "differ"
ONLY_A: Final = "only_a"
ONLY_B: Final = "only_b"
#: Non-equal seqs described in full; the rest are only counted (`omitted`).
MAX_REPORTED_DIFFERENCES: Final = 1_000
#: Rows the text rendering prints before summarising the rest.
MAX_RENDERED_DIFFERENCES: Final = 20


@dataclass(frozen=True, slots=True)
class BlockSigners:
    """A block and the members whose valid signatures stand behind it."""

    height: int
    digest: bytes
    view: int
    finalized_by: tuple[int, ...]
    notarized_by: tuple[int, ...]

    @classmethod
    def of(cls, fb: FinalizedBlock, committee: CommitteeSpec) -> BlockSigners:
        side: Side = block_signers(fb, committee)
        return cls(fb.height, side.digest, side.view, tuple(side.finalized_by),
                   tuple(side.notarized_by))

    @property
    def signers(self) -> frozenset[int]:
        return frozenset(self.finalized_by) | frozenset(self.notarized_by)


@dataclass(frozen=True, slots=True)
class EntrySide:
    entry: ChronicleEntry
    block: BlockSigners


@dataclass(frozen=True, slots=True)
class EntryDifference:
    seq: int
    status: str
    a: EntrySide | None
    b: EntrySide | None

    @property
    def both_sides(self) -> tuple[int, ...]:
        """Members whose valid signatures stand behind both sides' blocks."""
        if self.a is None or self.b is None:
            return ()
        return tuple(sorted(self.a.block.signers & self.b.block.signers))


@dataclass(frozen=True, slots=True)
class SeqSpan:
    """Consecutive seqs `first..last` (inclusive) with one status."""

    first: int
    last: int
    status: str


@dataclass(frozen=True, slots=True)
class Replay:
    """One archive replayed: its entries, anchors, and who signed the blocks holding them."""

    path: Path
    height: int
    entries: tuple[bytes, ...]
    anchors: tuple[ChronicleAnchor, ...]
    state_root: bytes
    blocks: Mapping[int, BlockSigners]


@dataclass
class ChronicleComparison:
    committee: CommitteeSpec
    a: Replay
    b: Replay
    spans: list[SeqSpan]
    differences: list[EntryDifference]
    #: Non-equal seqs beyond MAX_REPORTED_DIFFERENCES.
    omitted: int = 0
    #: The first index where the anchor lists disagree (None: one is a prefix of the other).
    anchor_divergence: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        """Some seq holds different entries (not merely one side being longer)."""
        return any(s.status == DIFFER for s in self.spans) or self.anchor_divergence is not None

    @property
    def common_prefix(self) -> int:
        """How many leading seqs are equal."""
        first = self.spans[0] if self.spans else None
        return first.last + 1 if first is not None and first.status == EQUAL else 0


# ---------------------------------------------------------------------------------------
# Parameters


def chronicle_config_digest(params: Mapping[str, Any], acl: AclConfig) -> bytes:
    """What `config.MemberConfig.component_config_digest` is for a chronicle member."""
    return hash_structure("component-config", 1, "chronicle", dict(params), acl.to_cbor())


def params_from_config_text(text: str, committee: CommitteeSpec
                            ) -> tuple[dict[str, Any], AclConfig]:
    """The chronicle parameters and ACL of the member config an archive carries."""
    try:
        cfg = parse_config(tomllib.loads(text), Path("archive-config.toml"))
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise AuditFailure(f"the archive's config text does not parse: {e}") from None
    if cfg.committee.component != "chronicle":
        raise AuditFailure(f"the archive's config is for a {cfg.committee.component!r} member")
    if cfg.component_config_digest != committee.component_config_digest:
        raise AuditFailure("the archive's config text is not this committee's (component "
                           "config digest differs)")
    return cfg.component.to_cbor(), cfg.committee.acl


def _rules(headers: tuple[ArchiveHeader, ArchiveHeader], params: Mapping[str, Any] | None,
           acl: AclConfig | None) -> tuple[dict[str, Any], AclConfig]:
    committee = headers[0].committee
    if params is not None or acl is not None:
        if params is None or acl is None:
            raise OperatorError("chronicle comparison: give both the parameters and the ACL, "
                                "or neither")
        if chronicle_config_digest(params, acl) != committee.component_config_digest:
            raise AuditFailure("the given chronicle parameters and ACL are not this "
                               "committee's (component config digest differs)")
        return dict(params), acl
    for h in headers:
        if h.config_text is not None:
            return params_from_config_text(h.config_text, committee)
    raise AuditFailure("neither archive carries its member config (export with --config), so "
                       "the chronicle parameters and ACL to replay with are unknown")


# ---------------------------------------------------------------------------------------
# Replay


def replay_archive(path: Path, committee: CommitteeSpec, params: Mapping[str, Any],
                   acl: AclConfig, blocks: Iterator[FinalizedBlock]) -> Replay:
    """Execute `blocks` (an archive's, in height order) on a fresh Chronicle executor."""
    try:
        chronicle = Chronicle.from_params(params)
    except OperatorError as e:
        raise AuditFailure(f"chronicle parameters: {e}") from None
    try:
        executor = Executor(committee.committee_id, Acl.allow(acl.clients, acl.ticket_issuers), chronicle,
                            follow_almanac=chronicle.follow_almanac)
    except (LocalError, OperatorError) as e:
        raise AuditFailure(f"cannot build the replay executor: {e}") from None
    holders: dict[int, BlockSigners] = {}
    height = 0
    for fb in blocks:
        try:
            result = executor.apply_block(fb.height, fb.block.digest, fb.block.commands)
        except CoalitiondError as e:
            raise AuditFailure(f"{path}: replay failed: {e}", height=fb.height) from None
        if any(e.envelope_id != fb.block.digest for e in result.entries):
            holders[fb.height] = BlockSigners.of(fb, committee)
        height = fb.height
    return Replay(Path(path), height, tuple(chronicle.entry_encodings()),
                  tuple(chronicle.anchors()), executor.state_root(), holders)


def _replay_file(path: Path, committee: CommitteeSpec, params: Mapping[str, Any],
                 acl: AclConfig) -> Replay:
    with read_blocks(Path(path)) as (_, blocks):
        return replay_archive(path, committee, params, acl, blocks)


def _read_header(path: Path) -> ArchiveHeader:
    return read_header(Path(path))


# ---------------------------------------------------------------------------------------
# Comparison


def compare_chronicle_archives(a: Path, b: Path, *, params: Mapping[str, Any] | None = None,
                               acl: AclConfig | None = None) -> ChronicleComparison:
    """Replay both archives of one Chronicle committee and compare them seq by seq.

    AuditFailure when the archives are of different committees, not of a chronicle, or the
    replay rules cannot be established; OperatorError when a file cannot be read."""
    ha, hb = _read_header(a), _read_header(b)
    committee = ha.committee
    if committee.committee_id != hb.committee.committee_id:
        raise AuditFailure(
            f"the archives are of different committees ({short(committee.committee_id)} and "
            f"{short(hb.committee.committee_id)}); nothing to compare")
    if committee.component_kind != "chronicle":
        raise AuditFailure(f"the archives are of a {committee.component_kind!r} committee, "
                           "not a chronicle")
    rule_params, rule_acl = _rules((ha, hb), params, acl)
    ra = _replay_file(a, committee, rule_params, rule_acl)
    rb = _replay_file(b, committee, rule_params, rule_acl)
    return compare_replays(committee, ra, rb)


def compare_replays(committee: CommitteeSpec, ra: Replay, rb: Replay) -> ChronicleComparison:
    spans: list[SeqSpan] = []
    differences: list[EntryDifference] = []
    omitted = 0
    for seq in range(max(len(ra.entries), len(rb.entries))):
        ea = ra.entries[seq] if seq < len(ra.entries) else None
        eb = rb.entries[seq] if seq < len(rb.entries) else None
        status = (EQUAL if ea == eb else DIFFER if ea is not None and eb is not None
                  else ONLY_A if ea is not None else ONLY_B)
        if spans and spans[-1].status == status and spans[-1].last == seq - 1:
            spans[-1] = SeqSpan(spans[-1].first, seq, status)
        else:
            spans.append(SeqSpan(seq, seq, status))
        if status == EQUAL:
            continue
        if len(differences) >= MAX_REPORTED_DIFFERENCES:
            omitted += 1
            continue
        differences.append(EntryDifference(seq, status, _side_of(ra, ea), _side_of(rb, eb)))
    anchor_divergence = next((i for i, (x, y) in enumerate(zip(ra.anchors, rb.anchors,
                                                                strict=False)) if x != y),
                             None)
    return ChronicleComparison(committee, ra, rb, spans, differences, omitted,
                               anchor_divergence)


def _side_of(replay: Replay, encoded: bytes | None) -> EntrySide | None:
    if encoded is None:
        return None
    entry = ChronicleEntry.decode(encoded)
    return EntrySide(entry, replay.blocks[entry.height])


# ---------------------------------------------------------------------------------------
# Text


_STATUS_TEXT: Final = {EQUAL: "equal", DIFFER: "DIFFER", ONLY_A: "only in A",
                       ONLY_B: "only in B"}


def _seqs(span: SeqSpan) -> str:
    return f"seq {span.first}" if span.first == span.last else f"seqs {span.first}..{span.last}"


def _describe_side(label: str, side: EntrySide) -> str:
    e, blk = side.entry, side.block
    return (f"    {label}: {e.kind} about {e.subject.hex()[:16]} by client "
            f"{e.client.hex()[:16]} (tick {e.tick}, body {len(e.body)} bytes, blake3 "
            f"{short(digest(e.body))}); block {blk.height} "
            f"{blk.digest.hex()[:16]} view {blk.view}: finalize signatures from members "
            f"{list(blk.finalized_by)}, notarize from {list(blk.notarized_by)}")


def render(cmp: ChronicleComparison) -> str:
    """A human-readable report (what `coalitiond verify --against` prints for a chronicle)."""
    c, ra, rb = cmp.committee, cmp.a, cmp.b
    lines = [f"chronicle {c.committee_id.hex()} ({c.component_kind}/{c.component_name}, epoch "
             f"{c.epoch}, n={c.n}, q={c.quorum})",
             f"  A = {ra.path}: heights 1..{ra.height}, {len(ra.entries)} entries, "
             f"{len(ra.anchors)} anchors, replayed state root {ra.state_root.hex()}",
             f"  B = {rb.path}: heights 1..{rb.height}, {len(rb.entries)} entries, "
             f"{len(rb.anchors)} anchors, replayed state root {rb.state_root.hex()}"]
    if not cmp.spans:
        lines.append("  both chronicles are empty")
    rows = {d.seq: d for d in cmp.differences}
    rendered = 0
    for span in cmp.spans:
        lines.append(f"  {_seqs(span)}: {_STATUS_TEXT[span.status]}")
        if span.status == EQUAL:
            continue
        for seq in range(span.first, span.last + 1):
            d = rows.get(seq)
            if d is None or rendered >= MAX_RENDERED_DIFFERENCES:
                continue
            rendered += 1
            if span.first != span.last:
                lines.append(f"   seq {seq}:")
            for label, side in (("A", d.a), ("B", d.b)):
                if side is not None:
                    lines.append(_describe_side(label, side))
            if d.both_sides:
                same = d.a is not None and d.b is not None and d.a.block.view == d.b.block.view
                lines.append(f"    members whose signatures stand behind both: "
                             f"{list(d.both_sides)}" + (" (same view: equivocation)"
                                                        if same else ""))
    shown = len(cmp.differences)
    if shown > rendered or cmp.omitted:
        lines.append(f"  ({shown - rendered + cmp.omitted} more differing seqs not shown)")
    if cmp.anchor_divergence is not None:
        i = cmp.anchor_divergence
        lines.append(f"  anchors DIFFER from anchor {i} (upto_seq {ra.anchors[i].upto_seq}): "
                     f"A {ra.anchors[i].digest.hex()[:16]}, B {rb.anchors[i].digest.hex()[:16]}")
    else:
        lines.append(f"  anchors agree on the first {min(len(ra.anchors), len(rb.anchors))}")
    verdict = ("DIVERGED" if cmp.diverged else
               "identical" if len(ra.entries) == len(rb.entries) else
               f"consistent: {'A' if len(ra.entries) < len(rb.entries) else 'B'} is a prefix")
    lines.append(f"  verdict: {verdict} (equal on seqs 0..{cmp.common_prefix - 1})"
                 if cmp.common_prefix else f"  verdict: {verdict}")
    return "\n".join(lines)
