"""What a confluence member proposes and what it votes for (pure, over its replicas).

The member shell (`node/confluence.py`) keeps one verified replica per citizen and calls
these with them; the test harness and `coalitiond audit` call them with in-memory copies.

* `leader_commands` — the record commits the state has sealed and not committed (first, so
  consumers see them soon), then one `ingest` per citizen whose replica is ahead of the
  committed position, as far as one command holds.
* `vote_check` — a proposed `ingest` is rebuilt from this member's own replica (same start,
  end and height) and must be identical, byte for byte; a record commit must be exactly a
  record this member's state sealed. Anything this member cannot check yet refuses the vote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from ...commands.envelope import InvalidCommand
from ...commands.member import MemberCommand
from ...primitives.encoding import encode
from .component import Confluence, Key
from .records import INGEST_OP, CitizenView, build_ingest, parse_ingest

#: Record commits one proposal carries.
MAX_OUTPUTS_PER_PROPOSAL: Final = 16


def leader_commands(committee_id: bytes, component: Confluence,
                    views: Sequence[CitizenView | None],
                    ready: Callable[[Key], bool] | None = None) -> list[bytes]:
    """`ready(key)`: whether a sealed record may be proposed yet (the member shell waits
    until the others have most likely executed the block that sealed it; default: all)."""
    records = [r for r in component.pending.values()
               if ready is None or ready(component.key_of(r))]
    out = [MemberCommand.make(committee_id, component.OUTPUT_OP, record).raw
           for record in records[:MAX_OUTPUTS_PER_PROPOSAL]]
    for citizen, view in enumerate(views):
        if view is None:
            continue
        height, _, start = component.positions[citizen]
        ingest = build_ingest(view, citizen, component.KINDS, start, min_height=height)
        if ingest is not None and ingest.end > start:
            out.append(MemberCommand.make(committee_id, INGEST_OP, ingest.to_args()).raw)
    return out


def vote_check(component: Confluence, views: Sequence[CitizenView | None],
               command: MemberCommand) -> str | None:
    if command.op == component.OUTPUT_OP:
        return component.output_known(command.args)
    if command.op != INGEST_OP:
        return None
    try:
        claimed = parse_ingest(command.args, len(component.citizens), component.KINDS)
    except InvalidCommand as exc:
        return str(exc)
    view = views[claimed.citizen]
    rebuilt = None if view is None else build_ingest(
        view, claimed.citizen, component.KINDS, claimed.start, end=claimed.end,
        height=claimed.height)
    if rebuilt is None:
        return (f"ingest: citizen {claimed.citizen} entries {claimed.start}..{claimed.end} "
                f"up to block {claimed.height} are not verified here (yet)")
    if encode(rebuilt.to_args()) != encode(dict(command.args)):
        return (f"ingest: citizen {claimed.citizen} entries {claimed.start}..{claimed.end} "
                f"differ from this member's copy of the citizen's log")
    return None
