"""`coalitiond audit` on archives (docs/confluences.md §6): every archive verified, citizens
replayed from their own archives, each mismatch printed with its evidence pointer; exit 0
clean, 1 on a mismatch, 2 when a citizen archive is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from node_harness import Committee, write_committee

from coalitiond.cli import main
from coalitiond.log.archive import export_archive
from coalitiond.log.sqlite import BlockToAppend, Store
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.testing.confluence import TAMPERS, ConfluenceRun, FeedCitizen

R = b"\x99" * 20


def confluence_dir(dir: Path, citizens: list[Committee], kind: str) -> Committee:
    c = write_committee(dir, 4, component=kind)
    ids = [cit.member_config(0).committee_spec().committee_id for cit in citizens]
    for path in c.configs:
        text = path.read_text()
        path.write_text(text[:text.index("[component]")] + "[component]\n" + "".join(
            f'[[component.citizens]]\nstable_id = "{i.hex()}"\n' for i in ids))
    return c


def archive(out: Path, committee: CommitteeSpec, key: SigningKey, items: list[BlockToAppend],
            config: Path) -> Path:
    with Store.open(out.with_suffix(".sqlite3"), committee, signing_key=key) as s:
        s.append_blocks(items)
    with Store.open(out.with_suffix(".sqlite3"), read_only=True) as s:
        export_archive(s, out, config_text=config.read_text())
    return out


def world(tmp_path: Path, cls_name: str | None) -> list[str]:
    dirs = [write_committee(tmp_path / n, 4) for n in ("a", "b")]
    conf = confluence_dir(tmp_path / "ledger", dirs, "ledger")
    citizens = []
    for d in dirs:
        cfg = d.member_config(0)
        citizens.append(FeedCitizen(committee=cfg.committee_spec(), keys=d.keys,
                                    publisher=d.operator, params=cfg.component.to_cbor()))
    a, b = citizens
    a.refund(b"\x01" * 32, 5, R, 10)
    b.refund(b"\x01" * 32, 5, R, 10)
    b.refund(b"\x02" * 32, 5, R, 7)
    for x in citizens:
        x.slot(5)
        x.block()
    cfg = conf.member_config(0)
    run = ConfluenceRun("ledger", citizens, committee=cfg.committee_spec(), keys=conf.keys,
                        params=cfg.component.to_cbor(),
                        cls=None if cls_name is None else TAMPERS[cls_name])
    run.run(3)
    assert run.committed()
    args = ["audit", "--archive", str(archive(tmp_path / "ledger.arc", run.committee,
                                               conf.keys[0], run.items, conf.configs[0]))]
    for d, x in zip(dirs, citizens, strict=True):
        args += ["--citizen", str(archive(tmp_path / f"{d.dir.name}.arc", x.committee,
                                          d.keys[0], x.items, d.configs[0]))]
    return args


def test_an_honest_ledger_audits_clean_from_archives(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = world(tmp_path, None)
    assert main(args) == 0
    out = [line for line in capsys.readouterr().out.splitlines() if "confluence" in line
           or ".arc:" in line]
    assert len(out) == 1 and ": clean: 3 blocks, 2 ingests, 1 records re-derived from 2 " \
        "citizens; 0 sealed records not committed yet" in out[0]


def test_a_mis_summing_majority_fails_the_audit_naming_the_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = world(tmp_path, "ledger-mis-sum")
    assert main(args) == 1
    out = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith("confluence") or ".arc:" in line]
    assert out[:3] == [
        f"confluence block 2: record_mis_sum: attest slot 5 recipient {R.hex()}: amount 18 is "
        "not the sum 17 of its own submissions",
        f"confluence block 2: record_wrong_amount: attest slot 5 recipient {R.hex()}: amount 18 "
        "committed, 17 derived",
        f"confluence block 2: record_wrong_total: attest slot 5 recipient {R.hex()}: total 18 "
        "committed, 17 derived"]
    assert "3 MISMATCHES" in out[3]


def test_a_dropped_submission_is_named_by_its_upstream_entry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = world(tmp_path, "ledger-drop")
    assert main(args) == 1
    first = next(line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("confluence"))
    assert first.startswith(f"confluence block 2: record_dropped_submission: attest slot 5 "
                            f"recipient {R.hex()}: submission 0101010101010101 is missing "
                            "[citizen ")
    assert " entry 0 @ height 1 block " in first


def test_a_missing_citizen_archive_is_an_operator_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = world(tmp_path, None)
    assert main(args[:-2]) == 2
    assert "no archive of spanned citizen" in capsys.readouterr().err
