"""`coalitiond audit --archive CONFLUENCE --citizen A [--citizen B …]`: re-derive a
confluence's commits from its citizens' certified logs (docs/confluences.md §6).

Every archive is verified first (chain, certificates, Merkle roots) against its committee;
citizens are matched to the confluence's spanned citizens by committee id (= stable id).
Parameters come from the config text the archives carry (`coalitiond export --config`) or
from `--config` (the confluence) and `--citizen-config` (citizens).

Output: one line per mismatch, `confluence block H: CODE: what [citizen … entry … @ height …
block …]`, then a summary line. Exit 0: every commit re-derives. Exit 1: a mismatch, or an
archive that does not verify. Exit 2: the operator must fix something (unreadable file, a
missing citizen archive).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..integrator.confluence_audit import audit_archives
from ..log.audit import AuditFailure
from . import EXIT_CHECK_FAILED, EXIT_OK

NAME = "audit"
HELP = ("re-derive every commit of a confluence (intents, ledger) from its citizens' "
        "archives, without trusting the confluence committee")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", required=True, type=Path,
                        help="the confluence's archive (coalitiond export)")
    parser.add_argument("--citizen", action="append", type=Path, default=[], required=True,
                        help="an archive of a spanned citizen's feed committee (repeat)")
    parser.add_argument("--config", type=Path, default=None,
                        help="a member config of the confluence (else: the archive's own)")
    parser.add_argument("--citizen-config", action="append", type=Path, default=[],
                        help="a member config of a citizen (else: the citizen archive's own)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, check_key=False) if args.config is not None else None
    citizen_configs = [load_config(p, check_key=False) for p in args.citizen_config]
    try:
        report, citizens = audit_archives(args.archive, args.citizen, config=config,
                                          citizen_configs=citizen_configs)
    except AuditFailure as e:
        print(f"{args.archive}: FAILED: {e}")
        return EXIT_CHECK_FAILED
    for m in report.mismatches:
        print(m.render(citizens))
    verdict = "clean" if report.clean else f"{len(report.mismatches)} MISMATCHES"
    print(f"{args.archive}: {verdict}: {report.blocks} blocks, {report.ingests} ingests, "
          f"{report.records} records re-derived from {len(citizens)} citizens; "
          f"{report.uncommitted} sealed records not committed yet")
    return EXIT_OK if report.clean else EXIT_CHECK_FAILED
