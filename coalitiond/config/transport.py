"""The optional `[transport]` section: reader admission, queue budgets and per-peer rate
limits of this member's links (local to the node, not consensus content).

Every key is optional; an absent key keeps the transport's own default (named constants in
`coalitiond/transport/`, listed in docs/configuration.md), so this module holds no second
copy of them. The node turns the section into a `TransportConfig` (node/member.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..primitives.crypto import PUBLIC_KEY_LEN
from .parsing import Table

#: Smallest byte budget of a queue: one maximal (4 MiB) message must fit.
MIN_QUEUE_BYTES: Final = 4 * 1024 * 1024
MAX_QUEUE_BYTES: Final = 1 << 30
MAX_RESERVED_READERS: Final = 1024
#: The kinds with a per-peer rate limit, `<kind>_per_s` and `<kind>_burst` (wire.md §8).
RATE_KINDS: Final = ("ping", "discovery", "catalog", "consensus", "sync", "gossip", "client")
MAX_RATE: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TransportSettings:
    reserved_readers: tuple[bytes, ...] = ()
    max_anonymous_readers: int | None = None
    max_readers_per_address: int | None = None
    reader_idle_timeout_s: int | None = None
    send_queue_messages: int | None = None
    send_queue_bytes: int | None = None
    reader_send_queue_bytes: int | None = None
    anonymous_send_bytes: int | None = None
    recv_queue_bytes: int | None = None
    max_catalog_bytes: int | None = None
    max_reader_record_bytes: int | None = None
    #: kind → (per second, burst), only the kinds the file sets.
    rates: tuple[tuple[str, int, int], ...] = ()


def parse_transport(t: Table | None) -> TransportSettings:
    if t is None:
        return TransportSettings()

    def opt(name: str, minimum: int, maximum: int) -> int | None:
        value: int | None = t.integer(name, None, minimum=minimum, maximum=maximum)
        return value

    rates: list[tuple[str, int, int]] = []
    for kind in RATE_KINDS:
        per_s = opt(f"{kind}_per_s", 1, MAX_RATE)
        burst = opt(f"{kind}_burst", 1, MAX_RATE)
        if (per_s is None) != (burst is None):
            missing = f"{kind}_burst" if burst is None else f"{kind}_per_s"
            raise t.error(missing, f"set together with {kind}_per_s / {kind}_burst")
        if per_s is not None and burst is not None:
            rates.append((kind, per_s, burst))
    settings = TransportSettings(
        reserved_readers=t.hex_array("reserved_readers", PUBLIC_KEY_LEN, ()),
        max_anonymous_readers=opt("max_anonymous_readers", 0, 1024),
        max_readers_per_address=opt("max_readers_per_address", 1, 1024),
        reader_idle_timeout_s=opt("reader_idle_timeout_s", 1, 86_400),
        send_queue_messages=opt("send_queue_messages", 16, 65_536),
        send_queue_bytes=opt("send_queue_bytes", MIN_QUEUE_BYTES, MAX_QUEUE_BYTES),
        reader_send_queue_bytes=opt("reader_send_queue_bytes", MIN_QUEUE_BYTES,
                                    MAX_QUEUE_BYTES),
        anonymous_send_bytes=opt("anonymous_send_bytes", MIN_QUEUE_BYTES, MAX_QUEUE_BYTES),
        recv_queue_bytes=opt("recv_queue_bytes", MIN_QUEUE_BYTES, MAX_QUEUE_BYTES),
        max_catalog_bytes=opt("max_catalog_bytes", 1024 * 1024, MAX_QUEUE_BYTES),
        max_reader_record_bytes=opt("max_reader_record_bytes", 512, 60_000),
        rates=tuple(rates),
    )
    if len(settings.reserved_readers) > MAX_RESERVED_READERS:
        raise t.error("reserved_readers", f"at most {MAX_RESERVED_READERS} keys, got "
                      f"{len(settings.reserved_readers)}")
    t.finish()
    return settings
