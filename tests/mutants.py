"""Mutation testing of the consensus rules: `make mutants` (docs/verification.md §3).

Each mutation below breaks one safety rule of the real code, in this process only (the
function or method is replaced by a patched copy; nothing on disk changes), then the default
simulator campaign (`DEFAULT_CAMPAIGN`: the runs `make test` makes in tests/test_sim_campaigns.py
and tests/test_twins.py within the safety bound) is run against it until one run fails. A
mutant is *killed* when a run fails, *survived* when the whole campaign passes. The table
names the run and seed that killed each one, and how to replay it with the mutation applied
(`python tests/mutants.py --mutant NAME --only 'RUN seed=S'`). Exit status 1 if any mutant
survived (or a mutation no longer applies to the code: its text changed).

    python tests/mutants.py                 # every mutant, one worker per core
    python tests/mutants.py --mutant quorum-off-by-one --jobs 1
    python tests/mutants.py --list          # what each mutation replaces

Mutations that a second layer makes harmless on its own (equivalent mutants) are defined to
remove the rule from every layer that states it; `replaces` says which. See
docs/verification.md §3 for the list of such layers.
"""

from __future__ import annotations

import argparse
import inspect
import multiprocessing
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_sim_campaigns
import twins

from coalitiond.consensus import catchup, messages, rules, types, voter
from coalitiond.primitives import committee
from coalitiond.testing.simulator import run


class MutationDoesNotApply(Exception):
    """The text a mutation replaces is not (exactly once) in the code any more."""


class Patcher:
    """Replaces module and class attributes; `undo` puts them back."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        self._undo.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, value)

    def everywhere(self, owner: Any, name: str, value: Any) -> None:
        """Replace `owner.name`, and every module-level binding of the same object (names
        imported with `from x import name`)."""
        original = getattr(owner, name)
        self.set(owner, name, value)
        for module in list(sys.modules.values()):
            if module is owner or not getattr(module, "__name__", "").startswith(
                    ("coalitiond", "test_", "twins")):
                continue
            for attr, bound in list(vars(module).items()):
                if bound is original:
                    self.set(module, attr, value)

    def source(self, owner: Any, name: str, old: str, new: str) -> None:
        """Replace `owner.name` (a function or method) by a copy of its source with `old`
        replaced by `new`, compiled in the original's globals."""
        func = owner.__dict__[name]
        src = textwrap.dedent(inspect.getsource(func))
        old, new = textwrap.dedent(old).strip("\n"), textwrap.dedent(new).strip("\n")
        src_lines = src.splitlines()
        # Match `old` at any indentation: find the first line, then compare the block.
        first = old.splitlines()[0].strip()
        hits = [i for i, line in enumerate(src_lines) if line.strip() == first]
        found = []
        for i in hits:
            indent = src_lines[i][: len(src_lines[i]) - len(src_lines[i].lstrip())]
            block = textwrap.indent(old, indent)
            if "\n".join(src_lines[i: i + len(old.splitlines())]) == block:
                found.append((i, indent))
        if len(found) != 1:
            raise MutationDoesNotApply(f"{owner.__name__}.{name}: the text to replace occurs "
                                       f"{len(found)} times:\n{old}")
        i, indent = found[0]
        replacement = textwrap.indent(new, indent).splitlines() if new else []
        src_lines[i: i + len(old.splitlines())] = replacement
        namespace: dict[str, Any] = {}
        exec(compile("\n".join(src_lines), f"<mutant {name}>", "exec"),
             func.__globals__, namespace)
        self.set(owner, name, namespace[name])

    def undo(self) -> None:
        while self._undo:
            owner, name, value = self._undo.pop()
            setattr(owner, name, value)


@dataclass(frozen=True)
class Mutation:
    name: str
    replaces: str
    apply: Callable[[Patcher], None]


def _skipped_views(p: Patcher) -> None:
    p.set(rules, "skipped_views_nullified", lambda parent_view, view, views: True)


def _unnotarised_parent(p: Patcher) -> None:
    p.source(rules, "check_proposal", """
        ps = views.get(found.view)
        if ps is None or ps.notarization is None or ps.notarization.digest != found.digest:
            return Verdict.WAIT
        parent = found
        """, """
        parent = found
        """)


def _quorum_off_by_one(p: Patcher) -> None:
    quorum_size = committee.quorum_size
    p.everywhere(committee, "quorum_size", lambda n, fault_bound: quorum_size(n, fault_bound) - 1)


def _guard_lost_on_restart(p: Patcher) -> None:
    init = voter.Core.__init__

    def restarted(self: voter.Core, committee: Any, key: Any, config: Any,
                  durable: Any = None, *args: Any, **kwargs: Any) -> None:
        init(self, committee, key, config, durable, *args, **kwargs)
        self._mutant_restarted = durable is not None and bool(durable.guard)  # type: ignore[attr-defined]

    p.set(voter.Core, "__init__", restarted)
    # The start-up recall is the guard's other half after a restart (docs/protocol.md §8):
    # never sign at or below a view peers showed us our own signature for. Kept alone, it
    # makes the bypass harmless unless the last statements never left, as in the
    # torn-proposal-restart scenario, which kills the durable bypass alone too.
    p.set(rules, "recall_allows", lambda recall_open, recalled_through, view: not recall_open)
    p.source(voter.Core, "_sign_guarded", """
        if not self._may_sign(view) or \\
                not rules.guard_allows(self._guard, self.view, view, kind, digest):
            return False
        """, """
        if not self._may_sign(view) or (not self._mutant_restarted and \\
                not rules.guard_allows(self._guard, self.view, view, kind, digest)):
            return False
        """)


def _finalize_after_nullify(p: Patcher) -> None:
    p.set(rules, "may_finalize_vote", lambda guard, view: True)
    p.set(rules, "conflicts", lambda kind_a, digest_a, kind_b, digest_b:
          kind_a is kind_b and digest_a != digest_b)


def _fetched_without_certificate(p: Patcher) -> None:
    p.everywhere(messages, "verify_fetched", lambda committee, chain: None)


def _duplicate_signer(p: Patcher) -> None:
    p.source(types.Certificate, "check_signers", """
        if list(indices) != sorted(set(indices)):
        """, """
        if list(indices) != sorted(indices):
        """)


def _other_epoch_vote(p: Patcher) -> None:
    p.source(rules, "statement_refusal", """
        if epoch != committee.epoch:
            return f"{what} for epoch {epoch}, we are at {committee.epoch}"
        """, "")
    p.set(messages, "_check_epoch", lambda committee, epoch, what: None)
    p.source(types.Vote, "verify", """
        if self.epoch != committee.epoch or not 0 <= self.signer < committee.n:
        """, """
        if not 0 <= self.signer < committee.n:
        """)


def _roots_unchecked(p: Patcher) -> None:
    p.set(rules, "check_roots", lambda claimed, parent, mine, executed: rules.Verdict.VALID)


def _fetched_not_linked(p: Patcher) -> None:
    p.set(catchup, "fetched_refusal", lambda block, tip: None)


MUTATIONS: dict[str, Mutation] = {m.name: m for m in [
    Mutation("skipped-view-nullification",
             "rules.skipped_views_nullified → always True (§3.2: views between parent and "
             "proposal need not be nullified)", _skipped_views),
    Mutation("unnotarised-parent",
             "rules.check_proposal without `if ps is None or ps.notarization is None or "
             "ps.notarization.digest != found.digest: return WAIT` (§3.2: any known block is a "
             "parent)", _unnotarised_parent),
    Mutation("quorum-off-by-one",
             "primitives.committee.quorum_size → q − 1, in every module that imported it "
             "(certificates formed and accepted with q − 1 signatures)", _quorum_off_by_one),
    Mutation("guard-lost-on-restart",
             "voter.Core._sign_guarded skips rules.guard_allows in a core restarted with "
             "guard records, and rules.recall_allows without its `view > recalled_through` "
             "(the durable and the recalled guard both bypassed after a restart; the recall's "
             "alone is an equivalent mutant, the durable guard refuses)", _guard_lost_on_restart),
    Mutation("finalize-after-nullify",
             "rules.may_finalize_vote → True and rules.conflicts (the guard's) without the "
             "nullify/finalise pair (may_finalize_vote alone is an equivalent mutant: the "
             "guard refuses)",
             _finalize_after_nullify),
    Mutation("fetched-without-certificate",
             "messages.verify_fetched → accept (the resolver's and the simulator's check of "
             "fetched chains)", _fetched_without_certificate),
    Mutation("duplicate-signer",
             "types.Certificate.check_signers: `!= sorted(set(indices))` → `!= sorted(indices)` "
             "(a repeated signer counts towards q)", _duplicate_signer),
    Mutation("other-epoch-vote",
             "rules.statement_refusal without its epoch clause, messages._check_epoch → "
             "accept, types.Vote.verify without its epoch clause (each alone is an "
             "equivalent mutant: the others refuse)",
             _other_epoch_vote),
    Mutation("roots-unchecked",
             "rules.check_roots → VALID (§7: a proposal's certified roots are notarised "
             "without being checked)", _roots_unchecked),
    Mutation("fetched-not-linked",
             "catchup.fetched_refusal → None (a fetched block need not extend the tip)",
             _fetched_not_linked),
]}


# ---- the default campaign --------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    label: str  # campaign and seed, e.g. "catalogue[fork-seeker] seed=2"
    seed: int
    go: Callable[[], object]


def default_campaign() -> list[Run]:
    """The runs of `make test`'s simulator campaigns that promise safety and liveness, in
    file order: tests/test_sim_campaigns.py (`CAMPAIGNS`), then tests/test_twins.py within
    the bound (the sampled scenarios, then the exhaustive n = 4 enumeration)."""
    runs: list[Run] = []
    for name, make, seeds in test_sim_campaigns.default_campaigns():
        for seed in seeds:
            runs.append(Run(f"{name} seed={seed}", seed,
                            lambda make=make, seed=seed: run(make(seed))))
    from test_twins import DEFAULT_SEEDS, EXHAUSTIVE_TWINS, EXHAUSTIVE_VIEWS
    for n in (4, 5, 7):
        for seed in range(DEFAULT_SEEDS):
            runs.append(Run(f"twins-within-n{n} seed={seed}", seed,
                            lambda n=n, seed=seed: twins.run_scenario(
                                twins.sample_scenario(seed, n, False))))
    for twin in EXHAUSTIVE_TWINS:
        for i, scenario in enumerate(twins.enumerate_scenarios(4, (twin,), EXHAUSTIVE_VIEWS)):
            runs.append(Run(f"twins-exhaustive-n4[twin {twin} split {i}] seed={scenario.seed}",
                            scenario.seed, lambda scenario=scenario: twins.run_scenario(scenario)))
    return runs


@dataclass
class Verdict:
    mutation: str
    killed: bool
    runs: int
    seconds: float
    by: str = ""
    reason: str = ""
    kills: int = 0  # failed runs (with --all: over the whole campaign)


def attack(name: str, only: str | None = None, every_run: bool = False) -> Verdict:
    """Apply mutation `name`, run the campaign until a run fails (`every_run`: all of it,
    counting the runs that fail), undo."""
    start = time.perf_counter()
    patcher = Patcher()
    try:
        MUTATIONS[name].apply(patcher)
    except MutationDoesNotApply as exc:
        return Verdict(name, False, 0, 0.0, "", f"DOES NOT APPLY: {exc}")
    count = 0
    first: Verdict | None = None
    try:
        for r in default_campaign():
            if only is not None and r.label != only and not r.label.startswith(only + " "):
                continue
            count += 1
            try:
                r.go()
            except Exception as exc:  # any failure of a run kills the mutant
                line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if not isinstance(exc, AssertionError):
                    where = traceback.extract_tb(exc.__traceback__)[-1]
                    line = f"{type(exc).__name__} at {where.name}: {line}"
                if first is None:
                    first = Verdict(name, True, count, 0.0, r.label, line[:160])
                first.kills += 1
                if not every_run:
                    break
        if first is None:
            return Verdict(name, False, count, time.perf_counter() - start)
        first.runs, first.seconds = count, time.perf_counter() - start
        return first
    finally:
        patcher.undo()


def _attack_star(args: tuple[str, str | None, bool]) -> Verdict:
    return attack(*args)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutant", action="append", choices=sorted(MUTATIONS),
                    help="run only this mutation (repeatable)")
    ap.add_argument("--skip", action="append", default=[], choices=sorted(MUTATIONS),
                    help="leave this mutation out (repeatable; CI skips a known survivor)")
    ap.add_argument("--only", help="run only this campaign run ('swarm seed=3') or campaign "
                                   "('swarm')")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--all", action="store_true",
                    help="run the whole campaign against each mutant and count the runs that "
                         "kill it (how robust each kill is)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTATIONS.values():
            print(f"{m.name:28} {m.replaces}")
        return 0
    names = [n for n in args.mutant or list(MUTATIONS) if n not in args.skip]
    start = time.perf_counter()
    jobs = [(n, args.only, args.all) for n in names]
    if args.jobs > 1 and len(names) > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(args.jobs, len(names))) as pool:
            verdicts = pool.map(_attack_star, jobs, chunksize=1)
    else:
        verdicts = [_attack_star(j) for j in jobs]
    width = max(len(n) for n in names)
    print(f"{'mutant':{width}}  verdict   runs  kills  seconds  killed first by")
    for v in verdicts:
        verdict = "KILLED" if v.killed else "SURVIVED"
        print(f"{v.mutation:{width}}  {verdict:8} {v.runs:5} {v.kills:6} {v.seconds:8.1f}  "
              f"{v.by}")
        if v.reason:
            print(f"{'':{width}}    {v.reason}")
        if v.killed:
            print(f"{'':{width}}    replay: python tests/mutants.py --mutant {v.mutation} "
                  f"--only '{v.by}'")
    survivors = [v.mutation for v in verdicts if not v.killed]
    print(f"{len(verdicts) - len(survivors)}/{len(verdicts)} mutants killed in "
          f"{time.perf_counter() - start:.0f}s" + (f"; SURVIVED: {', '.join(survivors)}"
                                                   if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
