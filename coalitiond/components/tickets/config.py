"""The ticket issuer's `[component]` section: its issuer keys and per-ticket bounds
(docs/configuration.md). Parsed from TOML by `coalitiond.config.components`; consensus
content via `to_cbor`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ...consensus.types import MAX_COMMAND_SIZE

#: Issuer keys and per-ticket bounds (kept equal to `components.tickets.component`'s
#: constants by a test).
MAX_TICKET_ISSUERS: Final = 64
DEFAULT_TICKETS_MAX_CLAIMS_BYTES: Final = 4096
MAX_TICKETS_CLAIMS_BYTES: Final = MAX_COMMAND_SIZE // 2
DEFAULT_TICKETS_MAX_LIFETIME_S: Final = 30 * 86_400
MAX_TICKETS_LIFETIME_S: Final = 10 * 366 * 86_400


@dataclass(frozen=True, slots=True)
class TicketsConfig:
    """`tickets`: the coalition's ticket issuer (SPEC §3.5)."""

    KIND: ClassVar[str] = "tickets"
    #: Client keys allowed to `issue` and `revoke` (they must be admitted by the ACL too).
    issuers: tuple[bytes, ...]
    max_claims_bytes: int = DEFAULT_TICKETS_MAX_CLAIMS_BYTES
    max_lifetime_s: int = DEFAULT_TICKETS_MAX_LIFETIME_S

    def to_cbor(self) -> dict[str, Any]:
        return {
            "issuers": list(self.issuers),
            "max_claims_bytes": self.max_claims_bytes,
            "max_lifetime_s": self.max_lifetime_s,
        }
