"""Checking a Chronicle archive against its anchors on an EVM chain (`coalitiond verify
--archive A --anchors RPC_URL --contract ADDR`, docs/chronicle.md §9).

The archive is replayed (as `archive_compare` does) to recompute every anchor digest; then,
for each recomputed anchor, the contract is read: `confirmed(upto_seq)` (the digest q members
agreed on) and `posted(upto_seq, member)` for every member's EVM address (from the member
config the archive carries, `[component.anchor_sink] members`). Every `Posted` event is read
too, so a post at an `upto_seq` the archive has no anchor for is reported.

Per anchor: `confirmed` (the chain's confirmed digest equals the recomputation), `missing`
(nothing confirmed yet), `conflicting` (the chain confirmed another digest: the archive or
the committee lied). Per member and anchor: `ok`, `absent` or `wrong` (a digest that is not
the archive's: evidence against that member's account).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..components.chronicle.evm_contract import ZERO32, AnchorContract, Post, address_hex
from ..components.chronicle.evm_rpc import JsonRpc, hex_int
from ..config import AclConfig
from ..log import AuditFailure
from ..log.archive import read_header
from .archive_compare import _replay_file, _rules

CONFIRMED: Final = "confirmed"
MISSING: Final = "missing"
CONFLICTING: Final = "conflicting"
#: Blocks per eth_getLogs request when reading Posted events.
LOG_PAGE_BLOCKS: Final = 10_000
#: At most this many posts are read (a contract is one committee's; more is not ours).
MAX_POSTS_READ: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class AnchorStatus:
    upto_seq: int
    digest: bytes                      # recomputed from the archive
    status: str                        # confirmed | missing | conflicting
    chain_digest: bytes | None         # what the chain confirmed (None: nothing)
    #: member index -> "ok" | "absent" | "wrong:<hex>"
    members: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AnchorReport:
    contract: bytes
    anchors: tuple[AnchorStatus, ...]
    #: Posts at upto_seqs the archive has no anchor for (beyond it, or never an anchor).
    stray: tuple[tuple[int, int | None, bytes], ...]   # (upto_seq, member index, digest)

    @property
    def ok(self) -> bool:
        """Every recomputed anchor is confirmed with the archive's digest."""
        return all(a.status == CONFIRMED for a in self.anchors)

    def wrong_posts(self) -> dict[int, list[int]]:
        """member index -> the upto_seqs where it posted a digest that is not the archive's."""
        out: dict[int, list[int]] = {}
        for a in self.anchors:
            for m, s in a.members.items():
                if s.startswith("wrong"):
                    out.setdefault(m, []).append(a.upto_seq)
        return out


def _members_of(params: Mapping[str, Any]) -> tuple[bytes, ...]:
    sink = params.get("anchor_sink", {})
    members = sink.get("members") if isinstance(sink, Mapping) else None
    if sink.get("kind") != "evm" or not members:
        raise AuditFailure("the committee's anchor sink is not evm: its config binds no EVM "
                           "addresses to members")
    return tuple(members)


async def check_anchors(archive: Path, rpc: JsonRpc, contract: bytes, *,
                        params: Mapping[str, Any] | None = None,
                        acl: AclConfig | None = None) -> AnchorReport:
    header = read_header(Path(archive))
    rules, rules_acl = _rules((header, header), params, acl)
    sink = rules.get("anchor_sink", {})
    if sink.get("contract") not in (None, contract):
        raise AuditFailure(f"the committee's config names contract "
                           f"{address_hex(sink['contract'])}, not {address_hex(contract)}")
    members = _members_of(rules)
    replay = _replay_file(archive, header.committee, rules, rules_acl)
    chain = AnchorContract(rpc, contract)
    if not await chain.has_code():
        raise AuditFailure(f"no contract code at {chain.address_hex}")
    index = {m: i for i, m in enumerate(members)}
    latest = hex_int(await rpc.call("eth_blockNumber"), "eth_blockNumber")
    posts: list[Post] = []
    start = 0
    while start <= latest and len(posts) < MAX_POSTS_READ:
        end = min(latest, start + LOG_PAGE_BLOCKS - 1)
        posts += await chain.posts(start, end)
        start = end + 1
    anchors = []
    recomputed = {a.upto_seq for a in replay.anchors}
    for a in replay.anchors:
        confirmed = await chain.confirmed(a.upto_seq, latest)
        status = (MISSING if confirmed == ZERO32 else
                  CONFIRMED if confirmed == a.digest else CONFLICTING)
        per: dict[int, str] = {}
        for i, m in enumerate(members):
            posted = await chain.posted(a.upto_seq, m, latest)
            per[i] = ("absent" if posted == ZERO32 else "ok" if posted == a.digest
                      else "wrong:" + posted.hex())
        anchors.append(AnchorStatus(a.upto_seq, a.digest, status,
                                    None if confirmed == ZERO32 else confirmed, per))
    stray = tuple((p.upto_seq, index.get(p.member), p.digest) for p in posts
                  if p.upto_seq not in recomputed)
    return AnchorReport(contract, tuple(anchors), stray)


def render(report: AnchorReport) -> str:
    counts = {s: sum(a.status == s for a in report.anchors)
              for s in (CONFIRMED, MISSING, CONFLICTING)}
    lines = [f"anchors on {address_hex(report.contract)}: {len(report.anchors)} recomputed from "
             f"the archive; {counts[CONFIRMED]} confirmed, {counts[MISSING]} missing, "
             f"{counts[CONFLICTING]} conflicting"]
    members = sorted({m for a in report.anchors for m in a.members})
    if members:
        lines.append("  posts per member: " + "; ".join(
            f"member {m}: " + ", ".join(
                f"{sum(a.members.get(m, '').startswith(k) for a in report.anchors)} {k}"
                for k in ("ok", "absent", "wrong")) for m in members))
    for a in report.anchors:
        if a.status != CONFIRMED or any(s != "ok" for s in a.members.values()):
            who = ", ".join(f"member {m}: {s}" for m, s in sorted(a.members.items()))
            chain = a.chain_digest.hex()[:16] if a.chain_digest else "-"
            lines.append(f"  upto_seq {a.upto_seq}: {a.status.upper()} (archive "
                         f"{a.digest.hex()[:16]}, chain {chain}); {who}")
    for m, seqs in sorted(report.wrong_posts().items()):
        lines.append(f"  member {m} posted digests that are not the archive's at upto_seq "
                     f"{', '.join(map(str, seqs))}")
    for upto, poster, digest in report.stray:
        lines.append(f"  post at upto_seq {upto} (no such anchor in the archive) by "
                     f"{'member ' + str(poster) if poster is not None else 'a non-member'}: "
                     f"{digest.hex()[:16]}")
    return "\n".join(lines)
