"""Full DCAP verification of compute providers' TDX quotes, run by a member before it votes.

The compute component (`components.compute.component`) only *parses* a provider's quote
(`attestation.quote`) to read MR_TD: its `check`/`apply` must give the same answer when an auditor replays the log
months later, and full verification depends on the wall clock and on collateral that
expires. So the full check lives here, outside the state machine: before voting for a block,
a member runs `vote_check` on every `register_provider` / `refresh_provider` command carrying
a quote and refuses to vote if one fails. What a quorum voted for is then final; replay
never re-runs this. The member runs it through `node.quote_driver.ProviderQuoteDriver`.

Verification: dcap-qvl through `coalitiond.attestation.dcap.verify` (Intel's root only),
with collateral from the member's local cache (never fetched here), at the member's clock
`now`; then this module's policy: debug TDs refused, the verified MR_TD and REPORTDATA must
equal those the component parses (so the state machine and the verifier can never
disagree), and, if the policy names an allow-list, MR_TD in it. In `vote_check` the quote
must also be bound to the card's provider (REPORTDATA[0..32], the component's own rule), so a
member never verifies, let alone votes for, someone else's quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ...attestation import dcap
from ...attestation.dcap import AttestationRefused, DcapPolicy
from ...attestation.gate import CollateralSource, Verifier
from ...attestation.quote import MRTD_LEN, MalformedQuote, quote_mr_td, quote_report_data
from ...commands.envelope import Command, Envelope
from ...primitives.errors import CoalitiondError, LocalError
from .records import card_from_command, quote_is_bound

#: The commands whose card may carry a quote.
QUOTED_OPS: Final = frozenset({"register_provider", "refresh_provider"})


class ProviderQuoteRefused(AttestationRefused):
    """A provider's quote failed full verification: do not vote for the block holding it.
    `reason` is a short stable label, `detail` the verifier's or the policy's text."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.args = (f"provider quote refused: {reason}: {detail}",)

    def __str__(self) -> str:
        return f"provider quote refused: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ProviderQuotePolicy:
    """What a member accepts from a provider. Defaults: dcap-qvl's defaults of this
    project (`UpToDate` only, PCK platform flags allowed), any MR_TD, no debug TD."""

    dcap: DcapPolicy = field(default_factory=DcapPolicy)
    #: Empty: any MR_TD (requests pin the MR_TD they need with `expected_mrtd`).
    allowed_mr_td: frozenset[bytes] = frozenset()
    allow_debug: bool = False

    def __post_init__(self) -> None:
        if any(len(m) != MRTD_LEN for m in self.allowed_mr_td):
            raise LocalError(f"allowed MR_TD values must be {MRTD_LEN} bytes")


def verify_provider_quote(quote: bytes, collateral: CollateralSource, now: int,
                          policy: ProviderQuotePolicy | None = None, *,
                          provider_id: bytes | None = None,
                          verifier: Verifier = dcap.verify) -> bytes:
    """Fully verify `quote` at unix time `now`; return its MR_TD or raise
    ProviderQuoteRefused. `collateral` is the member's cache (`CollateralCache`). With
    `provider_id`, the quote must also be bound to it (checked first: it is cheap).
    `verifier` is `dcap.verify` (Intel's root); tests pass one bound to a test root."""
    policy = policy or ProviderQuotePolicy()
    try:
        parsed = quote_mr_td(quote)
        parsed_report_data = quote_report_data(quote)
        if provider_id is not None and not quote_is_bound(quote, provider_id):
            raise ProviderQuoteRefused("quote_not_bound", "REPORTDATA[0..32] is not the "
                                       f"binding of provider {provider_id.hex()}")
    except MalformedQuote as exc:
        raise ProviderQuoteRefused("quote_malformed", str(exc)) from None
    try:
        fmspc = dcap.quote_fmspc(quote)
        try:
            found = collateral.get(fmspc)
        except CoalitiondError as exc:
            raise ProviderQuoteRefused("no_collateral", f"collateral for FMSPC {fmspc}: "
                                       f"{exc}") from None
        if found is None:
            raise ProviderQuoteRefused("no_collateral", f"no cached collateral for FMSPC "
                                       f"{fmspc}")
        verified = verifier(quote, found, now, policy=policy.dcap)
    except ProviderQuoteRefused:
        raise
    except AttestationRefused as exc:
        raise ProviderQuoteRefused(exc.reason, exc.detail) from None
    if verified.debug and not policy.allow_debug:
        raise ProviderQuoteRefused("debug", "TD has the DEBUG attribute set")
    if verified.mr_td != parsed:
        # dcap-qvl and our parser read different bytes: never let the state machine act on
        # a measurement the verifier did not vouch for.
        raise ProviderQuoteRefused("mr_td_mismatch", f"verified MR_TD {verified.mr_td.hex()} "
                                   f"differs from the parsed {parsed.hex()}")
    if verified.report_data != parsed_report_data:
        # The binding was checked on the parsed bytes: they must be the verified ones.
        raise ProviderQuoteRefused("report_data_mismatch", "verified REPORTDATA differs from "
                                   "the parsed one")
    if policy.allowed_mr_td and verified.mr_td not in policy.allowed_mr_td:
        raise ProviderQuoteRefused("mr_td", f"MR_TD {verified.mr_td.hex()} is not in the "
                                   "allow-list")
    return verified.mr_td


def vote_check(command: Command, collateral: CollateralSource, now: int,
               policy: ProviderQuotePolicy | None = None, *,
               verifier: Verifier = dcap.verify) -> None:
    """The pre-vote check of one compute command: a register/refresh whose card carries a
    quote must be bound to the card's provider and verify (ProviderQuoteRefused); other
    commands pass. A malformed card raises the component's InvalidCommand (the stateless
    check refuses it anyway)."""
    if command.op not in QUOTED_OPS:
        return
    card = card_from_command(command)
    if card.tdx_quote is not None:
        verify_provider_quote(card.tdx_quote, collateral, now, policy,
                              provider_id=card.provider_id, verifier=verifier)


def vote_check_envelopes(envelopes: Sequence[Envelope], collateral: CollateralSource,
                         now: int, policy: ProviderQuotePolicy | None = None, *,
                         verifier: Verifier = dcap.verify) -> None:
    """`vote_check` over every command of a block's checked client envelopes, in order."""
    for envelope in envelopes:
        for command in envelope.commands:
            vote_check(command, collateral, now, policy, verifier=verifier)
