"""An exhaustive explicit-state model of the Simplex voting rules with the quorum dial.

This checks the *rules*, not the code (bft.md §3.2 item 6): a few honest members follow the
documented voting rules (docs/protocol.md), up to `f_s` Byzantine members sign anything, and
every interleaving of proposals, votes, certificate deliveries, view changes and timeouts is
explored breadth-first with state hashing. In every reachable state we check

* agreement: no two finalised blocks conflict (neither is an ancestor of the other);
* unique notarisation: no view has notarisation certificates for two different blocks (the
  lemma agreement rests on);
* no honest double-sign: no honest member signed two notarise or two finalise votes for one
  view, or both a nullify and a finalise for one view.

How the network is modelled (the one abstraction that keeps this small, and why it is sound):
as in the Tendermint TLA+ specification, every signed message goes into one global set the
moment it is signed and stays there; a member may act on any message in that set at any later
step, or never. Every honest rule is *monotone* in what a member has received: it is enabled by
the presence of a proposal or of q votes, never by the absence of a message (the one
"first valid proposal" rule is modelled by letting the member notarise any valid proposal it
could have received first). So "member i has received message m" never needs to be tracked:
any delivery order, delay, duplication or loss is one of the explored interleavings. A
certificate is modelled as q distinct signatures existing in the global set: certificates are
forwarded with the messages that rely on them, so a member can learn one as soon as it exists.

Byzantine members are not simulated step by step: a Byzantine member can sign any vote for any
digest at any time, so its signature is always available to complete a certificate, and a
Byzantine leader can propose any block (two variants per parent, to equivocate) whose parent
exists. This is the strongest adversary the rules face; it subsumes every scripted behaviour.

Abstracted away (see docs/verification.md): signatures are unforgeable (honest signatures
appear only through honest rules), block contents are opaque (a block is `(view, parent,
variant)`), timers are nondeterministic (a timeout may fire at any step), there is no crash or
restart (the durable signer guard makes a restarted member behave like one that never
stopped), a single epoch.

Deliberately broken rule sets (`MUTATIONS`) must each produce a counterexample: a checker
that cannot fail proves nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

NOTARIZE = 0
FINALIZE = 1
NULLIFY = 2
KIND_NAMES = ("notarize", "finalize", "nullify")

GENESIS = 0  # block id 0; view 0; counts as notarised and final
START = ("start", -1, -1)
NO_BLOCK = 0  # the digest slot of a nullify vote

#: Upper bound on explored states, so a mistake in a bound cannot eat the CI machine.
MAX_STATES = 5_000_000
#: How many variants a Byzantine leader proposes on top of one parent (two suffice to
#: equivocate; a third would only repeat the same conflict).
BYZANTINE_VARIANTS = 2

#: Rule changes that must break safety. Each names the honest rule it relaxes.
MUTATIONS: dict[str, str] = {
    "finalize-after-nullify":
        "an honest member may send a finalise vote for a view it nullified",
    "quorum-minus-one":
        "every certificate needs q - 1 signatures instead of q",
    "skip-nullification-check":
        "a proposal is valid without nullifications for the views between parent and block",
    "unnotarized-parent":
        "a proposal is valid when its parent has no notarisation certificate",
    "notarize-every-proposal":
        "an honest member notarises every valid proposal of its view, not only the first",
    "byzantine-beyond-bound":
        "f_s + 1 Byzantine members (rules intact): the dial's bound is tight",
}

#: Rule changes that must NOT break safety: the checker shows which clauses of
#: docs/protocol.md are load-bearing for safety and which exist for other reasons.
RELAXATIONS: dict[str, str] = {
    "notarize-after-nullify":
        "an honest member may notarise a proposal of a view it already nullified",
}


def default_fault_bound(n: int) -> int:
    """`ceil(n/2) - 1` (DESIGN §2.5): kept independent of coalitiond.primitives.committee on purpose,
    so the model re-derives the dial instead of trusting the code under test."""
    return (n + 1) // 2 - 1


def quorum_for(n: int, fault_bound: int) -> int:
    """`q = ceil((n + f_s + 1) / 2)`."""
    return -(-(n + fault_bound + 1) // 2)


@dataclass(frozen=True)
class ModelConfig:
    n: int = 4
    views: int = 3
    #: Byzantine member indices; None means the `f_s` members leading views 1, 2, ...
    byzantine: frozenset[int] | None = None
    fault_bound: int | None = None
    mutation: str | None = None

    @property
    def f_s(self) -> int:
        return default_fault_bound(self.n) if self.fault_bound is None else self.fault_bound

    @property
    def dial_quorum(self) -> int:
        return quorum_for(self.n, self.f_s)

    @property
    def quorum(self) -> int:
        """The quorum the modelled members actually use (the mutation may lower it)."""
        return self.dial_quorum - (1 if self.mutation == "quorum-minus-one" else 0)

    @property
    def byzantine_set(self) -> frozenset[int]:
        if self.byzantine is not None:
            return self.byzantine
        count = self.f_s + (1 if self.mutation == "byzantine-beyond-bound" else 0)
        return frozenset(v % self.n for v in range(1, count + 1))

    def leader(self, view: int) -> int:
        """Round-robin, as CommitteeSpec.leader: `view mod n`."""
        return view % self.n

    def describe(self) -> str:
        return (f"n={self.n} f_s={self.f_s} q={self.quorum} views=1..{self.views} "
                f"byzantine={sorted(self.byzantine_set)} mutation={self.mutation or 'none'}")


@dataclass
class Blocks:
    """Interns blocks `(view, parent, variant)` as small ints so states hash cheaply."""

    view: list[int] = field(default_factory=lambda: [0])
    parent: list[int] = field(default_factory=lambda: [-1])
    index: dict[tuple[int, int, int], int] = field(default_factory=dict)

    def get(self, view: int, parent: int, variant: int) -> int:
        key = (view, parent, variant)
        found = self.index.get(key)
        if found is None:
            found = len(self.view)
            self.index[key] = found
            self.view.append(view)
            self.parent.append(parent)
        return found

    def extends(self, child: int, ancestor: int) -> bool:
        while child > 0 and child != ancestor:
            child = self.parent[child]
        return child == ancestor

    def conflict(self, a: int, b: int) -> bool:
        return not (self.extends(a, b) or self.extends(b, a))

    def name(self, b: int) -> str:
        if b == GENESIS:
            return "genesis"
        var = next(k[2] for k, v in self.index.items() if v == b)
        return f"B{b}(view {self.view[b]}, parent {self.name(self.parent[b])}, v{var})"


# A state: (honest votes, honest proposals). A vote is (member, kind, view, block); a
# proposal is a block id. Members' views are derived from their votes (`successors`).
Vote = tuple[int, int, int, int]
State = tuple[frozenset[Vote], frozenset[int]]
#: A step's label, rendered only for counterexample traces: (what, member, block or view).
Label = tuple[str, int, int]
Step = tuple[Label, State]


@dataclass
class Violation:
    invariant: str
    detail: str
    trace: list[str]


@dataclass
class Result:
    config: ModelConfig
    states: int
    transitions: int
    max_depth: int
    seconds: float
    violation: Violation | None
    complete: bool

    def summary(self) -> str:
        verdict = ("SAFE" if self.violation is None else
                   f"VIOLATION of {self.violation.invariant}")
        return (f"[model] {self.config.describe()}: {self.states} states, "
                f"{self.transitions} transitions, depth {self.max_depth}, "
                f"{self.seconds:.1f}s, {'complete' if self.complete else 'TRUNCATED'}: {verdict}")


class Model:
    def __init__(self, config: ModelConfig, *, reduce: bool = True) -> None:
        if config.mutation is not None and config.mutation not in {**MUTATIONS, **RELAXATIONS}:
            raise ValueError(f"unknown mutation {config.mutation!r}")
        self.cfg = config
        self.q = config.quorum
        self.byz = config.byzantine_set
        self.nb = len(self.byz)
        if self.nb >= self.q:
            raise ValueError("Byzantine members alone would form a quorum; nothing to check")
        self.honest = tuple(i for i in range(config.n) if i not in self.byz)
        self.blocks = Blocks()
        #: Apply the two reductions of `successors` (free steps taken alone; no nullify of
        #: the last view). Off: the plain interleaving semantics, to cross-check them.
        self.reduce = reduce

    # --- certificates -------------------------------------------------------------------
    def tallies(self, votes: frozenset[Vote]) -> dict[tuple[int, int, int], int]:
        """Signatures available per (kind, view, block): honest votes plus every Byzantine
        member, who signs whatever completes a certificate."""
        count: dict[tuple[int, int, int], int] = {}
        for _, kind, view, block in votes:
            key = (kind, view, block)
            count[key] = count.get(key, self.nb) + 1
        return count

    def certified(self, tallies: dict[tuple[int, int, int], int]) -> set[tuple[int, int, int]]:
        return {key for key, c in tallies.items() if c >= self.q}

    # --- the honest rules ----------------------------------------------------------------
    def valid_proposal(self, block: int, certs: set[tuple[int, int, int]]) -> bool:
        """Parent rule: the parent is notarised (or genesis) and every view strictly between
        parent and block has a nullification certificate."""
        view = self.blocks.view[block]
        parent = self.blocks.parent[block]
        pview = self.blocks.view[parent]
        if pview >= view:
            return False
        mut = self.cfg.mutation
        if (parent != GENESIS and mut != "unnotarized-parent"
                and (NOTARIZE, pview, parent) not in certs):
            return False
        if mut == "skip-nullification-check":
            return True
        return all((NULLIFY, w, NO_BLOCK) in certs for w in range(pview + 1, view))

    def existing_blocks(self, proposals: frozenset[int], below: int) -> Iterator[int]:
        """Blocks some member could name as a parent for a block in view `below`."""
        yield GENESIS
        for b in sorted(proposals):
            if self.blocks.view[b] < below:
                yield b
        for w in range(1, below):
            if self.cfg.leader(w) in self.byz:
                yield from self.byzantine_blocks(proposals, w)

    def byzantine_blocks(self, proposals: frozenset[int], view: int) -> Iterator[int]:
        for parent in list(self.existing_blocks(proposals, view)):
            for variant in range(BYZANTINE_VARIANTS):
                yield self.blocks.get(view, parent, variant)

    def successors(self, state: State,
                   certs: set[tuple[int, int, int]] | None = None) -> list[Step]:
        """The steps explored from `state`: one *free* step if there is one, else all.

        A member's current view is not stored: it is the lowest view the member may still
        act in, `floor` = the highest view it proposed, notarised or nullified in, or one
        past the highest view it finalised (finalising view w means it saw w's notarisation
        and left w, protocol.md §3 rule 3). It may act in any view v >= floor that it can
        have entered: view 1, or a view whose predecessor has a certificate (rule 7). This
        is exactly the set of vote histories of members that hold an explicit view and
        advance on certificates, taken lazily (a member that moved to a view without voting
        there yet is indistinguishable from one still on its way), and it removes view
        bookkeeping from the state space.

        Reduction (sound for the invariants checked, all of which are upward closed: once a
        set of signed votes violates one, every superset does). Honest guards depend on
        other members' votes only positively (a certificate exists) and on the member's own
        votes negatively. So a step that can never disable any later step of its member is
        *free*: if a violation is reachable without it, the same steps remain possible after
        it and reach a superset, which also violates. When a free step is enabled it is the
        only successor explored (a persistent set of size one; the state graph is acyclic
        because every step adds a vote, so nothing is postponed forever). The free steps:
        the honest leader notarising its own proposal in its current view, and finalising a
        view the member has already left. Nullifying the last view in the bound enables
        nothing inside the bound and only disables the member's own steps, so it is not
        explored. `reduce=False` turns both off; the tests check that verdicts agree.
        """
        votes, proposals = state
        if certs is None:
            certs = self.certified(self.tallies(votes))
        entered = {1} | {w + 1 for (_, w, _) in certs}
        mut = self.cfg.mutation
        top = self.cfg.views
        steps: list[Step] = []
        for member in self.honest:
            mine = {(k, w): b for (m, k, w, b) in votes if m == member}
            floor = max([1, *(w + 1 if k == FINALIZE else w for (k, w) in mine),
                         *(self.blocks.view[b] for b in proposals
                           if self.cfg.leader(self.blocks.view[b]) == member)])
            for cur in range(floor, top + 1):
                if cur not in entered:
                    continue
                leader = self.cfg.leader(cur)
                nullified = (NULLIFY, cur) in mine
                # Rule 1, propose: the honest leader of a view, once, on a valid parent. Any
                # valid parent is the "highest one it knows" for some knowledge of the
                # certificates, so allowing every valid parent is exact, not a widening.
                if leader == member and not any(self.blocks.view[b] == cur for b in proposals):
                    for parent in list(self.existing_blocks(proposals, cur)):
                        block = self.blocks.get(cur, parent, 0)
                        if self.valid_proposal(block, certs):
                            steps.append((("proposes", member, block),
                                          (votes, proposals | {block})))
                # Rule 2, notarise the first valid proposal of the view unless nullified.
                may_notarize = (NOTARIZE, cur) not in mine or mut == "notarize-every-proposal"
                if nullified and mut != "notarize-after-nullify":
                    may_notarize = False
                if may_notarize:
                    if leader in self.byz:
                        candidates = list(self.byzantine_blocks(proposals, cur))
                    else:
                        candidates = [b for b in proposals if self.blocks.view[b] == cur]
                    for block in candidates:
                        vote = (member, NOTARIZE, cur, block)
                        if vote in votes or not self.valid_proposal(block, certs):
                            continue
                        step: Step = (("notarizes", member, block),
                                      (votes | {vote}, proposals))
                        # Free: its own proposal, in the view it is in (the only honest block
                        # of the view, and floor does not move).
                        if self.reduce and leader == member and cur == floor:
                            return [step]
                        steps.append(step)
                # Rule 5, timeout (may fire at any point): nullify the view. A nullification
                # of the last view enables nothing inside the bound and only disables this
                # member's own votes, so it can never lead to a violation: not explored.
                if not nullified and (cur < top or not self.reduce):
                    steps.append((("nullifies", member, cur),
                                  (votes | {(member, NULLIFY, cur, NO_BLOCK)}, proposals)))
            # Rule 3, finalise a notarised block unless this member nullified that view. The
            # model allows it for any notarised view at any later time (covering both the
            # current-view reading and a late or jumped-over notarisation).
            for kind, w, block in sorted(certs):
                if kind != NOTARIZE or (FINALIZE, w) in mine:
                    continue
                if (NULLIFY, w) in mine and mut != "finalize-after-nullify":
                    continue
                step = (("finalizes", member, block),
                        (votes | {(member, FINALIZE, w, block)}, proposals))
                # Free once the member has left w by other means: it no longer disables any
                # of its own steps (it could not nullify or vote in w any more).
                if self.reduce and w < floor:
                    return [step]
                steps.append(step)
        return steps

    # --- invariants ----------------------------------------------------------------------
    def check(self, state: State, double_sign: bool,
              certs: set[tuple[int, int, int]]) -> tuple[str, str] | None:
        votes, _ = state
        finalised = sorted(b for (k, _, b) in certs if k == FINALIZE)
        for i, a in enumerate(finalised):
            for b in finalised[i + 1:]:
                if self.blocks.conflict(a, b):
                    return ("agreement", f"conflicting finalised blocks {self.blocks.name(a)} "
                                         f"and {self.blocks.name(b)}")
        notarised: dict[int, int] = {}
        for k, w, b in sorted(certs):
            if k == NOTARIZE:
                if w in notarised and notarised[w] != b:
                    return ("unique-notarization",
                            f"view {w} notarised twice: {self.blocks.name(notarised[w])} and "
                            f"{self.blocks.name(b)}")
                notarised[w] = b
        if double_sign:
            seen: dict[tuple[int, int, int], int] = {}
            for m, k, w, b in sorted(votes):
                if (m, k, w) in seen and k != NULLIFY:
                    return ("no-honest-double-sign",
                            f"member {m} signed two {KIND_NAMES[k]} votes in view {w}")
                seen[(m, k, w)] = b
                if k == FINALIZE and (m, NULLIFY, w) in seen:
                    return ("no-honest-double-sign",
                            f"member {m} signed nullify and finalize in view {w}")
        return None

    # --- search --------------------------------------------------------------------------
    def explore(self, max_states: int = MAX_STATES, *, double_sign: bool = True,
                invariants: frozenset[str] | None = None) -> Result:
        """Breadth-first over every reachable state; stops at the first violation of an
        invariant in `invariants` (all by default) and returns its shortest trace."""
        start = time.perf_counter()
        init: State = (frozenset(), frozenset())
        parent: dict[State, tuple[State | None, Label, int]] = {init: (None, START, 0)}
        queue: deque[State] = deque([init])
        transitions = 0
        max_depth = 0
        violation: Violation | None = None
        while queue:
            state = queue.popleft()
            depth = parent[state][2]
            max_depth = max(max_depth, depth)
            certs = self.certified(self.tallies(state[0]))
            found = self.check(state, double_sign, certs)
            if found is not None and (invariants is None or found[0] in invariants):
                violation = Violation(found[0], found[1], self.trace(parent, state))
                break
            for label, nxt in self.successors(state, certs):
                transitions += 1
                if nxt not in parent:
                    if len(parent) >= max_states:
                        return Result(self.cfg, len(parent), transitions, max_depth,
                                      time.perf_counter() - start, None, complete=False)
                    parent[nxt] = (state, label, depth + 1)
                    queue.append(nxt)
        return Result(self.cfg, len(parent), transitions, max_depth,
                      time.perf_counter() - start, violation, complete=True)

    def trace(self, parent: dict[State, tuple[State | None, Label, int]],
              state: State) -> list[str]:
        steps: list[str] = []
        cur: State | None = state
        while cur is not None:
            prev, label, _ = parent[cur]
            steps.append(self.render(label))
            cur = prev
        return steps[::-1]

    def render(self, label: Label) -> str:
        what, member, x = label
        if what == "start":
            return "start"
        if what == "nullifies":
            return f"member {member} times out and nullifies view {x}"
        if what == "finalizes":
            return (f"member {member} sees view {self.blocks.view[x]} notarised and finalizes "
                    f"{self.blocks.name(x)}")
        return f"member {member} {what} {self.blocks.name(x)}"


def main(argv: list[str]) -> int:
    """`python tests/model_simplex.py [VIEWS]`: the correct rules for every placement of one
    Byzantine member, then every mutation (agreement only), with state counts and traces."""
    views = int(argv[0]) if argv else int(os.environ.get("COALITIOND_MODEL_BOUND", "2"))
    results = [Model(ModelConfig(views=views, byzantine=frozenset({b}))).explore()
               for b in range(4)]
    results += [Model(ModelConfig(views=views, mutation=m)).explore(
        double_sign=False, invariants=frozenset({"agreement"})) for m in MUTATIONS]
    results += [Model(ModelConfig(views=views, mutation=m)).explore() for m in RELAXATIONS]
    for result in results:
        print(result.summary())
        if result.violation is not None:
            for step in result.violation.trace:
                print("    ", step)
            print("    =>", result.violation.detail)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
