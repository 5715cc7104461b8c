"""Evidence that a proposer claimed roots a voter knows to be wrong (docs/protocol.md §7).

A voter that executed height h itself and receives a proposal whose block claims other roots
for h refuses the proposal and records a `WrongRoot`: the proposer's signed statement on the
block digest, the block's header (which the digest is the hash of, so the claim is bound to
the signature without the commands) and the voter's own roots for h.

What it proves offline, with the committee configuration alone: that the proposer signed a
block claiming `header.roots`. Which roots are right for h is settled by the certified chain
(any finalised block with `executed_height = h` carries them, checked by a quorum); an
auditor compares. It is kept by the voter (its evidence table, `coalitiond_consensus_evidence
_total{kind="wrong-root"}`) and not gossiped or put in blocks: unlike an equivocation, a
single voter's roots are not a proof others could act on without the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SIGNATURE_LEN
from ..primitives.encoding import decode, encode
from .evidence import InvalidEvidence
from .statements import SignedKind, statement_is_valid
from .types import SCHEMA, BlockHeader, CertifiedRoots, MalformedMessage

WRONG_ROOT_KIND: Final = "wrong-root"
MAX_WRONG_ROOT_SIZE: Final = 2048


def roots_to_wire(r: CertifiedRoots) -> list[Any]:
    return [r.height, r.state_root, r.log_size, r.log_root]


def roots_from_wire(obj: Any, what: str) -> CertifiedRoots:
    ok = (isinstance(obj, list) and len(obj) == 4
          and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                  for x in (obj[0], obj[2]))
          and all(isinstance(x, bytes) and len(x) == 32 for x in (obj[1], obj[3])))
    if not ok:
        raise MalformedMessage(f"{what}: roots are [height, state_root, log_size, log_root]")
    return CertifiedRoots(obj[0], obj[1], obj[2], obj[3])


@dataclass(frozen=True, slots=True)
class WrongRoot:
    committee_id: bytes
    epoch: int
    header: BlockHeader
    signature: bytes
    local: CertifiedRoots

    @property
    def view(self) -> int:
        return self.header.view

    @property
    def member(self) -> int:
        return self.header.proposer

    def to_wire(self) -> list[Any]:
        return [WRONG_ROOT_KIND, SCHEMA, self.committee_id, self.epoch, self.header.to_wire(),
                self.signature, roots_to_wire(self.local)]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> WrongRoot:
        obj = decode(data, max_size=MAX_WRONG_ROOT_SIZE)
        if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == WRONG_ROOT_KIND
                and obj[1] == SCHEMA):
            raise MalformedMessage("wrong-root evidence: expected [\"wrong-root\", 1, ...7 items]")
        _, _, committee_id, epoch, header, signature, local = obj
        if not (isinstance(committee_id, bytes) and len(committee_id) == 32
                and isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0
                and isinstance(signature, bytes) and len(signature) == SIGNATURE_LEN):
            raise MalformedMessage("wrong-root evidence: committee id, epoch or signature "
                                   "has the wrong type")
        return cls(committee_id, epoch, BlockHeader.from_wire(header), signature,
                   roots_from_wire(local, "wrong-root evidence"))

    def verify(self, committee: CommitteeSpec) -> None:
        """Raise InvalidEvidence unless the named proposer signed a block claiming roots that
        differ from `local` for the same height."""
        if (self.committee_id, self.epoch) != (committee.committee_id, committee.epoch):
            raise InvalidEvidence("wrong-root evidence for another committee or epoch")
        h = self.header
        if not 0 <= h.proposer < committee.n:
            raise InvalidEvidence(f"wrong-root evidence names member index {h.proposer}")
        if h.roots.height != self.local.height or h.roots == self.local:
            raise InvalidEvidence("wrong-root evidence: the roots are for another height or "
                                  "do not differ")
        if not statement_is_valid(committee, h.proposer, SignedKind.PROPOSE, h.view, h.digest,
                                  self.signature):
            raise InvalidEvidence(f"wrong-root evidence: the proposal signature of member "
                                  f"{h.proposer} does not verify (view {h.view})")
