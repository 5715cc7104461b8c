"""The consensus core's inputs and outputs: events in, actions out (docs/protocol.md §3–§9).

`Core.step(event) -> list[action]` (voter.py) is the whole interface between the sans-IO core
and whatever drives it (the trio shell in coalitiond/node, the simulator, tests). Every event
and action is a small immutable value; the shell executes a step's actions in order and must
make a `PersistSignerGuard` durable before running any later action (§8). The core's
configuration, its durable restart state and the two hooks the shell plugs in are here too:
they are what a driver builds a core from.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ..primitives.errors import LocalError
from .evidence import Evidence
from .limits import (
    BLOCK_OVERHEAD_RESERVE,
    DEFAULT_MAX_BLOCK_BYTES,
    MAX_SERVABLE_BLOCK_BYTES,
    MIN_MAX_BLOCK_BYTES,
)
from .messages import Message
from .root_evidence import WrongRoot
from .statements import SignedKind
from .types import MAX_BLOCK_SIZE, MAX_COMMANDS_PER_BLOCK, Block, Certificate, CertifiedRoots

# ---------------------------------------------------------------------------------------------
# configuration and durable state


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timing and batching (SPEC §1 `[committee]` timing). All times in milliseconds."""

    leader_timeout_ms: int = 1000
    view_timeout_ms: int = 1500
    batch_interval_ms: int = 50
    max_batch_commands: int = 1000
    max_batch_bytes: int = 1024 * 1024
    max_backoff_exponent: int = 4
    #: The size rule (docs/protocol.md §10): a committee-wide parameter, as the timing.
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES

    def __post_init__(self) -> None:
        if not 0 < self.leader_timeout_ms <= self.view_timeout_ms:
            raise LocalError("need 0 < leader_timeout_ms <= view_timeout_ms")
        if not 0 <= self.batch_interval_ms < self.leader_timeout_ms:
            raise LocalError("batch_interval_ms must be below leader_timeout_ms")
        if not 0 < self.max_batch_commands <= MAX_COMMANDS_PER_BLOCK:
            raise LocalError(f"max_batch_commands must be in 1..{MAX_COMMANDS_PER_BLOCK}")
        if not 0 < self.max_batch_bytes <= MAX_BLOCK_SIZE - BLOCK_OVERHEAD_RESERVE:
            raise LocalError("max_batch_bytes too large for one block")
        if not 0 <= self.max_backoff_exponent <= 16:
            raise LocalError("max_backoff_exponent must be in 0..16")
        if not MIN_MAX_BLOCK_BYTES <= self.max_block_bytes <= MAX_SERVABLE_BLOCK_BYTES:
            raise LocalError(f"max_block_bytes must be in {MIN_MAX_BLOCK_BYTES}.."
                             f"{MAX_SERVABLE_BLOCK_BYTES} (the largest block every member "
                             "can serve)")

    @property
    def batch_budget(self) -> int:
        """Encoded bytes of commands (each with its CBOR head) a leader puts in one block:
        `max_batch_bytes`, and never so many that the block could exceed `max_block_bytes`."""
        return min(self.max_batch_bytes, self.max_block_bytes - BLOCK_OVERHEAD_RESERVE)


@dataclass(frozen=True, slots=True)
class GuardRecord:
    """"I signed `kind` for `view` with `digest`" — what the store keeps durably."""

    epoch: int
    view: int
    kind: SignedKind
    digest: bytes


@dataclass(frozen=True, slots=True)
class SeenStatement:
    """The first statement the core saw from member `member` for (`view`, `kind`) in its
    epoch, with that member's signature (docs/protocol.md §5): kept by the store so that an
    equivocation whose halves straddle a restart is still caught."""

    member: int
    view: int
    kind: SignedKind
    digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class DurableState:
    """What the core is rebuilt from after a restart (docs/protocol.md §8)."""

    guard: tuple[GuardRecord, ...] = ()
    tip: Block | None = None  # None: genesis
    tip_certificate: Certificate | None = None
    #: The roots after the last executed block (None: nothing executed).
    executed: CertifiedRoots | None = None
    guard_lost: bool = False
    #: First-seen statements of other members, in the store's window (§5).
    seen: tuple[SeenStatement, ...] = ()
    #: Roots the newest stored blocks certify (§7): a restarted member checks a proposal's
    #: claim for one of those heights against them (it keeps its own only for the newest).
    certified: tuple[CertifiedRoots, ...] = ()
    #: This member's own roots for the last heights its recovery replayed (§7).
    replayed: tuple[CertifiedRoots, ...] = ()


# ---------------------------------------------------------------------------------------------
# events


class TimerKind(enum.IntEnum):
    """The core's timers (docs/protocol.md §3.5, §6, §9): never cancelled, only outlived.
    A FETCH timer's `view` is the number of the `nullifications?` request it times out."""

    LEADER = 0
    VIEW = 1
    BATCH = 2
    FETCH = 3
    #: The start-up recall's rounds (§8); its `view` field counts the rounds, from 1.
    RECALL = 4


@dataclass(frozen=True, slots=True)
class Start:
    """First event after construction: arms the timers of the starting view."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A peer's message, already decoded and passed through `messages.verify_message`."""

    sender: int | None  # member index the transport authenticated; None if unknown
    message: Message


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the core asked for with `SetTimer` ran out."""

    kind: TimerKind
    view: int


@dataclass(frozen=True, slots=True)
class CommandSubmitted:
    """A client command (encoded envelope) for the pending batch (§6)."""

    command: bytes


@dataclass(frozen=True, slots=True)
class BlockExecuted:
    """Every block up to `roots.height` is in this member's log and executed: the state root
    and the log's (size, root) then (§7)."""

    roots: CertifiedRoots

    @property
    def height(self) -> int:
        return self.roots.height


@dataclass(frozen=True, slots=True)
class BlocksFetched:
    """Finalised blocks with certificates, in height order, checked by `verify_fetched`."""

    chain: tuple[tuple[Block, Certificate], ...]


@dataclass(frozen=True, slots=True)
class BlockValidated:
    """The shell's answer to `ValidateBlock`: may the component apply the commands of the
    block `digest` proposed in `view` (§6)?"""

    view: int
    digest: bytes
    valid: bool


Event = (Start | MessageReceived | TimerFired | CommandSubmitted | BlockExecuted | BlocksFetched
         | BlockValidated)


# ---------------------------------------------------------------------------------------------
# actions


@dataclass(frozen=True, slots=True)
class PersistSignerGuard:
    """Make "I signed `kind` in `view` with `digest`" durable before any later action (§8)."""

    epoch: int
    view: int
    kind: SignedKind
    digest: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send `message` to every other member."""

    message: Message


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to member `to` only."""

    to: int
    message: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Deliver `TimerFired(kind, view)` after `delay_ms`."""

    kind: TimerKind
    view: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Finalized:
    """A newly final block, in height order: append it to the log and execute it (§3.4)."""

    block: Block
    certificate: Certificate  # finalises this block or a descendant (docs/protocol.md §3.4)


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    """Proven equivocation, found or adopted: log and store it (§5)."""

    evidence: Evidence


@dataclass(frozen=True, slots=True)
class ValidateBlock:
    """Ask the shell whether the component accepts these commands (like Commonware's
    `Automaton::verify`): the proposal of `view` passed every rule of the core and waits for
    the answer, `BlockValidated`, before this member notarises it (§6). The answer may depend
    on the shell's changing state (driver checks, followed committees); the core reads none
    of it."""

    view: int
    digest: bytes
    commands: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class FetchBlocks:
    """Ask peers for finalised blocks `from_height..to_height` (§9); answer: `BlocksFetched`."""

    from_height: int
    to_height: int


@dataclass(frozen=True, slots=True)
class StateDivergence:
    """A finalised block certifies other roots than ours for one height: this member has a
    local fault (a determinism bug, a damaged store). It has stopped signing; the shell must
    alarm, stop serving reads, and say so on one line (§7)."""

    certified: CertifiedRoots
    local: CertifiedRoots

    @property
    def height(self) -> int:
        return self.certified.height

    def describe(self) -> str:
        c, m = self.certified, self.local
        parts = [f"{name} certified {a}, ours {b}" for name, a, b in (
            ("state root", c.state_root.hex()[:16], m.state_root.hex()[:16]),
            ("log size", c.log_size, m.log_size),
            ("log root", c.log_root.hex()[:16], m.log_root.hex()[:16])) if a != b]
        return f"height {c.height}: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class WrongRootFound:
    """A proposal claimed roots this member knows to be wrong: refused; keep the evidence
    against its proposer (§7)."""

    evidence: WrongRoot


@dataclass(frozen=True, slots=True)
class Refused:
    """Input the core did not accept; `reason` is one line (metrics label + log)."""

    sender: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class RecordSeen:
    """Keep this first-seen statement of another member (§5). Not urgent: the shell may
    write it with its next commit; one lost in a crash only weakens detection."""

    statement: SeenStatement


Action = (PersistSignerGuard | Broadcast | Send | SetTimer | Finalized | EvidenceFound
          | WrongRootFound | FetchBlocks | StateDivergence | Refused | RecordSeen
          | ValidateBlock)

#: Asked when this member is about to propose: the member commands (already encoded) the
#: shell wants in the block, e.g. an Almanac tick. Like the commands clients submit they are
#: input, not state: the core puts them first, skips any already in an unfinalised ancestor,
#: and never remembers them.
MemberCommandsHook = Callable[[], tuple[bytes, ...]]


def no_member_commands() -> tuple[bytes, ...]:
    return ()
