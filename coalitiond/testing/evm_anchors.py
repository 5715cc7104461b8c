"""A Byzantine EVM anchor sink, for tests only: it posts a digest that is not the committee's
(the committed one with its first byte flipped), from the member's real account, through the
real sink's path. Nothing in the daemon can build it (the runtime never imports `testing`)."""

from __future__ import annotations

from ..components.chronicle.evm_sink import EvmAnchorSink
from ..components.chronicle.records import ChronicleAnchor


def wrong_digest(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 0xFF]) + digest[1:]


class WrongDigestSink(EvmAnchorSink):
    async def publish(self, anchor: ChronicleAnchor, committee_id: bytes) -> None:
        await super().publish(ChronicleAnchor(anchor.upto_seq, wrong_digest(anchor.digest)),
                              committee_id)
