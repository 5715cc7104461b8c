"""Proof bundles (docs/formats.md §7): one log entry with everything that proves it is in the
committee's log, checkable offline against the committee alone.

A bundle is one deterministic CBOR array:

    ["proof-bundle", 1, committee record, index, leaf, [inclusion proof…], note,
     [block header…], certifier height, finalize certificate, entry block header]

`make_bundle_op` builds one from a member's read API (`coalitiond prove`), checking every
answer as `coalitiond.client` does; `verify_bundle` checks one with no network
(`coalitiond verify --bundle`). The tree (size, root) the entry is proven in rests on a quorum:
a block of the header chain commits to it (docs/protocol.md §7) and the finalize certificate
of the chain's last block carries `q` member signatures. The checkpoint note's member
signature is checked too, but nothing rests on it alone.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

from ..consensus.types import BlockHeader, Certificate, MalformedMessage, VoteKind
from ..log.checkpoint import Checkpoint
from ..log.records import committee_from_record, committee_record
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, RemoteError
from ..primitives.merkle import MAX_PROOF_LEN, leaf_hash
from ..verify import verify_inclusion
from .answers import (
    BadInclusionProof,
    MalformedResponse,
    VerificationFailed,
    VerifiedCheckpoint,
    certifier_of,
    decode_block,
    decode_header,
    expect_field,
    expect_hashes,
)
from .verifier import MAX_CHAIN, AnswerVerifier

BUNDLE_TYPE: Final = "proof-bundle"
BUNDLE_SCHEMA: Final = 1
#: A bundle is at most this many bytes (a note ≤ 64 KiB, a leaf ≤ 64 KiB + its fields,
#: ≤ 1 + MAX_CHAIN headers of ≤ 1 KiB, a certificate of ≤ 64 signatures).
MAX_BUNDLE_BYTES: Final = 512 * 1024
#: Items of the bundle array.
_FIELDS: Final = 11


class BadBundle(VerificationFailed):
    """A proof bundle that does not prove what it claims; the message says what failed."""


@dataclass(frozen=True, slots=True)
class ProofBundle:
    """The decoded fields of a bundle (docs/formats.md §7), in wire order."""

    committee: CommitteeSpec
    index: int
    leaf: bytes
    proof: tuple[bytes, ...]
    note: str
    headers: tuple[BlockHeader, ...]   # the checkpoint's block, then its descendants
    certifier: int                     # height of the header that commits to the note's root
    finalization: Certificate          # of the last header
    entry_header: BlockHeader          # the header of the block holding the entry

    def to_wire(self) -> list[Any]:
        return [BUNDLE_TYPE, BUNDLE_SCHEMA, committee_record(self.committee), self.index,
                self.leaf, list(self.proof), self.note, [h.encode() for h in self.headers],
                self.certifier, self.finalization.encode(), self.entry_header.encode()]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> ProofBundle:
        """Shape checks only (BadBundle naming the field); `verify` checks the meaning."""
        if len(data) > MAX_BUNDLE_BYTES:
            raise BadBundle(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
        try:
            obj = decode(data, max_size=MAX_BUNDLE_BYTES)
        except EncodingError as e:
            raise BadBundle(f"not a proof bundle: not deterministic CBOR "
                            f"({type(e).__name__}: {e})") from None
        if not (isinstance(obj, list) and len(obj) == _FIELDS and obj[:2] == [
                BUNDLE_TYPE, BUNDLE_SCHEMA]):
            raise BadBundle(f"not a proof bundle: expected [\"{BUNDLE_TYPE}\", "
                            f"{BUNDLE_SCHEMA}, …{_FIELDS} items]")
        (_, _, record, index, leaf, proof, note, headers, certifier, finalization,
         entry_header) = obj
        try:
            committee = committee_from_record(record)
        except MalformedMessage as e:
            raise BadBundle(f"committee: {e}") from None
        if not (isinstance(index, int) and not isinstance(index, bool) and index >= 0):
            raise BadBundle("index: must be an unsigned integer")
        if not isinstance(leaf, bytes):
            raise BadBundle("leaf: must be a byte string")
        if not (isinstance(proof, list) and len(proof) <= MAX_PROOF_LEN
                and all(isinstance(h, bytes) and len(h) == 32 for h in proof)):
            raise BadBundle(f"proof: must be at most {MAX_PROOF_LEN} 32-byte hashes")
        if not isinstance(note, str):
            raise BadBundle("note: must be text")
        if not (isinstance(headers, list) and 1 <= len(headers) <= MAX_CHAIN + 1):
            raise BadBundle(f"headers: must be 1..{MAX_CHAIN + 1} encoded block headers")
        if not (isinstance(certifier, int) and not isinstance(certifier, bool)
                and certifier >= 0):
            raise BadBundle("certifier: must be an unsigned integer")
        return cls(committee, index, leaf, tuple(proof), note,
                   tuple(_header(h, f"headers[{k}]") for k, h in enumerate(headers)),
                   certifier, _certificate(finalization), _header(entry_header, "entry header"))


def _header(raw: Any, what: str) -> BlockHeader:
    if not isinstance(raw, bytes):
        raise BadBundle(f"{what}: must be an encoded block header")
    try:
        return BlockHeader.decode(raw)
    except RemoteError as e:
        raise BadBundle(f"{what}: {e}") from None


def _certificate(raw: Any) -> Certificate:
    if not isinstance(raw, bytes):
        raise BadBundle("finalization: must be an encoded certificate")
    try:
        return Certificate.decode(raw)
    except (RemoteError, ValueError) as e:
        raise BadBundle(f"finalization: {e}") from None


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """What a bundle proved: entry `index` (`leaf`, of block `entry_header`, command
    `position`) is in the committee's log tree (`checkpoint.size`, `checkpoint.root`), which
    block `certifier` commits to and `finalization` (a quorum) finalised."""

    bundle: ProofBundle
    checkpoint: Checkpoint
    position: int
    command: bytes
    certifier: BlockHeader
    final: BlockHeader
    note_signers: tuple[int, ...]

    def summary(self) -> str:
        b, cp, c = self.bundle, self.checkpoint, self.bundle.committee
        e = b.entry_header
        signers = ",".join(str(i) for i in b.finalization.signers())
        return (f"OK: entry {b.index} (leaf hash {leaf_hash(b.leaf).hex()}) = command "
                f"{self.position} of block {e.height} ({e.digest.hex()}, view {e.view}) is in "
                f"the log of committee {c.committee_id.hex()} ({c.component_kind}/"
                f"{c.component_name}, epoch {c.epoch}) at size {cp.size} root {cp.root.hex()} "
                f"(height {cp.height}), committed to by block {self.certifier.height} and "
                f"finalised at height {self.final.height} (view {self.final.view}) by members "
                f"[{signers}] (q={c.quorum} of n={c.n})")


def verify_bundle(data: bytes, expect_committee: bytes | None = None) -> VerifiedBundle:
    """Check a bundle offline: raises `BadBundle` (or another `VerificationFailed`) naming
    the first thing that does not verify. `expect_committee` pins the committee id; without
    it the bundle's own committee record is the anchor (print its id for the reader)."""
    b = ProofBundle.decode(data)
    c = b.committee
    if expect_committee is not None and c.committee_id != expect_committee:
        raise BadBundle(f"committee: the bundle is for committee {c.committee_id.hex()}, "
                        f"expected {expect_committee.hex()}")
    verifier = AnswerVerifier(c)
    # 1. The note: a member's signature on this committee's checkpoint (not trusted alone).
    cp, note_signers = verifier.note(b.note, "note")
    # 2. The header chain: the note's block, linked to the last header, which q members
    #    finalised.
    first = b.headers[0]
    if (first.digest, first.height) != (cp.block_digest, cp.height):
        raise BadBundle(f"headers[0]: is not the block the note names (height {cp.height}, "
                        f"block {cp.block_digest.hex()[:16]})")
    for k, h in enumerate(b.headers):
        if h.epoch != c.epoch:
            raise BadBundle(f"headers[{k}]: block of epoch {h.epoch}, committee epoch "
                            f"{c.epoch}")
        if k and (h.parent != b.headers[k - 1].digest or h.height != b.headers[k - 1].height
                  + 1):
            raise BadBundle(f"headers[{k}]: block {h.height} does not link to block "
                            f"{b.headers[k - 1].height} (parent digest)")
    last, cert = b.headers[-1], b.finalization
    if cert.kind is not VoteKind.FINALIZE or (cert.digest, cert.view) != (last.digest,
                                                                          last.view):
        raise BadBundle(f"finalization: is not a finalize certificate of block {last.height} "
                        "(the last header)")
    try:
        cert.verify(c)
    except RemoteError as e:
        raise BadBundle(f"finalization of block {last.height}: {e}") from None
    # 3. The certified root: a finalised header commits to the note's (size, root).
    certifier = certifier_of(cp, b.headers, b.certifier, "certifier")
    # 4. The entry: in that certified tree, and the command of the block it names.
    if b.index >= cp.size:
        raise BadInclusionProof(f"entry {b.index}: outside the certified tree of size "
                                f"{cp.size}")
    if not verify_inclusion(b.leaf, b.index, cp.size, b.proof, cp.root):
        raise BadInclusionProof(f"entry {b.index}: the inclusion proof does not lead to the "
                                f"certified root {cp.root.hex()[:16]} (size {cp.size})")
    epoch, height, block_digest, position, command = _leaf_fields(b.leaf, b.index)
    if epoch != c.epoch or not 1 <= height <= cp.height:
        raise BadBundle(f"entry {b.index}: names epoch {epoch} block {height}, outside the "
                        f"committee's epoch {c.epoch} blocks 1..{cp.height}")
    e_head = b.entry_header
    if (e_head.digest, e_head.height) != (block_digest, height):
        raise BadBundle(f"entry header: is not the block the entry names (height {height}, "
                        f"block {block_digest.hex()[:16]})")
    return VerifiedBundle(b, cp, position, command, certifier, last, note_signers)


def _leaf_fields(leaf: bytes, index: int) -> tuple[int, int, bytes, int, bytes]:
    """(epoch, height, block digest, position, command) of an entry leaf (docs/formats.md
    §2): `["entry", 1, epoch, height, block_digest, position, command]`."""
    try:
        fields = decode(leaf)
    except EncodingError as e:
        raise BadBundle(f"entry {index}: the leaf is not deterministic CBOR ({e})") from None
    if not (isinstance(fields, list) and len(fields) == 7 and fields[:2] == ["entry", 1]):
        raise BadBundle(f"entry {index}: the leaf is not [\"entry\", 1, …7 items]")
    _, _, epoch, height, digest, position, command = fields
    if not (all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                for x in (epoch, height, position))
            and isinstance(digest, bytes) and len(digest) == 32 and isinstance(command, bytes)):
        raise BadBundle(f"entry {index}: the leaf's fields have the wrong types")
    return epoch, height, digest, position, command


# ---------------------------------------------------------------------------------------
# Making a bundle from a member's read API (the checkpoint and proof checked as the client
# checks them; the entry's header by `verify_bundle`, through the digest its leaf names)

Request = tuple[str, dict[str, str]]


def make_bundle_op(verifier: AnswerVerifier, index: int
                   ) -> Generator[Request, Any, ProofBundle]:
    """The requests that build the bundle of entry `index` against the newest certified
    checkpoint (run with `CoalitionClient._run`); raises what the client raises, and
    `BadBundle` when the entry is not certified yet."""
    obj = yield ("/v1/checkpoint", {})
    vcp: VerifiedCheckpoint = verifier.checkpoint(obj)
    if index >= vcp.size:
        raise BadBundle(f"entry {index}: not in the newest certified checkpoint (size "
                        f"{vcp.size}, height {vcp.height}); try again once a later block "
                        "certifies it")
    chain = [decode_header(raw, "checkpoint") for raw in expect_field(obj, "chain", list,
                                                                       "checkpoint")]
    inc = yield ("/v1/proof/inclusion", {"index": str(index), "size": str(vcp.size)})
    leaf = expect_field(inc, "leaf", bytes, f"entry {index}")
    proof = expect_hashes(inc, "proof", f"entry {index}")
    if not verify_inclusion(leaf, index, vcp.size, proof, vcp.root):
        raise BadInclusionProof(f"entry {index}: inclusion proof does not lead to the root of "
                                f"checkpoint {vcp.height} (size {vcp.size})")
    entry = verifier.entry(index, leaf, vcp)
    if entry.height == vcp.height:
        entry_header = vcp.block.header
    else:
        page = yield ("/v1/blocks", {"from": str(entry.height), "limit": "1"})
        items = expect_field(page, "blocks", list, "blocks")
        if not items:
            raise MalformedResponse(f"blocks: the member holds no block {entry.height}")
        entry_header = decode_header_of(expect_field(items[0], "block", bytes, "blocks"))
    return ProofBundle(verifier.committee, index, leaf, tuple(proof), vcp.note,
                       (vcp.block.header, *chain), vcp.certifier.height, vcp.finalization,
                       entry_header)


def decode_header_of(raw: Any) -> BlockHeader:
    """The header of an encoded block (a read API answer)."""
    return decode_block(raw, "block").header
