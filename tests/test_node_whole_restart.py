"""A committee whose members all stopped in a view they voted in, and restarted on their own
data, ends that view and finalises again (docs/protocol.md §8: only a recalled statement the
durable guard lacks raises the start-up recall's horizon)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from node_harness import all_reach, in_process, write_committee
from test_confluence_node import publish_all

from coalitiond.consensus.statements import SignedKind
from coalitiond.node.member import Member


async def wait_for_core(m: Member, predicate: Callable[[Member], bool]) -> None:
    """Event-driven: re-check `predicate` after every step of `m`'s consensus core."""
    assert m.core is not None
    core, done = m.core, trio.Event()
    step = core.step

    def watched(event: Any) -> Any:
        out = step(event)
        if predicate(m):
            done.set()
        return out

    core.step = watched  # type: ignore[method-assign]
    if not predicate(m):
        await done.wait()


def signed_in_view(kind: SignedKind) -> Callable[[Member], bool]:
    def check(m: Member) -> bool:
        core = m.core
        return core is not None and (core.view, kind) in core._guard
    return check


def notarised_only(m: Member) -> bool:
    return signed_in_view(SignedKind.NOTARIZE)(m) and not signed_in_view(SignedKind.NULLIFY)(m)


async def test_a_committee_stopped_whole_in_a_view_it_voted_in_finalises_after_restart(
        tmp_path: Path) -> None:
    # q = n = 3; the view timer (the survivors' nullify) is long enough that they are
    # stopped first, the leader timer short enough that the first back nullifies.
    c = write_committee(tmp_path, 3)
    for path in c.configs:
        text = path.read_text()
        assert "\nview_timeout_ms = 2000\n" in text
        path.write_text(text.replace("\nview_timeout_ms = 2000\n", "\nview_timeout_ms = 4000\n"))
    with trio.fail_after(60):
        async with in_process(c) as running:
            await publish_all(c, [("k", 1)])
            await all_reach(running.members(), 1)
            core = running.members()[0].core
            assert core is not None
            # Stop a member that does not lead the next view: the other two notarise its
            # proposal, which cannot be certified without the third.
            gone = (core.committee.leader(core.view + 1) + 1) % 3
            await running.stop(gone)
            for m in running.members():
                await wait_for_core(m, notarised_only)
            stuck = [m.core.view for m in running.members() if m.core is not None]
            for i in list(running.running):
                await running.stop(i)
            # The stopped one comes back first, alone: its recall gets no answer, its
            # leader timer fires in a view with no proposal, and it nullifies it.
            first = await running.start(gone)
            await wait_for_core(first, signed_in_view(SignedKind.NULLIFY))
            for i in range(3):
                if i != gone:
                    await running.start(i)
            # The two that notarised are told their own vote back by the recall; it is in
            # their guard, so they still nullify the view on their view timer.
            await publish_all(c, [("k", 2)])
            assert all(m.core is not None and m.core.view > min(stuck)
                       for m in running.members())
