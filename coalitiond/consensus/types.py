"""Consensus wire types: blocks, votes, certificates.

These are the contract between the consensus core, the store (which archives blocks and
certificates), the transport and integrators (who verify certificates offline). Encodings
are deterministic CBOR arrays with a leading type string and schema version; decoders
refuse anything else with a RemoteError naming the problem.

Signed payload of a vote (the same bytes for every kind, under the kind's domain tag):

    encode(["vote", 1, kind, committee_id, epoch, view, digest])

`digest` is the block digest for notarise/finalise and 32 zero bytes for nullify. Naming the
committee and epoch in every signed payload is what stops replay into another committee or
epoch (DESIGN §2.2).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..primitives.committee import CommitteeSpec
from ..primitives.crypto import SIGNATURE_LEN, SigningKey, is_valid
from ..primitives.encoding import decode, encode
from ..primitives.errors import LocalError, RemoteError
from ..primitives.identity import digest as blake3_digest
from ..primitives.merkle import EMPTY_ROOT

SCHEMA: Final = 1
#: Blocks are at schema 2: they commit to the log's (size, root) and hash as a header.
BLOCK_SCHEMA: Final = 2
ZERO_DIGEST: Final = b"\x00" * 32
#: The RFC 6962 root of the empty log: what genesis (nothing executed) commits to.
EMPTY_LOG_ROOT: Final = EMPTY_ROOT
#: Hard limits (TigerBeetle habit): every size that arrives from outside is bounded.
MAX_COMMANDS_PER_BLOCK: Final = 10_000
MAX_COMMAND_SIZE: Final = 64 * 1024
MAX_BLOCK_SIZE: Final = 8 * 1024 * 1024
MAX_EVIDENCE_PER_BLOCK: Final = 64
MAX_EVIDENCE_SIZE: Final = 4 * 1024


class MalformedMessage(RemoteError):
    """Bytes that decode as CBOR but not as the consensus structure they claim to be."""


class InvalidCertificate(RemoteError):
    """A certificate that does not carry q valid, distinct member signatures."""


class VoteKind(enum.IntEnum):
    NOTARIZE = 0
    FINALIZE = 1
    NULLIFY = 2

    @property
    def domain_tag(self) -> bytes:
        return _VOTE_TAGS[self]


_VOTE_TAGS: Final = {
    VoteKind.NOTARIZE: b"coalitiond/notarize/v1",
    VoteKind.FINALIZE: b"coalitiond/finalize/v1",
    VoteKind.NULLIFY: b"coalitiond/nullify/v1",
}


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def _is_bytes(x: Any, n: int | None = None) -> bool:
    return isinstance(x, bytes) and (n is None or len(x) == n)


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


@dataclass(frozen=True, slots=True)
class CertifiedRoots:
    """What a block vouches for (docs/protocol.md §7): after every block up to and including
    `height`, the component state root and the log's RFC 6962 (size, root).

    Every member derives these from the finalised chain alone, so all honest members agree on
    them; a block carries them for a height below its own (execution lags consensus) and its
    voters check them against their own replica before notarising."""

    height: int
    state_root: bytes
    log_size: int
    log_root: bytes


#: Nothing executed yet: height 0, the zero state root, the empty log.
NOTHING_EXECUTED: Final = CertifiedRoots(0, ZERO_DIGEST, 0, EMPTY_LOG_ROOT)


def _list_digest(items: Sequence[bytes]) -> bytes:
    return blake3_digest(encode(list(items)))


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A block without its commands and evidence, which it names by digest (docs/formats.md
    §2). The block digest is the BLAKE3 of the header's encoding, so a header with a finalize
    certificate proves the block's roots without its commands (checkpoints, proof bundles,
    evidence against a wrong root)."""

    epoch: int
    height: int
    view: int
    parent: bytes
    proposer: int
    commands_digest: bytes
    executed_height: int
    state_root: bytes
    log_size: int
    log_root: bytes
    evidence_digest: bytes

    def to_wire(self) -> list[Any]:
        return ["block-header", BLOCK_SCHEMA, self.epoch, self.height, self.view, self.parent,
                self.proposer, self.commands_digest, self.executed_height, self.state_root,
                self.log_size, self.log_root, self.evidence_digest]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @property
    def digest(self) -> bytes:
        return blake3_digest(self.encode())

    @property
    def roots(self) -> CertifiedRoots:
        return CertifiedRoots(self.executed_height, self.state_root, self.log_size,
                              self.log_root)

    @classmethod
    def from_wire(cls, obj: Any) -> BlockHeader:
        _expect(isinstance(obj, list) and len(obj) == 13,
                "block header: expected a 13-item array")
        (tag, schema, epoch, height, view, parent, proposer, commands_digest, executed_height,
         state_root, log_size, log_root, evidence_digest) = obj
        _expect(tag == "block-header" and schema == BLOCK_SCHEMA,
                "block header: wrong type tag or schema")
        _expect(all(_is_uint(x) for x in (epoch, height, view, proposer, executed_height,
                                          log_size)),
                "block header: epoch/height/view/proposer/executed_height/log_size must be "
                "unsigned integers")
        _expect(all(_is_bytes(x, 32) for x in (parent, commands_digest, state_root, log_root,
                                               evidence_digest)),
                "block header: parent, digests and roots must be 32 bytes")
        _check_roots(height, executed_height, state_root, log_size, log_root)
        return cls(epoch, height, view, parent, proposer, commands_digest, executed_height,
                   state_root, log_size, log_root, evidence_digest)

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        return cls.from_wire(decode(data, max_size=MAX_HEADER_SIZE))


#: A header is 13 small items; anything larger is not one.
MAX_HEADER_SIZE: Final = 1024


def _check_roots(height: int, executed_height: int, state_root: bytes, log_size: int,
                 log_root: bytes) -> None:
    _expect(height == 0 or executed_height < height,
            "block: executed_height must be below height")
    _expect(executed_height > 0 or (state_root == ZERO_DIGEST and log_size == 0
                                    and log_root == EMPTY_LOG_ROOT),
            "block: executed_height 0 carries the zero state root and the empty log")


@dataclass(frozen=True, slots=True)
class Block:
    """One proposed block (SPEC §2).

    `executed_height`, `state_root`, `log_size`, `log_root` are the block's certified roots
    (`CertifiedRoots`, docs/protocol.md §7): the state root and the log's size and root after
    every block up to and including `executed_height` (< height). Execution lags consensus;
    voters check the claim against their own replica before notarising.
    """

    epoch: int
    height: int
    view: int
    parent: bytes
    proposer: int
    commands: tuple[bytes, ...]
    executed_height: int
    state_root: bytes
    evidence: tuple[bytes, ...] = ()
    log_size: int = 0
    log_root: bytes = EMPTY_LOG_ROOT
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", self.header.digest)

    @classmethod
    def with_roots(cls, epoch: int, height: int, view: int, parent: bytes, proposer: int,
                   commands: tuple[bytes, ...], roots: CertifiedRoots,
                   evidence: tuple[bytes, ...] = ()) -> Block:
        return cls(epoch, height, view, parent, proposer, commands, roots.height,
                   roots.state_root, evidence, roots.log_size, roots.log_root)

    @property
    def header(self) -> BlockHeader:
        return BlockHeader(self.epoch, self.height, self.view, self.parent, self.proposer,
                           _list_digest(self.commands), self.executed_height, self.state_root,
                           self.log_size, self.log_root, _list_digest(self.evidence))

    @property
    def roots(self) -> CertifiedRoots:
        return CertifiedRoots(self.executed_height, self.state_root, self.log_size,
                              self.log_root)

    def to_wire(self) -> list[Any]:
        return [
            "block", BLOCK_SCHEMA, self.epoch, self.height, self.view, self.parent,
            self.proposer, list(self.commands), self.executed_height, self.state_root,
            self.log_size, self.log_root, list(self.evidence),
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> Block:
        _expect(isinstance(obj, list) and len(obj) == 13, "block: expected a 13-item array")
        (tag, schema, epoch, height, view, parent, proposer, commands, executed_height,
         state_root, log_size, log_root, evidence) = obj
        _expect(tag == "block" and schema == BLOCK_SCHEMA, "block: wrong type tag or schema")
        _expect(all(_is_uint(x) for x in (epoch, height, view, proposer, executed_height,
                                          log_size)),
                "block: epoch/height/view/proposer/executed_height/log_size must be unsigned "
                "integers")
        _expect(_is_bytes(parent, 32) and _is_bytes(state_root, 32) and _is_bytes(log_root, 32),
                "block: parent, state_root and log_root must be 32 bytes")
        _expect(isinstance(commands, list) and len(commands) <= MAX_COMMANDS_PER_BLOCK,
                f"block: at most {MAX_COMMANDS_PER_BLOCK} commands")
        _expect(all(_is_bytes(c) and len(c) <= MAX_COMMAND_SIZE for c in commands),
                f"block: commands must be byte strings of at most {MAX_COMMAND_SIZE} bytes")
        _expect(isinstance(evidence, list) and len(evidence) <= MAX_EVIDENCE_PER_BLOCK,
                f"block: at most {MAX_EVIDENCE_PER_BLOCK} evidence items")
        _expect(all(_is_bytes(e) and len(e) <= MAX_EVIDENCE_SIZE for e in evidence),
                "block: evidence items must be bounded byte strings")
        _check_roots(height, executed_height, state_root, log_size, log_root)
        return cls(epoch, height, view, parent, proposer, tuple(commands), executed_height,
                   state_root, tuple(evidence), log_size, log_root)

    @classmethod
    def decode(cls, data: bytes) -> Block:
        return cls.from_wire(decode(data, max_size=MAX_BLOCK_SIZE))


def genesis_block(committee: CommitteeSpec) -> Block:
    """Height 0: every member derives the same one from the committee alone."""
    return Block(committee.epoch, 0, 0, committee.committee_id, 0, (), 0, ZERO_DIGEST)


def vote_payload(kind: VoteKind, committee_id: bytes, epoch: int, view: int,
                 digest: bytes) -> bytes:
    return encode(["vote", SCHEMA, int(kind), committee_id, epoch, view, digest])


@dataclass(frozen=True, slots=True)
class Vote:
    """One member's signed vote. For NULLIFY, `digest` is ZERO_DIGEST."""

    kind: VoteKind
    epoch: int
    view: int
    digest: bytes
    signer: int
    signature: bytes

    @classmethod
    def sign(cls, key: SigningKey, committee: CommitteeSpec, signer: int, kind: VoteKind,
             view: int, digest: bytes) -> Vote:
        if kind is VoteKind.NULLIFY and digest != ZERO_DIGEST:
            raise LocalError("nullify votes carry the zero digest")
        payload = vote_payload(kind, committee.committee_id, committee.epoch, view, digest)
        return cls(kind, committee.epoch, view, digest, signer, key.sign(kind.domain_tag, payload))

    def verify(self, committee: CommitteeSpec) -> bool:
        """True iff the signature is member `signer`'s for this committee and epoch."""
        if self.epoch != committee.epoch or not 0 <= self.signer < committee.n:
            return False
        payload = vote_payload(self.kind, committee.committee_id, self.epoch, self.view,
                               self.digest)
        return is_valid(committee.members[self.signer], self.kind.domain_tag, payload,
                        self.signature)

    def to_wire(self) -> list[Any]:
        return ["vote", SCHEMA, int(self.kind), self.epoch, self.view, self.digest, self.signer,
                self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> Vote:
        _expect(isinstance(obj, list) and len(obj) == 8, "vote: expected an 8-item array")
        tag, schema, kind, epoch, view, digest, signer, signature = obj
        _expect(tag == "vote" and schema == SCHEMA, "vote: wrong type tag or schema")
        _expect(kind in (0, 1, 2) and not isinstance(kind, bool), "vote: unknown kind")
        _expect(all(_is_uint(x) for x in (epoch, view, signer)),
                "vote: epoch/view/signer must be unsigned integers")
        _expect(_is_bytes(digest, 32), "vote: digest must be 32 bytes")
        _expect(_is_bytes(signature, SIGNATURE_LEN), "vote: signature must be 64 bytes")
        vk = VoteKind(kind)
        _expect(vk is not VoteKind.NULLIFY or digest == ZERO_DIGEST,
                "vote: nullify must carry the zero digest")
        return cls(vk, epoch, view, digest, signer, signature)


@dataclass(frozen=True, slots=True)
class Certificate:
    """`q` or more signatures of distinct members on one (kind, epoch, view, digest)."""

    kind: VoteKind
    epoch: int
    view: int
    digest: bytes
    signatures: tuple[tuple[int, bytes], ...]  # (member index, signature), ascending index

    @classmethod
    def from_votes(cls, votes: Sequence[Vote]) -> Certificate:
        if not votes:
            raise LocalError("certificate from no votes")
        first = votes[0]
        for v in votes:
            if (v.kind, v.epoch, v.view, v.digest) != (first.kind, first.epoch, first.view,
                                                         first.digest):
                raise LocalError("certificate from votes on different payloads")
        by_signer = {v.signer: v.signature for v in votes}
        return cls(first.kind, first.epoch, first.view, first.digest,
                   tuple(sorted(by_signer.items())))

    def signers(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.signatures)

    def check_signers(self, committee: CommitteeSpec) -> None:
        """Raise InvalidCertificate unless the epoch is the committee's and the signers are q
        or more distinct, ascending member indices: everything `verify` checks but the
        signatures themselves."""
        if self.epoch != committee.epoch:
            raise InvalidCertificate(
                f"certificate for epoch {self.epoch}, committee is at epoch {committee.epoch}")
        indices = self.signers()
        if list(indices) != sorted(set(indices)):
            raise InvalidCertificate("certificate signers are not distinct and ascending")
        if len(indices) < committee.quorum:
            raise InvalidCertificate(
                f"certificate has {len(indices)} signatures, quorum is {committee.quorum}")
        for index in indices:
            if not 0 <= index < committee.n:
                raise InvalidCertificate(f"certificate names member index {index}, n={committee.n}")

    def verify(self, committee: CommitteeSpec) -> None:
        """Raise InvalidCertificate unless q distinct members of `committee` signed it."""
        self.check_signers(committee)
        payload = vote_payload(self.kind, committee.committee_id, self.epoch, self.view,
                               self.digest)
        for index, signature in self.signatures:
            if not is_valid(committee.members[index], self.kind.domain_tag, payload, signature):
                raise InvalidCertificate(
                    f"certificate signature of member {index} does not verify "
                    f"({self.kind.name.lower()}, view {self.view})")

    def to_wire(self) -> list[Any]:
        return ["certificate", SCHEMA, int(self.kind), self.epoch, self.view, self.digest,
                [[i, s] for i, s in self.signatures]]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> Certificate:
        _expect(isinstance(obj, list) and len(obj) == 7, "certificate: expected a 7-item array")
        tag, schema, kind, epoch, view, digest, sigs = obj
        _expect(tag == "certificate" and schema == SCHEMA, "certificate: wrong type tag or schema")
        _expect(kind in (0, 1, 2) and not isinstance(kind, bool), "certificate: unknown kind")
        _expect(_is_uint(epoch) and _is_uint(view), "certificate: epoch/view must be unsigned")
        _expect(_is_bytes(digest, 32), "certificate: digest must be 32 bytes")
        _expect(isinstance(sigs, list) and 0 < len(sigs) <= 1024,
                "certificate: signatures must be a non-empty bounded array")
        pairs: list[tuple[int, bytes]] = []
        for item in sigs:
            _expect(isinstance(item, list) and len(item) == 2 and _is_uint(item[0])
                    and _is_bytes(item[1], SIGNATURE_LEN),
                    "certificate: each signature must be [member index, 64 bytes]")
            pairs.append((item[0], item[1]))
        return cls(VoteKind(kind), epoch, view, digest, tuple(pairs))

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        return cls.from_wire(decode(data, max_size=256 * 1024))
