"""What the devnet submits, per component kind, and what its progress line shows.

A workload turns a round number into signed envelopes (each with the key the component
requires: a feed's publisher, a citizen's operator, a compute provider or requester) and
summarises a member's `status` into the few numbers worth watching for that component.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ..commands.client import EnvelopeSigner, publish
from ..commands.envelope import Command
from ..primitives.crypto import SigningKey
from ..primitives.identity import make_id
from ..primitives.keys import load_key_file

#: Stand-in citizens the devnet's atlas catalogues (names; ids are `make_id(name)`).
DEVNET_CITIZENS: Final = ("devnet-citizen-0", "devnet-citizen-1")
#: Compute providers the devnet registers (their keys: DIR/provider-<j>.key).
DEVNET_PROVIDERS: Final = 3

#: `head` fields shown on the progress line, per component kind, in this order.
_SHOWN: Final[Mapping[str, tuple[str, ...]]] = {
    "feed": ("count",),
    "almanac": ("seq", "count"),
    "atlas": ("count", "changes"),
    "chronicle": ("count", "anchors", "latest_anchor_seq"),
    "compute": ("providers", "open_requests", "live_grants", "next_grant_seq"),
    "tickets": ("count", "revoked"),
    "intents": ("committed", "pending", "open", "duplicates", "late"),
    "ledger": ("committed", "pending", "open", "submissions", "duplicates", "late"),
}


#: Envelopes per second by default: a compute committee's three demo providers have room for
#: about two requests a second (each lasts five ticks).
DEFAULT_RATES: Final[Mapping[str, float]] = {"compute": 2.0}
DEFAULT_RATE: Final = 100.0


def provider_key_paths(dir: Path) -> list[Path]:
    return [dir / f"provider-{j}.key" for j in range(DEVNET_PROVIDERS)]


class Workload:
    """Envelopes for one round of a component's demo load."""

    def __init__(self, kind: str, dir: Path, operator: SigningKey, committee_id: bytes) -> None:
        self.kind = kind
        self.operator = operator
        self.committee_id = committee_id
        self._signers: dict[bytes, EnvelopeSigner] = {}
        self.providers = ([load_key_file(p) for p in provider_key_paths(dir)]
                          if kind == "compute" else [])

    @property
    def submits(self) -> bool:
        """Almanac ticks come by themselves; everything else needs clients."""
        return self.kind != "almanac"

    def _signer(self, key: SigningKey) -> EnvelopeSigner:
        signer = self._signers.get(key.public)
        if signer is None:
            # Nonces from the clock: a re-run devnet never reuses one (see client_commands).
            signer = EnvelopeSigner(key, self.committee_id, time.time_ns() // 1000)
            self._signers[key.public] = signer
        return signer

    def round(self, n: int, commands_per_envelope: int) -> list[tuple[bytes, int]]:
        """Signed envelopes for round `n`, each with the number of commands it carries."""
        batches = self._commands(n, commands_per_envelope)
        return [(self._signer(key).sign(commands).raw, len(commands))
                for key, commands in batches if commands]

    def _commands(self, n: int, k: int) -> list[tuple[SigningKey, list[Command]]]:
        if self.kind == "feed":
            return [(self.operator, [publish("devnet", {"n": n, "i": j}) for j in range(k)])]
        if self.kind == "atlas":
            from ..components.atlas.component import demo_commands as atlas_demo

            ids = [make_id(name) for name in DEVNET_CITIZENS]
            return list(atlas_demo([self.operator] * len(ids), ids, n))
        if self.kind == "chronicle":
            from ..components.chronicle.component import demo_commands as chronicle_demo

            return [(self.operator, list(chronicle_demo(n)))]
        if self.kind == "compute":
            from ..components.compute.component import demo_commands as compute_demo

            return list(compute_demo(self.providers, self.operator, n))
        return []


def summarise(kind: str, status: Mapping[str, Any]) -> str:
    """The component's part of a progress line, from a member's status map."""
    head = status.get("component_head")
    if not isinstance(head, Mapping):
        return ""
    parts = [f"{key}={head[key]}" for key in _SHOWN.get(kind, ())
             if isinstance(head.get(key), int) and not isinstance(head.get(key), bool)]
    stamp = status.get("stamp")
    if isinstance(stamp, Mapping) and isinstance(stamp.get("seq"), int):
        parts.append(f"tick={stamp['seq']}")
    return " ".join(parts)


def client_keys(kind: str, operator: SigningKey, providers: Sequence[SigningKey]
                ) -> list[bytes]:
    """The committee ACL's client keys for a devnet of `kind`."""
    return [operator.public, *(p.public for p in providers)] if kind == "compute" \
        else [operator.public]


#: Confluence devnets: the citizen feed committees they span, and how the load names slots.
CONFLUENCE_KINDS: Final = ("intents", "ledger")
CONFLUENCE_CITIZENS: Final = 3
#: Rounds (per citizen) per slot: a citizen passes slot s once it published its round
#: (s + 1) * ROUNDS_PER_SLOT.
ROUNDS_PER_SLOT: Final = 20
#: Recipients the ledger load pays (20-byte addresses).
DEVNET_RECIPIENTS: Final = 4


class CitizenLoad:
    """What citizen `k`'s feed publishes in a confluence devnet: intents targeting the
    citizens (intents) or refunds to a few recipients, every fifth one also published by
    the next citizen so deduplication shows (ledger); and a `slot` marker each time the
    citizen moves to the next slot."""

    def __init__(self, kind: str, k: int, operator: SigningKey, committee_id: bytes,
                 run_id: int) -> None:
        self.kind = kind
        self.k = k
        self.signer = EnvelopeSigner(operator, committee_id, time.time_ns() // 1000)
        self.run_id = run_id  # a re-run devnet never reuses an intent/submission id

    def round(self, n: int) -> list[bytes]:
        slot = n // ROUNDS_PER_SLOT
        commands: list[Command] = []
        if n and n % ROUNDS_PER_SLOT == 0:
            commands.append(publish("slot", {"slot": slot - 1}))
        if self.kind == "intents":
            target = make_id(f"devnet-citizen{n % CONFLUENCE_CITIZENS}")[:20]
            commands.append(publish("intent", {
                "intent_id": make_id(f"intent|{self.run_id}|{self.k}|{n}"),
                "origin": make_id(f"devnet-citizen{self.k}")[:20],
                "targets": [[target, slot]]}))
        else:
            owner = 0 if n % 5 == 0 else self.k  # every fifth: the same submission everywhere
            commands.append(publish("refund", {
                "submission_id": make_id(f"refund|{self.run_id}|{owner}|{n}"),
                "origin": make_id(f"devnet-citizen{owner}")[:20],
                "slot": slot,
                "recipient": make_id(f"recipient|{n % DEVNET_RECIPIENTS}")[:20],
                "amount": n % 100 + 1}))
        return [self.signer.sign([c]).raw for c in commands]
