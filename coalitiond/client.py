"""The integrator client, public import path (docs/api.md §4): `coalitiond.client`.

The implementation lives in `coalitiond.integrator`; this module is the documented surface
and stays where integrators import it from.
"""

from .integrator.answers import (
    ApiError,
    BadBlocks,
    BadCertificate,
    BadCheckpoint,
    BadConsistencyProof,
    BadEvidence,
    BadInclusionProof,
    BadStateRead,
    BlockPage,
    LogEntry,
    MalformedResponse,
    StateRead,
    UncertifiedState,
    UnprovenRead,
    VerificationFailed,
    VerifiedCheckpoint,
)
from .integrator.client import (
    DEFAULT_TIMEOUT_S,
    MAX_RESPONSE_BYTES,
    AsyncCoalitionClient,
    CoalitionClient,
)
from .integrator.proven_reads import PROVEN_READS, ProvenRead

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_RESPONSE_BYTES",
    "PROVEN_READS",
    "ApiError",
    "AsyncCoalitionClient",
    "BadBlocks",
    "BadCertificate",
    "BadCheckpoint",
    "BadConsistencyProof",
    "BadEvidence",
    "BadInclusionProof",
    "BadStateRead",
    "BlockPage",
    "CoalitionClient",
    "LogEntry",
    "MalformedResponse",
    "ProvenRead",
    "StateRead",
    "UncertifiedState",
    "UnprovenRead",
    "VerificationFailed",
    "VerifiedCheckpoint",
]
