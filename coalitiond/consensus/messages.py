"""Consensus wire messages: the envelope, strict decoding, and signature verification.

`decode_message` turns bytes from a peer into one typed message or raises a RemoteError
subclass naming the problem; `verify_message` checks every signature the message carries. Both
are pure so the shell can run them off the event loop (batched) and the simulator can run them
exactly as the shell does. The core never verifies signatures; it trusts only messages that
passed `verify_message` and still checks every semantic rule itself (docs/protocol.md §2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SIGNATURE_LEN, SigningKey
from ..primitives.encoding import decode, encode
from ..primitives.errors import RemoteError
from .evidence import Evidence
from .limits import (
    MAX_FETCH_ANSWER_BYTES,
    MAX_FETCH_VIEWS,
    MAX_RECALL_ANSWER_SIZE,
    MAX_RECALL_STATEMENTS,
)
from .statements import SignedKind, sign_statement, statement_is_valid
from .types import (
    MAX_BLOCK_SIZE,
    SCHEMA,
    Block,
    Certificate,
    InvalidCertificate,
    MalformedMessage,
    Vote,
    VoteKind,
)

#: One wire message: the largest block plus room for a certificate and the envelope.
MAX_MESSAGE_SIZE: Final = MAX_BLOCK_SIZE + 256 * 1024


class WrongCommittee(RemoteError):
    """A message for another committee (or epoch): never processed, never counted as ours."""


class BadSignature(RemoteError):
    """A signature in a consensus message does not verify."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """The leader's block for `block.view`, signed over the block digest."""

    block: Block
    signature: bytes

    @classmethod
    def sign(cls, key: SigningKey, committee: CommitteeSpec, block: Block) -> Proposal:
        return cls(block, sign_statement(key, committee, SignedKind.PROPOSE, block.view,
                                         block.digest))

    @property
    def header(self) -> ProposalHeader:
        return ProposalHeader(self.block.view, self.block.digest, self.block.proposer,
                              self.signature)


@dataclass(frozen=True, slots=True)
class ProposalHeader:
    """A relayed proposal signature without the block (equivocation detection)."""

    view: int
    digest: bytes
    proposer: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Notarization:
    """A notarise certificate, with its block when the sender has it (null otherwise)."""

    certificate: Certificate
    block: Block | None


@dataclass(frozen=True, slots=True)
class Nullification:
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class Finalization:
    """A finalise certificate, with its block when the sender has it (null otherwise)."""

    certificate: Certificate
    block: Block | None


@dataclass(frozen=True, slots=True)
class EvidenceMessage:
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """"I cannot check your proposal for `view`: send me its parent and the certificates in
    between." Unsigned: the transport authenticates the sender, and the answer is certified
    data anyone may have."""

    view: int


@dataclass(frozen=True, slots=True)
class NullificationsRequest:
    """"Send me the nullifications you hold for views `first..last`" (docs/protocol.md §9):
    a member that must check a proposal built on a parent many views back fetches the
    certificates of the views in between by range. Unsigned, like `sync`: the transport
    authenticates the sender and the answer is certified data. At most `MAX_FETCH_VIEWS`
    views."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class NullificationsAnswer:
    """The nullification certificates the sender holds for views `first..last` (the range of
    the request it answers), ascending by view, at most `MAX_FETCH_VIEWS` of them and
    `MAX_FETCH_ANSWER_BYTES` in all; views it holds none for are left out."""

    first: int
    last: int
    certificates: tuple[Certificate, ...]


@dataclass(frozen=True, slots=True)
class RecallRequest:
    """"What have you seen me sign?" Sent once by every member when it starts, before it
    signs anything (docs/protocol.md §8). Unsigned, like a sync request: the transport
    authenticates the sender, and the answer is data the sender signed itself."""


@dataclass(frozen=True, slots=True)
class RecalledStatement:
    """One statement of the requester, as a peer saw it: `(kind, view, digest)` and the
    requester's own signature on it."""

    kind: SignedKind
    view: int
    digest: bytes
    signature: bytes

    def to_wire(self) -> list[Any]:
        return [int(self.kind), self.view, self.digest, self.signature]


@dataclass(frozen=True, slots=True)
class RecallAnswer:
    """The answer to a RecallRequest: the latest statements signed by `member` (the
    requester) that the answering peer holds, at most MAX_RECALL_STATEMENTS (its newest of
    each kind). Empty when the peer holds none."""

    member: int
    statements: tuple[RecalledStatement, ...]


Message = (Proposal | ProposalHeader | Vote | Notarization | Nullification | Finalization
           | EvidenceMessage | SyncRequest | NullificationsRequest | NullificationsAnswer
           | RecallRequest | RecallAnswer)

_TYPE_NAMES: Final[dict[type, str]] = {
    Proposal: "proposal",
    ProposalHeader: "header",
    Vote: "vote",
    Notarization: "notarization",
    Nullification: "nullification",
    Finalization: "finalization",
    EvidenceMessage: "evidence",
    SyncRequest: "sync",
    NullificationsRequest: "nullifications?",
    NullificationsAnswer: "nullifications",
    RecallRequest: "recall",
    RecallAnswer: "recalled",
}


def _body(msg: Message) -> Any:
    if isinstance(msg, Proposal):
        return [msg.block.to_wire(), msg.signature]
    if isinstance(msg, ProposalHeader):
        return [msg.view, msg.digest, msg.proposer, msg.signature]
    if isinstance(msg, Vote):
        return msg.to_wire()
    if isinstance(msg, Notarization | Finalization):
        return [msg.certificate.to_wire(),
                msg.block.to_wire() if msg.block is not None else None]
    if isinstance(msg, Nullification):
        return [msg.certificate.to_wire()]
    if isinstance(msg, SyncRequest):
        return [msg.view]
    if isinstance(msg, NullificationsRequest):
        return [msg.first, msg.last]
    if isinstance(msg, NullificationsAnswer):
        return [msg.first, msg.last, [c.to_wire() for c in msg.certificates]]
    if isinstance(msg, RecallRequest):
        return []
    if isinstance(msg, RecallAnswer):
        return [msg.member, [st.to_wire() for st in msg.statements]]
    return msg.evidence.to_wire()


def encode_message(committee: CommitteeSpec, msg: Message) -> bytes:
    return encode(["consensus", SCHEMA, committee.committee_id, _TYPE_NAMES[type(msg)],
                   _body(msg)])


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def _uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def decode_message(committee: CommitteeSpec, data: bytes) -> Message:
    """Bytes from a peer → one message of this committee, or a RemoteError naming why not."""
    obj = decode(data, max_size=MAX_MESSAGE_SIZE)
    _expect(isinstance(obj, list) and len(obj) == 5, "message: expected a 5-item envelope")
    tag, schema, committee_id, kind, body = obj
    _expect(tag == "consensus" and schema == SCHEMA, "message: wrong envelope tag or schema")
    _expect(isinstance(committee_id, bytes) and len(committee_id) == 32,
            "message: committee id must be 32 bytes")
    if committee_id != committee.committee_id:
        raise WrongCommittee(f"message for committee {committee_id.hex()[:16]}, "
                             f"we are {committee.committee_id.hex()[:16]}")
    if kind == "vote":
        return Vote.from_wire(body)
    if kind == "proposal":
        _expect(isinstance(body, list) and len(body) == 2, "proposal: expected [block, sig]")
        _expect(isinstance(body[1], bytes) and len(body[1]) == SIGNATURE_LEN,
                "proposal: signature must be 64 bytes")
        return Proposal(Block.from_wire(body[0]), body[1])
    if kind == "header":
        _expect(isinstance(body, list) and len(body) == 4,
                "header: expected [view, digest, proposer, sig]")
        view, digest, proposer, sig = body
        _expect(_uint(view) and _uint(proposer), "header: view/proposer must be unsigned")
        _expect(isinstance(digest, bytes) and len(digest) == 32, "header: digest must be 32 bytes")
        _expect(isinstance(sig, bytes) and len(sig) == SIGNATURE_LEN,
                "header: signature must be 64 bytes")
        return ProposalHeader(view, digest, proposer, sig)
    if kind in ("notarization", "finalization"):
        _expect(isinstance(body, list) and len(body) == 2,
                f"{kind}: expected [cert, block or null]")
        cert = Certificate.from_wire(body[0])
        block = Block.from_wire(body[1]) if body[1] is not None else None
        if kind == "notarization":
            return Notarization(cert, block)
        return Finalization(cert, block)
    if kind == "nullification":
        _expect(isinstance(body, list) and len(body) == 1, "nullification: expected [cert]")
        return Nullification(Certificate.from_wire(body[0]))
    if kind == "evidence":
        return EvidenceMessage(Evidence.from_wire(body))
    if kind == "sync":
        _expect(isinstance(body, list) and len(body) == 1 and _uint(body[0]),
                "sync: expected [view]")
        return SyncRequest(body[0])
    if kind == "nullifications?":
        _expect(isinstance(body, list) and len(body) == 2,
                "nullifications?: expected [first, last]")
        first, last = _fetch_range(body[0], body[1], "nullifications?")
        return NullificationsRequest(first, last)
    if kind == "nullifications":
        return _decode_nullifications(body, len(data))
    if kind == "recall":
        _expect(body == [], "recall: expected an empty body")
        return RecallRequest()
    if kind == "recalled":
        if len(data) > MAX_RECALL_ANSWER_SIZE:
            raise MalformedMessage(f"recalled: {len(data)} bytes, at most "
                                   f"{MAX_RECALL_ANSWER_SIZE}")
        return _decode_recall_answer(body)
    raise MalformedMessage(f"message: unknown type {kind!r}")


def _fetch_range(first: Any, last: Any, what: str) -> tuple[int, int]:
    _expect(_uint(first) and _uint(last) and 0 < first <= last
            and last - first < MAX_FETCH_VIEWS,
            f"{what}: expected views 0 < first <= last, at most {MAX_FETCH_VIEWS} of them")
    return first, last


def _decode_nullifications(body: Any, size: int) -> NullificationsAnswer:
    """docs/protocol.md §9: bounded in bytes and count, nullifications only, one per view,
    ascending, inside the range asked for."""
    _expect(size <= MAX_FETCH_ANSWER_BYTES,
            f"nullifications: {size} bytes, the limit is {MAX_FETCH_ANSWER_BYTES}")
    _expect(isinstance(body, list) and len(body) == 3 and isinstance(body[2], list),
            "nullifications: expected [first, last, [certificate, ...]]")
    first, last = _fetch_range(body[0], body[1], "nullifications")
    _expect(len(body[2]) <= MAX_FETCH_VIEWS,
            f"nullifications: at most {MAX_FETCH_VIEWS} certificates")
    certs = tuple(Certificate.from_wire(c) for c in body[2])
    previous = first - 1
    for c in certs:
        _expect(c.kind is VoteKind.NULLIFY, "nullifications: a certificate is not a nullify one")
        _expect(previous < c.view <= last,
                "nullifications: certificates must be ascending by view, inside the range")
        previous = c.view
    return NullificationsAnswer(first, last, certs)


def _decode_recall_answer(body: Any) -> RecallAnswer:
    _expect(isinstance(body, list) and len(body) == 2 and _uint(body[0])
            and isinstance(body[1], list), "recalled: expected [member, [statement, ...]]")
    member, items = body
    _expect(len(items) <= MAX_RECALL_STATEMENTS,
            f"recalled: {len(items)} statements, at most {MAX_RECALL_STATEMENTS}")
    statements = []
    for item in items:
        _expect(isinstance(item, list) and len(item) == 4,
                "recalled: a statement is [kind, view, digest, signature]")
        kind, view, digest, sig = item
        _expect(_uint(kind) and kind in (0, 1, 2, 3), "recalled: unknown statement kind")
        _expect(_uint(view) and view > 0, "recalled: view must be a positive integer")
        _expect(isinstance(digest, bytes) and len(digest) == 32,
                "recalled: digest must be 32 bytes")
        _expect(isinstance(sig, bytes) and len(sig) == SIGNATURE_LEN,
                "recalled: signature must be 64 bytes")
        statements.append(RecalledStatement(SignedKind(kind), view, digest, sig))
    return RecallAnswer(member, tuple(statements))


def _check_epoch(committee: CommitteeSpec, epoch: int, what: str) -> None:
    if epoch != committee.epoch:
        raise WrongCommittee(f"{what} for epoch {epoch}, committee is at epoch {committee.epoch}")


#: VerifiedVotes' key "kind" for proposal signatures (vote kinds are 0..2).
_PROPOSAL_KEY: Final = -1


class VerifiedVotes:
    """Vote signatures this process has already verified, so a certificate made only of them
    need not be verified again (every member forms and broadcasts the same certificates:
    without this, each one costs q signature checks per sender).

    Keyed by the signed statement and the signer; a certificate signature counts as known
    only when its bytes equal the verified ones. Bounded: the oldest entries are forgotten
    first (a forgotten signature is simply verified again). Not thread-safe for writers:
    one writer at a time, readers may run concurrently with no writer.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._signatures: dict[tuple[int, int, int, bytes, int], bytes] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def _put(self, key: tuple[int, int, int, bytes, int], signature: bytes) -> None:
        self._signatures.pop(key, None)
        self._signatures[key] = signature
        while len(self._signatures) > self.limit:
            del self._signatures[next(iter(self._signatures))]

    def add_vote(self, vote: Vote) -> None:
        """Remember a vote whose signature was verified (or that we signed)."""
        self._put((int(vote.kind), vote.epoch, vote.view, vote.digest, vote.signer),
                  vote.signature)

    def add_proposal(self, epoch: int, view: int, digest: bytes, proposer: int,
                     signature: bytes) -> None:
        """Remember a leader's verified proposal signature (a proposal or its header)."""
        self._put((_PROPOSAL_KEY, epoch, view, digest, proposer), signature)

    def knows_proposal(self, epoch: int, view: int, digest: bytes, proposer: int,
                       signature: bytes) -> bool:
        """True iff exactly this proposal signature was verified before: every member
        relays the header of the proposal it voted for, so each arrives n - 2 times."""
        return self._signatures.get((_PROPOSAL_KEY, epoch, view, digest, proposer)) == signature

    def add_certificate(self, cert: Certificate) -> None:
        """Remember every signature of a verified certificate."""
        for signer, signature in cert.signatures:
            self._put((int(cert.kind), cert.epoch, cert.view, cert.digest, signer), signature)

    def covers(self, cert: Certificate) -> bool:
        """True iff every signature in `cert` is one we already verified, byte for byte."""
        kind, epoch, view, digest = int(cert.kind), cert.epoch, cert.view, cert.digest
        return all(self._signatures.get((kind, epoch, view, digest, signer)) == signature
                   for signer, signature in cert.signatures)

    def unknown_in(self, cert: Certificate) -> int:
        """How many of `cert`'s signatures would need checking."""
        kind, epoch, view, digest = int(cert.kind), cert.epoch, cert.view, cert.digest
        return sum(1 for signer, signature in cert.signatures
                   if self._signatures.get((kind, epoch, view, digest, signer)) != signature)


def _verify_certificate(committee: CommitteeSpec, cert: Certificate, kind: VoteKind,
                        what: str, known: VerifiedVotes | None = None) -> None:
    if cert.kind is not kind:
        raise InvalidCertificate(f"{what} carries a {cert.kind.name.lower()} certificate")
    _check_epoch(committee, cert.epoch, what)
    if known is not None and known.covers(cert):
        cert.check_signers(committee)  # the signatures themselves were verified before
    else:
        cert.verify(committee)


def _verify_block_evidence(committee: CommitteeSpec, block: Block) -> None:
    for item in block.evidence:
        Evidence.decode(item).verify(committee)


def verify_message(committee: CommitteeSpec, msg: Message,
                   known: VerifiedVotes | None = None) -> None:
    """Raise a RemoteError unless every signature in `msg` is valid for `committee`.

    Semantic rules (views, leaders, parents) are the core's; this checks what needs keys.
    With `known`, certificate signatures already verified (byte for byte) are not checked
    again; the caller adds what this call verified to `known` afterwards.
    """
    if isinstance(msg, Vote):
        _check_epoch(committee, msg.epoch, "vote")
        if not 0 <= msg.signer < committee.n:
            raise BadSignature(f"vote names member index {msg.signer}, n={committee.n}")
        if not msg.verify(committee):
            raise BadSignature(f"{msg.kind.name.lower()} vote of member {msg.signer} for view "
                               f"{msg.view} does not verify")
    elif isinstance(msg, Proposal):
        b = msg.block
        _check_epoch(committee, b.epoch, "proposal")
        if not (known is not None and known.knows_proposal(
                    b.epoch, b.view, b.digest, b.proposer, msg.signature)) and \
                not statement_is_valid(committee, b.proposer, SignedKind.PROPOSE, b.view,
                                       b.digest, msg.signature):
            raise BadSignature(f"proposal of member {b.proposer} for view {b.view} "
                               "does not verify")
        _verify_block_evidence(committee, b)
    elif isinstance(msg, ProposalHeader):
        if known is not None and known.knows_proposal(committee.epoch, msg.view, msg.digest,
                                                      msg.proposer, msg.signature):
            return
        if not statement_is_valid(committee, msg.proposer, SignedKind.PROPOSE, msg.view,
                                  msg.digest, msg.signature):
            raise BadSignature(f"proposal header of member {msg.proposer} for view {msg.view} "
                               "does not verify")
    elif isinstance(msg, Notarization | Finalization):
        kind = VoteKind.NOTARIZE if isinstance(msg, Notarization) else VoteKind.FINALIZE
        what = type(msg).__name__.lower()
        _verify_certificate(committee, msg.certificate, kind, what, known)
        if msg.block is not None:
            if msg.block.digest != msg.certificate.digest or \
                    msg.block.view != msg.certificate.view:
                raise InvalidCertificate(f"{what}: block does not match the certificate")
            _check_epoch(committee, msg.block.epoch, what)
            _verify_block_evidence(committee, msg.block)
    elif isinstance(msg, Nullification):
        _verify_certificate(committee, msg.certificate, VoteKind.NULLIFY, "nullification",
                            known)
    elif isinstance(msg, EvidenceMessage):
        msg.evidence.verify(committee)
    elif isinstance(msg, NullificationsAnswer):
        for cert in msg.certificates:
            _verify_certificate(committee, cert, VoteKind.NULLIFY, "fetched nullification",
                                known)
    elif isinstance(msg, RecallAnswer):
        if not 0 <= msg.member < committee.n:
            raise BadSignature(f"recalled statements of member index {msg.member}, "
                               f"n={committee.n}")
        for st in msg.statements:
            if not statement_is_valid(committee, msg.member, st.kind, st.view, st.digest,
                                      st.signature):
                raise BadSignature(f"recalled {st.kind.name.lower()} of member {msg.member} "
                                   f"for view {st.view} does not verify")
    # SyncRequest, NullificationsRequest and RecallRequest carry no signature.


def verify_fetched(committee: CommitteeSpec,
                   chain: Sequence[tuple[Block, Certificate]]) -> None:
    """Check a fetched run of finalised blocks (catch-up) before handing it to the core.

    Every block must be finalised by its own certificate or by one later in the run, and the
    blocks must link by parent digest. Raises RemoteError (the peer sent bad data).
    """
    digests = [b.digest for b, _ in chain]
    checked: set[bytes] = set()
    for i, (block, cert) in enumerate(chain):
        _check_epoch(committee, block.epoch, "fetched block")
        if i and (block.parent != digests[i - 1] or block.height != chain[i - 1][0].height + 1):
            raise MalformedMessage(f"fetched block at height {block.height} does not link to "
                                   "its predecessor")
        if cert.digest not in digests[i:]:
            raise InvalidCertificate(f"fetched block at height {block.height}: its certificate "
                                     "does not finalise it or a later block of the run")
        key = cert.encode()
        if key not in checked:
            _verify_certificate(committee, cert, VoteKind.FINALIZE, "fetched certificate")
            checked.add(key)
