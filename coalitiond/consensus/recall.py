"""The start-up recall: before signing anything, ask the peers what they saw this member sign
(docs/protocol.md §8, "Amnesia").

A member restarted from a wiped data directory has no signer guard; one restored from a
backup has an old one. Either may have signed statements its guard does not hold, and the
peers have seen them. So on every start the core broadcasts a `RecallRequest`, signs
nothing until `q − 1` distinct peers answered or its recall timer fired, and then never
signs at or below the highest view of any statement a peer returned with a valid signature
of this member's key.

Both sides are bounded: the asking side keeps one integer and the set of peers that
answered (at most n − 1); the answering side answers each peer at most once per view it is
in (one integer per member) with at most MAX_RECALL_STATEMENTS statements it already holds.
Pure bookkeeping: the core (voter.py) calls it and emits the messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .evidence import Statement
from .limits import MAX_RECALL_STATEMENTS
from .messages import RecallAnswer, RecalledStatement
from .statements import SignedKind


@dataclass(slots=True)
class Recall:
    """The asking side: open from construction until `needed` peers answered or the timer
    fired; `through` is the highest view a peer showed us our own signature for."""

    needed: int
    open: bool = True
    through: int = 0
    answered: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.needed <= 0:
            self.open = False  # a committee of one has no one to ask

    def take(self, me: int, n: int, sender: int | None, answer: RecallAnswer,
             guard: Mapping[tuple[int, SignedKind], bytes]) -> str | None:
        """Count a (signature-checked) answer; the reason it is refused, or None.

        Only a statement our durable `guard` does not already hold raises `through`: one the
        guard holds shows nothing is missing (the guard is written in signing order, before
        each statement is sent), and the guard's own rules already keep us from signing over
        it. Raising the horizon for it would forbid the nullify vote that ends a view we
        voted in before a restart; after a whole-committee restart every member may be in
        that view, and none could ever end it (docs/protocol.md §8).

        Refused: an answer while no recall is open (a peer could otherwise replay our own
        current-view vote at us and make us abstain in a view we are voting in), from an
        unknown sender or ourselves, a second one from the same peer, or one about another
        member's statements."""
        if not self.open:
            return "recall answer while no recall is open"
        if sender is None or not 0 <= sender < n or sender == me:
            return f"recall answer from {sender}: not a peer"
        if answer.member != me:
            return (f"recall answer from member {sender} about member {answer.member}'s "
                    f"statements, we are {me}")
        if sender in self.answered:
            return f"second recall answer from member {sender}"
        self.answered.add(sender)
        for st in answer.statements:
            if guard.get((st.view, st.kind)) != st.digest:
                self.through = max(self.through, st.view)
        if len(self.answered) >= self.needed:
            self.open = False
        return None

    def close(self) -> None:
        """The recall timer fired: go on with the answers we have."""
        self.open = False


def own_statements(seen: Mapping[tuple[int, int], Mapping[SignedKind, Statement]],
                   member: int) -> tuple[RecalledStatement, ...]:
    """The answering side: `member`'s newest first-seen statement of each kind among those
    this member holds (`seen`: first statement per (view, member) and kind), at most
    MAX_RECALL_STATEMENTS, in kind order."""
    newest: dict[SignedKind, RecalledStatement] = {}
    for view, who in sorted(seen, reverse=True):
        if who != member:
            continue
        for kind, st in sorted(seen[(view, who)].items()):
            if kind not in newest:
                newest[kind] = RecalledStatement(kind, view, st.digest, st.signature)
        if len(newest) == len(SignedKind):
            break
    return tuple(newest[k] for k in sorted(newest))[:MAX_RECALL_STATEMENTS]


def should_answer(answered: dict[int, int], requester: int, view: int) -> bool:
    """At most one answer per requester and view of ours: a peer asking again and again
    costs us one small message per view, never more. Records the answer."""
    if answered.get(requester) == view:
        return False
    answered[requester] = view
    return True
