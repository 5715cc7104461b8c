"""Self-contained log archives: export from a store, verify offline, compare two archives.

Format (docs/formats.md §Archive): the magic line `coalitiond-archive/1\\n`, then frames of
`u32 big-endian length ‖ deterministic CBOR item`:

    ["header", 1, committee record, checkpoint signer public key, config text | null]
    ["block", ...] × H            heights 1..H in order (records.FinalizedBlock.to_wire)
    ["evidence", member, epoch, view, kind, body] × E
    ["end", H, entries, root, sha256(every byte before this frame)]

Verification needs nothing but the archive (and, to pin whom to trust, the committee id the
auditor expects). Streaming: memory is bounded by one frame plus the Merkle frontier.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from ..consensus.types import MalformedMessage, Vote, VoteKind
from ..primitives.committee import CommitteeSpec
from ..primitives.encoding import decode, encode
from ..primitives.errors import EncodingError, OperatorError
from .audit import AuditFailure, AuditSummary, LogAuditor
from .records import FinalizedBlock, committee_from_record, committee_record
from .sqlite import Store

MAGIC: Final = b"coalitiond-archive/1\n"
#: 2: block records of schema 2 (entries derived from the block, docs/formats.md). Version 1
#: archives (schema-1 records, entries carried) are still read and verified.
FORMAT_VERSION: Final = 2
READABLE_VERSIONS: Final = (1, 2)
#: One frame holds at most one block record (≤ 8 MiB of block — a schema-1 record carries its
#: entries too, ≤ the block again plus per-entry framing — with votes and checkpoint):
#: 32 MiB bounds it with room to spare.
MAX_FRAME: Final = 32 * 1024 * 1024
MAX_CONFIG_TEXT: Final = 1024 * 1024
_LEN: Final = struct.Struct(">I")


class ArchiveReadError(OperatorError):
    """The archive file cannot be read at all (missing, permissions)."""


@dataclass
class ArchiveHeader:
    committee: CommitteeSpec
    signer: bytes
    config_text: str | None


@dataclass
class ExportSummary:
    height: int
    entries: int
    evidence: int
    root: bytes


# ---------------------------------------------------------------------------------- export


def _frame(obj: Any) -> bytes:
    data = encode(obj)
    if len(data) > MAX_FRAME:
        raise OperatorError(f"archive frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(data)) + data


def export_archive(store: Store, out: Path, *, config_text: str | None = None) -> ExportSummary:
    """Write the whole log to `out` atomically (temp file, fsync, rename, fsync dir)."""
    if store.base is not None:
        # An archive is the log from genesis (verify replays it); a state-synced member
        # holds none below its base (docs/decisions.md, state sync).
        raise OperatorError(f"{store.path}: this member state-synced: its log starts at height "
                            f"{store.base.height + 1} (entry {store.base.log_size}), an archive "
                            f"starts at genesis; export from a member whose log does")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    h = hashlib.sha256()
    try:
        f = open(tmp, "wb")  # noqa: SIM115 - closed in finally; fsync needs the handle
    except OSError as e:
        raise OperatorError(f"{out}: cannot write the archive: {e.strerror}") from None
    try:
        def put(chunk: bytes) -> None:
            h.update(chunk)
            f.write(chunk)

        with store.snapshot():
            put(MAGIC)
            put(_frame(["header", FORMAT_VERSION, committee_record(store.committee),
                        store.member, config_text]))
            height = entries = 0
            for fb in store.iter_finalized():
                put(_frame(fb.to_wire()))
                height, entries = fb.height, entries + len(fb.block.commands)
            ev = store.evidence()
            for item in ev:
                put(_frame(["evidence", item.member, item.epoch, item.view, item.kind,
                            item.body]))
            root = store.root(entries)
        f.write(_frame(["end", height, entries, root, h.digest()]))
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    f.close()
    os.replace(tmp, out)
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return ExportSummary(height, entries, len(ev), root)


# ---------------------------------------------------------------------------------- reading


class _Reader:
    """Frames of one archive, with a running SHA-256 of every byte consumed."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.frames = 0

    def _read(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise AuditFailure(f"archive truncated inside {what}")
        return data

    def magic(self) -> None:
        data = self.f.read(len(MAGIC))
        if data != MAGIC:
            raise AuditFailure("not a coalitiond archive (bad magic line)")
        self.hash.update(data)

    def frame(self) -> tuple[Any, bytes]:
        """The next decoded frame and the digest of everything before it."""
        before = self.hash.digest()
        head = self._read(4, f"frame {self.frames}")
        (n,) = _LEN.unpack(head)
        if n > MAX_FRAME:
            raise AuditFailure(f"archive frame {self.frames} claims {n} bytes (max {MAX_FRAME})")
        data = self._read(n, f"frame {self.frames}")
        self.hash.update(head)
        self.hash.update(data)
        self.frames += 1
        try:
            return decode(data, max_size=MAX_FRAME), before
        except EncodingError as e:
            raise AuditFailure(f"archive frame {self.frames - 1} is not deterministic CBOR: {e}"
                               ) from None

    def at_eof(self) -> bool:
        return self.f.read(1) == b""


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as e:
        raise ArchiveReadError(f"{path}: cannot read the archive: {e.strerror}") from None


def _header(r: _Reader) -> ArchiveHeader:
    r.magic()
    obj, _ = r.frame()
    if not (isinstance(obj, list) and len(obj) == 5 and obj[0] == "header"):
        raise AuditFailure("archive header: expected [\"header\", version, committee, signer, "
                           "config]")
    if obj[1] not in READABLE_VERSIONS or isinstance(obj[1], bool):
        raise AuditFailure(f"archive format version {obj[1]!r}, this coalitiond reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}")
    try:
        committee = committee_from_record(obj[2])
    except MalformedMessage as e:
        raise AuditFailure(f"archive header: {e}") from None
    signer, config = obj[3], obj[4]
    if not (isinstance(signer, bytes) and len(signer) == 32):
        raise AuditFailure("archive header: signer must be a 32-byte public key")
    if config is not None and not (isinstance(config, str) and len(config) <= MAX_CONFIG_TEXT):
        raise AuditFailure("archive header: config must be text or null")
    return ArchiveHeader(committee, signer, config)


def _records(r: _Reader) -> Iterator[tuple[str, Any, bytes]]:
    """(kind, payload, digest-before) for each frame after the header, through "end"."""
    while True:
        obj, before = r.frame()
        if not (isinstance(obj, list) and obj and isinstance(obj[0], str)):
            raise AuditFailure(f"archive frame {r.frames - 1} has no record type")
        yield obj[0], obj, before
        if obj[0] == "end":
            return


def _block(obj: Any, height: int) -> FinalizedBlock:
    try:
        return FinalizedBlock.from_wire(obj)
    except (MalformedMessage, EncodingError, ValueError) as e:
        raise AuditFailure(f"block record does not decode: {e}", height=height) from None


# ---------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    header: ArchiveHeader
    summary: AuditSummary
    evidence: int = 0
    notes: list[str] = field(default_factory=list)


def verify_archive(path: Path, *, expect_committee: bytes | None = None) -> VerifyReport:
    """Check an archive completely, offline. Raises AuditFailure at the first problem."""
    with _open(Path(path)) as f:
        r = _Reader(f)
        hdr = _header(r)
        if expect_committee is not None and hdr.committee.committee_id != expect_committee:
            raise AuditFailure(f"archive is for committee {hdr.committee.committee_id.hex()}, "
                               f"expected {expect_committee.hex()}")
        auditor = LogAuditor(hdr.committee, hdr.signer)
        evidence = 0
        in_evidence = False
        for kind, obj, before in _records(r):
            if kind == "block":
                if in_evidence:
                    raise AuditFailure("block record after evidence records")
                auditor.feed(_block(obj, auditor.summary.height + 1))
            elif kind == "evidence":
                in_evidence = True
                if not (len(obj) == 6 and isinstance(obj[5], bytes)):
                    raise AuditFailure(f"evidence record {evidence} is malformed")
                evidence += 1
            elif kind == "end":
                summary = auditor.finish()
                if obj[1:] != [summary.height, summary.entries, summary.root, before]:
                    raise AuditFailure(
                        "archive end record disagrees with its contents (counts, root or "
                        "file digest): the archive was altered or truncated")
            else:
                raise AuditFailure(f"unknown archive record type {kind!r}")
        if not r.at_eof():
            raise AuditFailure("bytes after the archive's end record")
    return VerifyReport(hdr, summary, evidence)


# ---------------------------------------------------------------------------------- compare


@dataclass
class Side:
    digest: bytes
    view: int
    finalized_by: list[int]
    notarized_by: list[int]


@dataclass
class Comparison:
    committee: CommitteeSpec
    common_height: int
    common_entries: int
    heights: tuple[int, int]
    diverged: bool
    sides: tuple[Side, Side] | None = None

    @property
    def both_sides(self) -> list[int]:
        """Members whose valid signatures stand behind both conflicting blocks."""
        if self.sides is None:
            return []
        a, b = self.sides
        return sorted(set(a.finalized_by + a.notarized_by)
                      & set(b.finalized_by + b.notarized_by))


def _valid_signers(fb: FinalizedBlock, committee: CommitteeSpec, kind: VoteKind) -> list[int]:
    signers = {v.signer for v in fb.votes if v.kind is kind and v.verify(committee)}
    cert = fb.finalization if kind is VoteKind.FINALIZE else fb.notarization
    if cert is not None:
        for i, sig in cert.signatures:
            if Vote(kind, cert.epoch, cert.view, cert.digest, i, sig).verify(committee):
                signers.add(i)
    return sorted(signers)


def _side(fb: FinalizedBlock, committee: CommitteeSpec) -> Side:
    return Side(fb.block.digest, fb.block.view,
                _valid_signers(fb, committee, VoteKind.FINALIZE),
                _valid_signers(fb, committee, VoteKind.NOTARIZE))


def _blocks(r: _Reader) -> Iterator[FinalizedBlock]:
    for height, (kind, obj, _) in enumerate(_records(r), 1):
        if kind != "block":
            return
        yield _block(obj, height)


def read_header(path: Path) -> ArchiveHeader:
    """An archive's header (committee, signer, embedded config text), not verified."""
    with _open(Path(path)) as f:
        return _header(_Reader(f))


@contextmanager
def read_blocks(path: Path) -> Iterator[tuple[ArchiveHeader, Iterator[FinalizedBlock]]]:
    """The header and the blocks of an archive, in height order, as stored: for tools that
    replay an archive after `verify_archive` checked it (this checks nothing)."""
    with _open(Path(path)) as f:
        r = _Reader(f)
        yield _header(r), _blocks(r)


def block_signers(fb: FinalizedBlock, committee: CommitteeSpec) -> Side:
    """Which members' valid finalize and notarize signatures stand behind a block."""
    return _side(fb, committee)


def compare_archives(a: Path, b: Path) -> Comparison:
    """Walk two archives of one committee's log in lockstep; find the first height where
    their blocks differ and which members' valid signatures stand behind each side."""
    with _open(Path(a)) as fa, _open(Path(b)) as fb_:
        ra, rb = _Reader(fa), _Reader(fb_)
        ha, hb = _header(ra), _header(rb)
        if ha.committee.committee_id != hb.committee.committee_id:
            raise AuditFailure(
                f"the archives are of different committees ({ha.committee.committee_id.hex()[:16]}"
                f" and {hb.committee.committee_id.hex()[:16]}); nothing to compare")
        committee = ha.committee
        ia, ib = _blocks(ra), _blocks(rb)
        height = entries = 0
        while True:
            xa, xb = next(ia, None), next(ib, None)
            if xa is None or xb is None:
                rest_a = height + (1 if xa else 0) + sum(1 for _ in ia)
                rest_b = height + (1 if xb else 0) + sum(1 for _ in ib)
                return Comparison(committee, height, entries, (rest_a, rest_b), False)
            if xa.block.digest != xb.block.digest:
                return Comparison(committee, height, entries, (xa.height, xb.height), True,
                                  (_side(xa, committee), _side(xb, committee)))
            height, entries = xa.height, entries + len(xa.block.commands)
