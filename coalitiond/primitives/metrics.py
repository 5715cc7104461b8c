"""The process-wide Prometheus registry.

Every part of the daemon registers its metrics here (names prefixed `coalitiond_`) at import
time of its own module; the HTTP/metrics server exposes this registry and nothing else, so
tests can read metric values without global-registry collisions.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .. import __version__

REGISTRY: Final = CollectorRegistry(auto_describe=True)
PREFIX: Final = "coalitiond_"


def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(PREFIX + name, doc, labels, registry=REGISTRY)


def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(PREFIX + name, doc, labels, registry=REGISTRY)


def histogram(
    name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] | None = None
) -> Histogram:
    if buckets is None:
        return Histogram(PREFIX + name, doc, labels, registry=REGISTRY)
    return Histogram(PREFIX + name, doc, labels, registry=REGISTRY, buckets=buckets)


BUILD_INFO: Final = Info(PREFIX + "build", "Version of this coalitiond build", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})


def sample_value(name: str, labels: dict[str, str] | None = None) -> float | None:
    """Current value of one sample (tests and `status`)."""
    return REGISTRY.get_sample_value(name, labels or {})
