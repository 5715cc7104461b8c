"""The Compute member's pre-vote driver: `components.compute.quotes.vote_check` in the shape
of the member's driver hook (`node.drivers.Driver`), with a short-lived verdict cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from ..attestation import dcap
from ..attestation.gate import CollateralSource, Verifier
from ..commands.envelope import Envelope, InvalidCommand
from ..components.compute.quotes import (
    QUOTED_OPS,
    ProviderQuotePolicy,
    ProviderQuoteRefused,
    vote_check_envelopes,
)
from .drivers import Checked, Driver

#: How long a provider-quote verdict is reused, and how many are kept.
VERDICT_TTL_S: Final = 60
MAX_CACHED_VERDICTS: Final = 1024


class ProviderQuoteDriver(Driver):
    """`vote_check` in the shape of the member's driver hook (`coalitiond.node.drivers`):
    a compute member adds one so it never votes for a block holding a provider quote that
    fails verification at its own clock. `wall` is the unix clock (injected for tests)."""

    checks_envelopes = True

    def __init__(self, collateral: CollateralSource, policy: ProviderQuotePolicy | None = None,
                 *, wall: Callable[[], float], verifier: Verifier = dcap.verify) -> None:
        self.collateral = collateral
        self.policy = policy or ProviderQuotePolicy()
        self._wall = wall
        self._verifier = verifier
        #: envelope id -> (verdict, unix second it was reached): a proposal retried every
        #: view costs one DCAP verification (~1 ms on the event loop) per minute, not per view.
        self._verdicts: OrderedDict[bytes, tuple[str | None, int]] = OrderedDict()

    def vote_check(self, command: Checked) -> str | None:
        if not isinstance(command, Envelope):
            return None
        now = int(self._wall())
        cached = self._verdicts.get(command.envelope_id)
        if cached is not None and now - cached[1] < VERDICT_TTL_S:
            return cached[0]
        verdict: str | None = None
        try:
            vote_check_envelopes([command], self.collateral, now, self.policy,
                                 verifier=self._verifier)
        except (ProviderQuoteRefused, InvalidCommand) as exc:
            verdict = str(exc)
        if any(c.op in QUOTED_OPS for c in command.commands):
            self._verdicts[command.envelope_id] = (verdict, now)
            self._verdicts.move_to_end(command.envelope_id)
            while len(self._verdicts) > MAX_CACHED_VERDICTS:
                self._verdicts.popitem(last=False)
        return verdict
