"""The committee as every layer sees it: ordered members, the quorum dial, the ids that bind
every signature to this committee and epoch.

Membership comes from configuration only, never from gossip (DESIGN §2.4).

Quorum dial (DESIGN §2.5): one quorum size `q` for every certificate. Two quorums of size q
intersect in at least `2q − n` members, so safety holds against `f_s = 2q − n − 1` Byzantine
members whatever the network does; liveness needs `q` members up, so it tolerates `n − q`
down. From the configured fault bound: `q = ceil((n + f_s + 1) / 2)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .errors import LocalError
from .identity import hash_structure, make_id

COMMITTEE_SCHEMA: Final = 1
#: Largest committee a member config may describe (`config.committee`); also the bound on
#: a committee described inside Chronicle evidence.
MAX_COMMITTEE_MEMBERS: Final = 64


def default_fault_bound(n: int) -> int:
    """`ceil(n/2) − 1`: majority-honest."""
    return (n + 1) // 2 - 1


def quorum_size(n: int, fault_bound: int) -> int:
    """`q = ceil((n + f_s + 1) / 2)`."""
    return (n + fault_bound + 2) // 2


def network_id(network_name: str) -> bytes:
    return make_id(network_name)


@dataclass(frozen=True, slots=True)
class CommitteeSpec:
    """What every member of one committee must agree on, byte for byte.

    `members[i]` is the ed25519 public key (PeerId) of member index i; the order is the
    configuration's and fixes leader rotation and certificate indices.
    """

    network_name: str
    component_kind: str
    component_name: str
    members: tuple[bytes, ...]
    fault_bound: int
    epoch: int = 0
    #: blake3 of the deterministic encoding of the component's own parameters, so members
    #: with different component configurations never form a quorum together.
    component_config_digest: bytes = b"\x00" * 32
    quorum: int = field(init=False)
    committee_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.members)
        if n == 0:
            raise LocalError("committee has no members")
        if len(set(self.members)) != n:
            raise LocalError("committee lists a member twice")
        if any(len(m) != 32 for m in self.members):
            raise LocalError("member ids must be 32 bytes")
        if self.fault_bound < 0:
            raise LocalError("fault bound must be >= 0")
        q = quorum_size(n, self.fault_bound)
        if q > n:
            raise LocalError(f"quorum {q} exceeds committee size {n}")
        object.__setattr__(self, "quorum", q)
        object.__setattr__(
            self,
            "committee_id",
            hash_structure(
                "committee",
                COMMITTEE_SCHEMA,
                network_id(self.network_name),
                self.component_kind,
                self.component_name,
                list(self.members),
                self.fault_bound,
                self.component_config_digest,
            ),
        )

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def network_id(self) -> bytes:
        return network_id(self.network_name)

    @property
    def safety_bound(self) -> int:
        """Byzantine members tolerated for safety: `2q − n − 1`."""
        return 2 * self.quorum - self.n - 1

    @property
    def liveness_bound(self) -> int:
        """Members that may be down while the committee still makes progress: `n − q`."""
        return self.n - self.quorum

    def index_of(self, peer_id: bytes) -> int | None:
        try:
            return self.members.index(peer_id)
        except ValueError:
            return None

    def leader(self, view: int) -> int:
        """Deterministic round-robin leader of `view` (a member index)."""
        return view % self.n

    def summary(self) -> str:
        return (
            f"committee {self.committee_id.hex()[:16]} ({self.component_kind}/"
            f"{self.component_name}, epoch {self.epoch}): n={self.n} q={self.quorum}; "
            f"safe against {self.safety_bound} Byzantine, live with {self.liveness_bound} down"
        )
