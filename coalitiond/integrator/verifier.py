"""Verification of the read API's answers, pure: the committee (its member keys and quorum) is
the only trust anchor. Each check raises a `VerificationFailed` subclass naming what did not
verify."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..components.base import BadStateProof, check_state_proof
from ..consensus.evidence import Evidence
from ..consensus.root_evidence import WRONG_ROOT_KIND, WrongRoot
from ..consensus.types import Block, BlockHeader, Certificate, InvalidCertificate, Vote, VoteKind
from ..log.chain import ChainVerifier, check_certificate
from ..log.checkpoint import Checkpoint, CheckpointError, key_name, split_note, verify_checkpoint
from ..log.records import FinalizedBlock, entry_leaf
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode
from ..primitives.errors import EncodingError, RemoteError
from ..primitives.identity import hash_structure
from ..verify import verify_inclusion
from .answers import (
    BadBlocks,
    BadCertificate,
    BadCheckpoint,
    BadEvidence,
    BadInclusionProof,
    BadStateRead,
    BlockPage,
    LogEntry,
    MalformedResponse,
    StateRead,
    UncertifiedState,
    UnprovenRead,
    VerifiedCheckpoint,
    certifier_of,
    decode_block,
    decode_certificate,
    decode_header,
    expect_field,
    expect_hashes,
    expect_uint,
)
from .proven_reads import (
    PROVEN_READS,
    ProvenRead,
    _NotAnItem,
    same_value,
    show_value,
)

#: Blocks linking a certified block to the descendant whose finalization covers it.
MAX_CHAIN: Final = 128


# ---------------------------------------------------------------------------------------
# Verification (pure; the committee is the only trust anchor)


class AnswerVerifier:
    def __init__(self, committee: CommitteeSpec) -> None:
        self.committee = committee

    def note(self, note: Any, what: str) -> tuple[Checkpoint, tuple[int, ...]]:
        """The checkpoint of a note signed by at least one member of the committee."""
        if not isinstance(note, str):
            raise MalformedResponse(f"{what}: note must be text")
        c = self.committee
        try:
            text, sigs = split_note(note)
            cp = Checkpoint.parse_text(text)
        except CheckpointError as e:
            raise BadCheckpoint(f"{what}: {e}") from None
        if cp.committee_id != c.committee_id or cp.epoch != c.epoch:
            raise BadCheckpoint(f"{what}: checkpoint of committee {cp.committee_id.hex()[:16]} "
                                f"epoch {cp.epoch}, expected {c.committee_id.hex()[:16]} "
                                f"epoch {c.epoch}")
        names = {sig.name for sig in sigs}
        signers = []
        for index, member in enumerate(c.members):
            if key_name(cp.origin, member) not in names:
                continue
            try:
                verify_checkpoint(note, member)
            except CheckpointError as e:
                raise BadCheckpoint(f"{what}: member {index}: {e}") from None
            signers.append(index)
        if not signers:
            raise BadCheckpoint(f"{what}: the note carries no signature of a committee member")
        return cp, tuple(signers)

    def finalized(self, block: Block, chain_raw: Any, cert_raw: Any, what: str) -> Certificate:
        """Check `block` final: `chain_raw` (encoded block headers) links it to the block
        that the finalization `cert_raw` certifies (itself when the chain is empty)."""
        return self._final_chain(block, chain_raw, cert_raw, what)[1]

    def _final_chain(self, block: Block, chain_raw: Any, cert_raw: Any, what: str
                     ) -> tuple[list[BlockHeader], Certificate]:
        """`block` and the encoded headers after it, linked by parent digest and height, the
        last one finalised by `cert_raw`: the headers, `block`'s first, and the certificate."""
        if block.epoch != self.committee.epoch:
            raise BadCertificate(f"{what}: block of epoch {block.epoch}, committee epoch "
                                 f"{self.committee.epoch}")
        if not (isinstance(chain_raw, list) and len(chain_raw) <= MAX_CHAIN):
            raise MalformedResponse(f"{what}: chain must be a list of at most {MAX_CHAIN} "
                                    "blocks")
        last = block.header
        chain = [last]
        for raw in chain_raw:
            nxt = decode_header(raw, what)
            if nxt.parent != last.digest or nxt.height != last.height + 1:
                raise BadCertificate(f"{what}: chain block {nxt.height} does not link to "
                                     f"block {last.height}")
            last = nxt
            chain.append(nxt)
        cert = decode_certificate(cert_raw, what)
        try:
            check_certificate(self.committee, cert, VoteKind.FINALIZE, last)
        except RemoteError as e:
            raise BadCertificate(f"{what}: finalization of height {last.height}: {e}") from None
        return chain, cert

    def checkpoint(self, obj: Any) -> VerifiedCheckpoint:
        what = "checkpoint"
        cp, signers = self.note(expect_field(obj, "note", str, what), what)
        block = decode_block(expect_field(obj, "block", bytes, what), what)
        if block.digest != cp.block_digest or block.height != cp.height:
            raise BadCheckpoint(f"{what}: the block sent is not the block the note names "
                                f"(height {cp.height})")
        chain, cert = self._final_chain(block, expect_field(obj, "chain", list, what),
                                        expect_field(obj, "finalization", bytes, what), what)
        # The size and root must not rest on the note's signer: a finalised block of the
        # chain commits to them (docs/protocol.md §7), and a quorum finalised it.
        certifier = certifier_of(cp, chain, expect_uint(obj, "certifier", what), what)
        return VerifiedCheckpoint(cp, obj["note"], signers, block, cert, certifier)


    def entries(self, obj: Any, start: int, cp: VerifiedCheckpoint) -> list[LogEntry]:
        """The entries of a page, each proven in the checkpoint's tree. Their contents are
        not trusted yet: `certify_entries` checks them against their certified blocks."""
        what = "entries"
        items = expect_field(obj, "entries", list, what)
        out = []
        for k, item in enumerate(items):
            index = start + k
            w = f"entry {index}"
            if expect_uint(item, "index", w) != index:
                raise MalformedResponse(f"{w}: entries are not consecutive from {start}")
            leaf = expect_field(item, "leaf", bytes, w)
            proof = expect_hashes(item, "proof", w)
            if not verify_inclusion(leaf, index, cp.size, proof, cp.root):
                raise BadInclusionProof(f"{w}: inclusion proof does not lead to the root of "
                                        f"checkpoint {cp.height} (size {cp.size})")
            out.append(self.entry(index, leaf, cp))
        return out

    def entry(self, index: int, leaf: bytes, cp: VerifiedCheckpoint) -> LogEntry:
        w = f"entry {index}"
        try:
            fields = decode(leaf)
        except EncodingError as e:
            raise MalformedResponse(f"{w}: leaf is not CBOR ({e})") from None
        if not (isinstance(fields, list) and len(fields) == 7 and fields[:2] == ["entry", 1]):
            raise MalformedResponse(f"{w}: leaf is not [\"entry\", 1, ...7 items]")
        _, _, epoch, height, digest, position, command = fields
        if not (epoch == self.committee.epoch and isinstance(height, int)
                and isinstance(digest, bytes) and isinstance(position, int)
                and isinstance(command, bytes) and not isinstance(height, bool)
                and not isinstance(position, bool) and position >= 0):
            raise MalformedResponse(f"{w}: leaf fields have the wrong types or epoch")
        if not 1 <= height <= cp.height:
            raise BadInclusionProof(f"{w}: names block {height}, outside the checkpoint's "
                                    f"blocks 1..{cp.height}")
        return LogEntry(index, height, digest, position, command, leaf)

    @staticmethod
    def certify_entries(entries: list[LogEntry], blocks: Mapping[int, Block]) -> None:
        """Each entry must be `entry_leaf(block, position)` of the final block at its height
        (so its command is one the committee finalised, whatever the note's signer says),
        and consecutive entries must be consecutive commands of those blocks (no command
        left out or repeated inside the page)."""
        previous: LogEntry | None = None
        for e in entries:
            w = f"entry {e.index}"
            block = blocks.get(e.height)
            if block is None:
                raise BadInclusionProof(f"{w}: its block {e.height} was not shown final")
            if not (e.block_digest == block.digest and e.position < len(block.commands)
                    and e.leaf == entry_leaf(block, e.position)):
                raise BadInclusionProof(f"{w}: is not command {e.position} of the certified "
                                        f"block {e.height}")
            if previous is not None:
                if e.height == previous.height:
                    follows = e.position == previous.position + 1
                else:
                    skipped = range(previous.height + 1, e.height)
                    follows = (e.height > previous.height and e.position == 0
                               and previous.position == len(blocks[previous.height].commands)
                               - 1 and all(h in blocks and not blocks[h].commands
                                           for h in skipped))
                if not follows:
                    raise BadInclusionProof(f"{w}: does not follow entry {previous.index} in "
                                            "the certified blocks (an entry left out or "
                                            "repeated)")
            previous = e

    def blocks(self, obj: Any, start: int, after: Block | None) -> BlockPage:
        what = "blocks"
        items = expect_field(obj, "blocks", list, what)
        head = expect_uint(obj, "head", what)
        if items and expect_uint(items[0], "height", what) != start:
            raise BadBlocks(f"{what}: the page starts at height {items[0]['height']}, not at "
                            f"the {start} asked")
        chain = ChainVerifier(self.committee, after)
        final: list[FinalizedBlock] = []
        first = None
        for item in items:
            w = f"block {expect_uint(item, 'height', what)}"
            block = decode_block(expect_field(item, "block", bytes, w), w)
            if block.height != item["height"]:
                raise MalformedResponse(f"{w}: the block bytes hold height {block.height}")
            first = block.height if first is None else first
            fin, nota = item.get("finalization"), item.get("notarization")
            raw_votes = expect_field(item, "votes", list, w)
            votes = []
            for raw in raw_votes:
                try:
                    vote = Vote.from_wire(decode(raw) if isinstance(raw, bytes) else None)
                except RemoteError as e:
                    raise MalformedResponse(f"{w}: a vote does not decode: {e}") from None
                if vote.kind is VoteKind.NULLIFY or (vote.epoch, vote.view, vote.digest) != (
                        block.epoch, block.view, block.digest) or not vote.verify(self.committee):
                    raise BadBlocks(f"{w}: the vote of member {vote.signer} is not a valid vote "
                                    "for this block")
                votes.append(vote)
            note = expect_field(item, "checkpoint", str, w)
            cp, _ = self.note(note, f"{w} checkpoint")
            if (cp.height, cp.block_digest) != (block.height, block.digest):
                raise BadCheckpoint(f"{w}: its checkpoint names another block")
            fb = FinalizedBlock(
                block, None if fin is None else decode_certificate(fin, w),
                None if nota is None else decode_certificate(nota, w), tuple(votes), note)
            try:
                final.extend(chain.feed(fb))
            except RemoteError as e:
                cert_failed = isinstance(e, InvalidCertificate) or "certificate" in str(e)
                raise (BadCertificate if cert_failed else BadBlocks)(f"{w}: {e}") from None
        nxt = final[-1].height + 1 if final else (first if first is not None else
                                                   expect_uint(obj, "next", what))
        return BlockPage(tuple(final), nxt, head)

    def state(self, obj: Any, name: str, args: Mapping[str, Any], allow_uncertified: bool,
              allow_unproven: bool) -> StateRead:
        what = f"state read {name!r}"
        c = self.committee
        signature = expect_field(obj, "component_signature", str, what)
        if not signature.startswith(c.component_kind + "/"):
            raise BadStateRead(f"{what}: component {signature!r} is not a "
                               f"{c.component_kind!r} component")
        dedup_root = expect_field(obj, "dedup_root", bytes, what)
        component_root = expect_field(obj, "component_root", bytes, what)
        executor_root = expect_field(obj, "executor_root", bytes, what)
        executed_height = expect_uint(obj, "executed_height", what)
        preimage: list[Any] = [signature, dedup_root, component_root]
        if "stamp" in obj:
            preimage.append(obj["stamp"])
        if hash_structure("executor-state", 1, *preimage) != executor_root:
            raise BadStateRead(f"{what}: the executor-root pieces do not hash to executor_root")
        result = obj.get("result")
        proof = result.get("state_proof") if isinstance(result, dict) else None
        spec = PROVEN_READS.get((signature, name))
        proven: bytes | None = None
        unproven: dict[str, Any] = {}
        if spec is not None:
            if proof is None:
                raise BadStateRead(f"{what}: a {signature} {name!r} read must carry a state "
                                   "proof")
            result, proven, unproven = self.proven(spec, result, proof, component_root, args,
                                                   what)
        elif proof is not None:
            raise BadStateRead(f"{what}: unverifiable: the client does not know what a "
                               f"{signature} {name!r} proof proves")
        elif not allow_unproven:
            raise UnprovenRead(f"{what}: carries no state proof, so its result is the "
                               "member's word (pass allow_unproven=True to accept it as such)")
        certified = obj.get("certified")
        if certified is None:
            if not allow_uncertified:
                raise UncertifiedState(f"{what}: the member holds no finalised block that "
                                       f"certifies executor root {executor_root.hex()[:16]}")
            return StateRead(result, proven, executed_height, executor_root, component_root,
                             None, None, spec is not None, unproven)
        block = decode_block(expect_field(certified, "block", bytes, what), what)
        self.finalized(block, expect_field(certified, "chain", list, what),
                       expect_field(certified, "finalization", bytes, what), what)
        if block.state_root != executor_root:
            raise BadStateRead(f"{what}: the certified block {block.height} commits to "
                               f"another state root")
        return StateRead(result, proven, executed_height, executor_root, component_root,
                         block, block.executed_height, spec is not None, unproven)

    @staticmethod
    def proven(spec: ProvenRead, result: dict[str, Any], proof: Any, component_root: bytes,
               args: Mapping[str, Any], what: str
               ) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
        """(the result rebuilt from the proven leaf, the leaf, the member's unproven extra
        fields) — after checking the leaf is the asked item, in the read's own tree."""
        try:
            leaf = check_state_proof(proof, component_root)
        except BadStateProof as e:
            raise BadStateRead(f"{what}: {e}") from None
        pre = proof["root_preimage"]
        if not (pre[0] == spec.state_type and pre[1] == 1 and len(pre) > spec.tree_at
                and len(pre) > spec.size_at and pre[spec.tree_at] == proof["tree_root"]):
            raise BadStateRead(f"{what}: the proof is not for the {spec.item} tree of "
                               f"{spec.state_type} (root preimage position {spec.tree_at})")
        if pre[spec.size_at] != proof["size"]:
            raise BadStateRead(f"{what}: the proof's tree size {proof['size']} is not the "
                               f"{pre[spec.size_at]!r} items of the state")
        try:
            key, item = spec.leaf(leaf)
        except (_NotAnItem, EncodingError, RemoteError, TypeError, ValueError) as e:
            raise BadStateRead(f"{what}: the proven leaf is not a {spec.item}: {e}") from None
        asked = spec.asked(args)
        if not same_value(key, asked):
            raise BadStateRead(f"{what}: the proof is for {spec.item} {show_value(key)}, not the "
                               f"{show_value(asked)} asked")
        if spec.index is not None and proof["index"] != spec.index(key):
            raise BadStateRead(f"{what}: the proven leaf sits at index {proof['index']}, "
                               f"{spec.item} {show_value(key)} is at {spec.index(key)}")
        rebuilt = {spec.item: item, **spec.derived(leaf, proof), "state_proof": proof}
        unproven: dict[str, Any] = {}
        for name in sorted(result):
            if name in spec.unproven:
                unproven[name] = result[name]
            elif name not in rebuilt:
                raise BadStateRead(f"{what}: result field {name!r} is not covered by the proof")
            elif not same_value(result[name], rebuilt[name]):
                raise BadStateRead(f"{what}: the result's {name!r} is not what the proven "
                                   "leaf says")
        return rebuilt, leaf, unproven

    def evidence(self, obj: Any) -> list[Evidence | WrongRoot]:
        """Equivocation evidence (two conflicting statements), and wrong-root evidence (a
        proposal claiming roots that differ from the recording member's, docs/protocol.md
        §7), each verified against the committee."""
        out: list[Evidence | WrongRoot] = []
        for k, item in enumerate(expect_field(obj, "evidence", list, "evidence")):
            w = f"evidence record {k}"
            body = expect_field(item, "body", bytes, w)
            ev: Evidence | WrongRoot
            try:
                if expect_field(item, "kind", str, w) == WRONG_ROOT_KIND:
                    ev = WrongRoot.decode(body)
                else:
                    ev = Evidence.decode(body)
                ev.verify(self.committee)
            except RemoteError as e:
                raise BadEvidence(f"{w}: {e}") from None
            if (ev.member, ev.view) != (expect_uint(item, "member", w), expect_uint(item, "view", w)):
                raise BadEvidence(f"{w}: its member/view fields differ from the evidence")
            out.append(ev)
        return out
