"""What a devnet checks after its run (`coalitiond devnet --duration`): every member's archive
exported, verified and compared with the others; with Byzantine test members, that the
honest ones were ready and accused no honest member; for a confluence, `coalitiond audit`
against its citizens; with `--anchor evm`, the chain against the archive. Each prints its
findings to the devnet's output and returns the exit status (or whether it held)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .devnet_workloads import CONFLUENCE_CITIZENS

if TYPE_CHECKING:
    from .devnet import Devnet


def coalitiond_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "coalitiond", *args]


def ms_value(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


def check_audit(self: Devnet) -> int:
    """Export citizen 0 of every citizen committee and run `coalitiond audit` on member
    0's confluence archive against them."""
    citizens = []
    for k in range(CONFLUENCE_CITIZENS):
        archive = self.dir / f"citizen{k}.archive"
        r = subprocess.run(coalitiond_command(
            "export", "--data-dir", str(self.dir / f"citizen{k}-0-data"), "--out",
            str(archive), "--config", str(self.dir / f"citizen{k}-0.toml")),
            capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(f"devnet: citizen {k}: export failed: {r.stderr.strip() or r.stdout}",
                  file=self.out)
            return 1
        citizens += ["--citizen", str(archive)]
    r = subprocess.run(coalitiond_command("audit", "--archive",
                                          str(self.dir / "member-0.archive"), *citizens),
                       capture_output=True, text=True, check=False)
    print(f"devnet: audit: {r.stdout.strip() or r.stderr.strip()}", file=self.out,
          flush=True)
    return 0 if r.returncode == 0 else 1

def check_honest(self: Devnet) -> int:
    """With Byzantine members: every honest member was ready and not diverged at its last
    status, and what each recorded as evidence (by kind and accused member)."""
    from ..log.sqlite import Store, store_path

    status = 0
    for i in range(len(self.configs)):
        if i in self.byzantine:
            continue
        last = self.last_status[i]
        if last is None or not last.get("ready") or last.get("diverged"):
            print(f"devnet: honest member {i} was not ready at the end: "
                  f"{'no status' if last is None else last.get('diverged') or 'not ready'}",
                  file=self.out)
            status = 1
        with Store.open(store_path(self.dir / f"member-{i}-data"), read_only=True) as s:
            found: dict[tuple[str, int], int] = {}
            for record in s.evidence():
                key = (record.kind, record.member)
                found[key] = found.get(key, 0) + 1
        against_honest = sorted({m for _, m in found} - set(self.byzantine))
        if against_honest:
            print(f"devnet: member {i} recorded evidence against honest members "
                  f"{against_honest}", file=self.out)
            status = 1
        summary = ", ".join(f"{kind} x{count} against member {m}"
                            for (kind, m), count in sorted(found.items())) or "none"
        print(f"devnet: honest member {i}: ready; evidence: {summary}", file=self.out)
    return status

def check_archives(self: Devnet) -> int:
    archives = []
    for i in range(len(self.configs)):
        archive = self.dir / f"member-{i}.archive"
        data_dir = self.dir / f"member-{i}-data"
        steps = [("export", coalitiond_command("export", "--data-dir", str(data_dir),
                                               "--out", str(archive),
                                               "--config", str(self.configs[i]))),
                 ("verify", coalitiond_command("verify", "--archive", str(archive)))]
        for what, cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                print(f"devnet: member {i}: {what} failed: {r.stderr.strip() or r.stdout}",
                      file=self.out)
                return 1
        archives.append(archive)
        print(f"devnet: member {i}: archive {archive.name} verifies", file=self.out)
    for a, b in itertools.combinations(archives, 2):
        r = subprocess.run(coalitiond_command("verify", "--archive", str(a), "--against",
                                              str(b)),
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(f"devnet: {a.name} and {b.name} disagree:\n{r.stdout}{r.stderr}",
                  file=self.out)
            return 1
    print(f"devnet: all {len(archives)} archives verify and agree on their common prefix",
          file=self.out, flush=True)
    if self.anchor_chain is not None and not check_anchors(self, archives[0]):
        return 1
    print(json.dumps({"finalised": self.progress.finalized,
                      "refused": self.progress.refused,
                      "p50_ms": ms_value(self.progress.percentile(50)),
                      "p99_ms": ms_value(self.progress.percentile(99))}),
          file=self.out, flush=True)
    return 0


def check_anchors(self: Devnet, archive: Path) -> bool:
    """`verify --anchors` on one archive: every anchor the chain confirmed is the
    archive's, no member posted another digest, and only a tail (anchors committed as
    the devnet stopped) may be unconfirmed."""
    from ..components.chronicle.evm_rpc import JsonRpc, RpcError
    from ..integrator.anchor_check import CONFIRMED, MISSING, check_anchors, render
    from ..log import AuditFailure

    assert self.anchor_chain is not None
    url, contract = self.anchor_chain
    try:
        report = trio.run(lambda: check_anchors(archive, JsonRpc([url]), contract))
    except (AuditFailure, RpcError) as e:
        print(f"devnet: cannot check the anchors: {e}", file=self.out)
        return False
    print(render(report), file=self.out, flush=True)
    statuses = [a.status for a in report.anchors]
    tail = len(statuses) - statuses[::-1].index(CONFIRMED) if CONFIRMED in statuses else 0
    ok = (all(s == CONFIRMED for s in statuses[:tail])
          and all(s == MISSING for s in statuses[tail:])
          and not report.wrong_posts() and not report.stray)
    print(f"devnet: anchors on chain {'agree with' if ok else 'DISAGREE with'} the archive "
          f"({tail} confirmed, {len(statuses) - tail} still unconfirmed at the stop)",
          file=self.out, flush=True)
    return ok
