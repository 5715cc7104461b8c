"""A real member process that misbehaves: the Byzantine catalogue on the daemon (test only).

    python -m coalitiond.testing.byzantine_member --behaviour bad-root --config member-1.toml

runs `coalitiond run` with one change: the member's consensus core is wrapped by a catalogue
behaviour (`byzantine.CATALOGUE`), exactly as in the simulator, so the attack is "an honest
member that also does X" with real sockets, a real store and real signatures. `RawSend`
actions (garbage, replayed or foreign frames) go out on the member's links as they are.
`coalitiond devnet --byzantine I=NAME` starts member I this way.

Refused for any configuration that is not a development one: the member's attestation mode
must be "none" (no TDX gate), which production committees never use (docs/attestation.md).
Nothing in the daemon imports this module (the import contract in pyproject.toml).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from ..config import MemberConfig, load_config
from ..consensus.events import Action, Event
from ..consensus.voter import Core
from ..node import member as member_module
from ..node.voter import Voter
from ..primitives.errors import LocalError, OperatorError
from ..primitives.keys import load_key_file
from ..primitives.logs import configure
from ..transport.router import Channel
from .byzantine import CATALOGUE, Behaviour, RawSend


class _BehavingCore:
    """The core as the voter sees it: `step` goes through the behaviour; everything else
    (view, status, discard_pending, ...) is the honest core's."""

    def __init__(self, core: Core, behaviour: Behaviour) -> None:
        self._core = core
        self._behaviour = behaviour

    def step(self, event: Event) -> list[Any]:
        return self._behaviour.step(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


def behave(voter: Voter, behaviour: str, seed: int = 0) -> Behaviour:
    """Make a running member's voter misbehave as `behaviour` from its next step on: its
    core's steps go through the behaviour, and the behaviour's raw frames go out on the
    member's links."""
    if behaviour not in CATALOGUE:
        raise OperatorError(f"unknown behaviour {behaviour!r}; the catalogue has "
                            f"{', '.join(sorted(CATALOGUE))}")
    core = voter.core
    wrapped = CATALOGUE[behaviour](core, random.Random(f"{seed}:byzantine:{voter.me}"))
    voter.core = _BehavingCore(core, wrapped)  # type: ignore[assignment]
    honest_execute = voter._execute

    async def execute(actions: Sequence[Action]) -> list[Event]:
        rest: list[Action] = []
        for action in actions:
            if not isinstance(action, RawSend):
                rest.append(action)
                continue
            try:
                if action.to is None:
                    voter.router.broadcast_nowait(Channel.CONSENSUS, action.data)
                elif action.to != voter.me:
                    voter.router.send_nowait(Channel.CONSENSUS,
                                             voter.committee.members[action.to], action.data)
            except LocalError:
                # Our own router will not frame it (an oversize payload): the receivers'
                # limits are the transport tests' (tests/test_transport_*.py), not this one's.
                continue
        return await honest_execute(rest)

    voter._execute = execute  # type: ignore[method-assign]
    return wrapped


def check_development(config: MemberConfig) -> None:
    if config.attestation.mode != "none":
        raise OperatorError(f"{config.path}: a Byzantine test member runs only in a development "
                            f"committee (attestation mode \"none\"), this one is "
                            f"{config.attestation.mode!r}")


def install(behaviour: str, seed: int) -> None:
    """Every member this process builds from now on misbehaves as `behaviour` (for `main`,
    which runs one member per process)."""
    honest = member_module.Voter  # type: ignore[attr-defined]

    def build(*args: Any, **kwargs: Any) -> Voter:
        voter = honest(*args, **kwargs)
        behave(voter, behaviour, seed)
        return voter

    member_module.Voter = build  # type: ignore[attr-defined,assignment]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coalitiond.testing.byzantine_member",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--behaviour", required=True, choices=sorted(CATALOGUE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    from ..ops.daemon import run_member

    try:
        config = load_config(args.config)
        check_development(config)
    except OperatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    configure(config.node.log_format, config.node.log_level)  # type: ignore[arg-type]
    install(args.behaviour, args.seed)
    print(f"BYZANTINE TEST MEMBER: behaviour {args.behaviour}, seed {args.seed}",
          file=sys.stderr, flush=True)
    trio.run(lambda: run_member(config, load_key_file(config.node.key_file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
