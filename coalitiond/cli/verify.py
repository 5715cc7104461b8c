"""`coalitiond verify --archive A [--against B] [--committee-id HEX] [--config C]`: offline checks.

For two archives of a Chronicle, `--against` also replays both and compares them entry by
entry, naming the member signatures behind each side (coalitiond/chronicle_compare.py). The
replay needs the Chronicle's parameters: from `--config` (any member config of that
committee) or from the config text the archive carries (`coalitiond export --config`).

`coalitiond verify --data-dir D` runs the same checks (plus the store's own: every Merkle
node, row counts, checksums) directly on a member's store, read-only.

`coalitiond verify --bundle FILE [--committee-id HEX | --config C]` checks a proof bundle
(`coalitiond prove`, docs/formats.md §7) with no network: one line `FILE: OK: …` saying
what it proved, or `FILE: FAILED: <reason>`.

`coalitiond verify --archive A --anchors RPC_URL --contract ADDR` also checks a Chronicle's
anchors on its EVM contract: every digest recomputed from the archive against what the
chain confirmed and what each member posted (docs/chronicle.md §9).

Exit 0: everything verifies (and, with --against, one archive is a prefix of the other).
Exit 1: a check failed; the first failure is named (height, entry, what).
Exit 2: the operator must fix something (unreadable file, bad arguments).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..log import AuditFailure, Store, StoreCorrupt, store_path
from ..log.archive import Comparison, compare_archives, read_header, verify_archive
from ..primitives.errors import OperatorError
from . import EXIT_CHECK_FAILED, EXIT_OK

NAME = "verify"
HELP = "verify an exported log archive offline (chain, Merkle roots, signatures, certificates)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--archive", type=Path, help="archive to verify")
    what.add_argument("--data-dir", type=Path,
                      help="verify a member's store (log.sqlite3) in place, read-only")
    what.add_argument("--bundle", type=Path,
                      help="verify a proof bundle of one log entry (coalitiond prove), offline")
    parser.add_argument("--against", type=Path, default=None,
                        help="a second archive of the same log: report where they diverge")
    parser.add_argument("--config", type=Path, default=None,
                        help="a member config of the archives' committee: the component "
                             "parameters a Chronicle comparison replays under; with --bundle, "
                             "the committee the bundle must be for")
    parser.add_argument("--anchors", default=None, metavar="RPC_URL",
                        help="with --archive of a Chronicle: check its anchors on the EVM "
                             "chain at this JSON-RPC URL (needs --contract)")
    parser.add_argument("--contract", default=None, metavar="ADDR",
                        help="the anchor contract's address (0x + 40 hex)")
    parser.add_argument("--committee-id", default=None,
                        help="the committee id (64 hex) you expect; without it the archive's "
                             "(or bundle's) own committee is trusted and printed")


def _check(path: Path, expect: bytes | None) -> bool:
    try:
        rep = verify_archive(path, expect_committee=expect)
    except AuditFailure as e:
        print(f"{path}: FAILED: {e}")
        return False
    c, s = rep.header.committee, rep.summary
    member = c.index_of(rep.header.signer)
    print(f"{path}: OK: committee {c.committee_id.hex()} ({c.component_kind}/"
          f"{c.component_name}, epoch {c.epoch}, n={c.n}, q={c.quorum}); heights 1..{s.height}, "
          f"{s.entries} entries, root {s.root.hex()}; {s.signatures_checked} signatures "
          f"checked; {rep.evidence} evidence; checkpoints signed by member {member}")
    return True


def _describe(cmp: Comparison, a: Path, b: Path) -> str:
    if not cmp.diverged or cmp.sides is None:
        ha, hb = cmp.heights
        rel = ("identical" if ha == hb else
               f"{a if ha < hb else b} is a prefix of {b if ha < hb else a}")
        return (f"consistent: the archives agree on heights 1..{cmp.common_height} "
                f"({cmp.common_entries} entries); {a} ends at {ha}, {b} at {hb} ({rel})")
    sa, sb = cmp.sides
    h = cmp.common_height + 1
    lines = [f"DIVERGED at height {h}: the archives agree on heights 1..{cmp.common_height} "
             f"({cmp.common_entries} entries)"]
    for path, side in ((a, sa), (b, sb)):
        lines.append(f"  {path}: block {side.digest.hex()} (view {side.view}); valid finalize "
                     f"signatures from members {side.finalized_by}, notarize from "
                     f"{side.notarized_by}")
    both = cmp.both_sides
    if both:
        same_view = sa.view == sb.view
        lines.append(f"  members whose signatures stand behind both sides: {both}"
                     + (" (same view: equivocation)" if same_view else ""))
    else:
        lines.append("  no member signed both sides")
    return "\n".join(lines)


def _check_store(data_dir: Path, expect: bytes | None) -> bool:
    path = store_path(data_dir)
    try:
        with Store.open(path, read_only=True) as store:
            c = store.committee
            if expect is not None and c.committee_id != expect:
                print(f"{path}: FAILED: store is for committee {c.committee_id.hex()}, "
                      f"expected {expect.hex()}")
                return False
            s = store.audit()
    except StoreCorrupt as e:
        print(f"{path}: FAILED: {e.problem} (table {e.table}"
              + (f", height {e.height})" if e.height is not None else ")"))
        return False
    print(f"{path}: OK: committee {c.committee_id.hex()}; heights 1..{s.height}, {s.entries} "
          f"entries, root {s.root.hex()}; {s.signatures_checked} signatures checked")
    return True


def _check_bundle(path: Path, expect: bytes | None) -> bool:
    from ..integrator.answers import VerificationFailed
    from ..integrator.bundle import MAX_BUNDLE_BYTES, verify_bundle

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except OSError as e:
        raise OperatorError(f"{path}: cannot read the bundle: {e.strerror or e}") from None
    if len(data) > MAX_BUNDLE_BYTES:
        print(f"{path}: FAILED: bundle exceeds {MAX_BUNDLE_BYTES} bytes")
        return False
    try:
        verified = verify_bundle(data, expect)
    except VerificationFailed as e:
        print(f"{path}: FAILED: {e}")
        return False
    pinned = "" if expect is not None else (
        " (committee not pinned: compare its id, or pass --committee-id or --config)")
    print(f"{path}: {verified.summary()}{pinned}")
    return True


def run(args: argparse.Namespace) -> int:
    expect = None
    if args.committee_id is not None:
        try:
            expect = bytes.fromhex(args.committee_id)
        except ValueError:
            expect = b""
        if len(expect) != 32:
            raise OperatorError("--committee-id must be 64 hex characters")
    if args.bundle is not None:
        if args.against is not None:
            raise OperatorError("--against compares archives: use it with --archive")
        if args.config is not None:
            if expect is not None:
                raise OperatorError("--bundle: pass --committee-id or --config, not both")
            expect = load_config(args.config, check_key=False).committee_spec().committee_id
        return EXIT_OK if _check_bundle(args.bundle, expect) else EXIT_CHECK_FAILED
    if args.data_dir is not None:
        if args.against is not None:
            raise OperatorError("--against compares archives: use it with --archive")
        return EXIT_OK if _check_store(args.data_dir, expect) else EXIT_CHECK_FAILED
    if (args.anchors is None) != (args.contract is None):
        raise OperatorError("--anchors and --contract go together")
    ok = _check(args.archive, expect)
    if args.anchors is not None:
        ok = _check_anchors(args.archive, args.anchors, args.contract, args.config) and ok
    if args.against is None:
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    ok = _check(args.against, expect) and ok
    try:
        cmp = compare_archives(args.archive, args.against)
    except AuditFailure as e:
        print(f"cannot compare: {e}")
        return EXIT_CHECK_FAILED
    print(_describe(cmp, args.archive, args.against))
    if read_header(args.archive).committee.component_kind == "chronicle":
        ok = _compare_chronicles(args.archive, args.against, args.config) and ok
    return EXIT_OK if ok and not cmp.diverged else EXIT_CHECK_FAILED


def _compare_chronicles(a: Path, b: Path, config: Path | None) -> bool:
    from ..integrator.archive_compare import compare_chronicle_archives, render

    params, acl = None, None
    if config is not None:
        member_config = load_config(config, check_key=False)
        params, acl = member_config.component.to_cbor(), member_config.committee.acl
    try:
        report = compare_chronicle_archives(a, b, params=params, acl=acl)
    except AuditFailure as e:
        print(f"cannot compare the Chronicle entries: {e}")
        return False
    print(render(report))
    return not report.diverged


def _check_anchors(archive: Path, url: str, contract_text: str, config: Path | None) -> bool:
    import trio

    from ..components.chronicle.evm_rpc import JsonRpc, RpcError
    from ..integrator.anchor_check import check_anchors, render

    body = contract_text.removeprefix("0x")
    try:
        contract = bytes.fromhex(body)
    except ValueError:
        contract = b""
    if len(contract) != 20:
        raise OperatorError("--contract must be an EVM address: 0x and 40 hex characters")
    if not url.startswith(("http://", "https://")):
        raise OperatorError("--anchors must be an http:// or https:// JSON-RPC URL")
    params, acl = None, None
    if config is not None:
        member_config = load_config(config, check_key=False)
        params, acl = member_config.component.to_cbor(), member_config.committee.acl
    try:
        report = trio.run(lambda: check_anchors(archive, JsonRpc([url]), contract,
                                                params=params, acl=acl))
    except AuditFailure as e:
        print(f"cannot check the anchors: {e}")
        return False
    except RpcError as e:
        raise OperatorError(f"cannot read the anchors: {e}") from None
    print(render(report))
    return report.ok
