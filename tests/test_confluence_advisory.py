"""Citizen-bump advisories (docs/confluences.md §7) and a confluence member noticing a
followed citizen's config change (metric and log line)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from node_harness import write_committee

from coalitiond.cli import advisory as advisory_cli
from coalitiond.cli import main
from coalitiond.components.chronicle.component import Chronicle
from coalitiond.components.confluence.advisory import citizen_bump
from coalitiond.node.confluence import CONFIG_CHANGES, ConfluenceDriver, label
from coalitiond.primitives.encoding import decode

FP = b"\x0f" * 32
OLD = b"\x01" * 32
NEW = b"\x02" * 32


def test_a_citizen_bump_is_a_chronicle_append_of_kind_advisory() -> None:
    command = citizen_bump(FP, OLD, new_stable_id=NEW, note="lattice upgrade")
    chronicle = Chronicle.from_params({"anchor_sink": {"kind": "file"},
                                       "anchor_every": 10, "follow_almanac": None})
    chronicle.check(b"\x00" * 32, command)  # accepted as is by a Chronicle
    assert command.args["kind"] == "advisory" and command.args["subject"] == FP
    assert decode(command.args["body"]) == {
        "advisory": "citizen-bump", "confluence": FP, "citizen": OLD, "new_stable_id": NEW,
        "old_content_hash": None, "new_content_hash": None, "note": "lattice upgrade"}


def test_an_advisory_names_what_changed(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["advisory", "--config", "/nonexistent", "--confluence", FP.hex(),
                 "--citizen", OLD.hex()])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith(
        "advisory: a citizen bump names a new stable id or a new content hash (or both)")
    args = argparse.Namespace(confluence=FP.hex(), citizen="zz", new_stable_id=None,
                              old_content_hash=None, new_content_hash=None, note="",
                              pointer=[])
    with pytest.raises(Exception, match="--citizen: not hex"):
        advisory_cli.build(args)


def test_a_followed_citizens_config_change_is_reported_once(tmp_path: Path) -> None:
    citizen = write_committee(tmp_path / "a", 3)
    cfg = citizen.member_config(0)
    spec = cfg.committee_spec()
    driver = ConfluenceDriver.__new__(ConfluenceDriver)
    driver.paths, driver.specs, driver.seen = [citizen.configs[0]], [spec], [spec]
    assert driver.config_changes() == []
    before = CONFIG_CHANGES.labels(label(spec.committee_id))._value.get()
    text = citizen.configs[0].read_text()
    citizen.configs[0].write_text(text.replace('name = "test-feed"', 'name = "test-feed-2"'))
    (line,) = driver.config_changes()
    assert line.startswith(f"citizen {label(spec.committee_id)}: {citizen.configs[0]}: its "
                           "stable id bumped to ")
    assert "file an advisory" in line
    assert driver.config_changes() == []  # reported once, not every recheck
    assert CONFIG_CHANGES.labels(label(spec.committee_id))._value.get() == before + 1
