"""Comparing two archives of one Chronicle committee: real configs and keys (a generated
devnet), real signed blocks and certificates, stores exported to archives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coalitiond.cli.devnet import generate_devnet
from coalitiond.commands.envelope import Envelope
from coalitiond.components.chronicle.records import (
    ChronicleEntry,
    append_command,
    recompute_anchors,
)
from coalitiond.config import AclConfig, load_config
from coalitiond.consensus.types import genesis_block
from coalitiond.integrator.archive_compare import (
    DIFFER,
    EQUAL,
    ONLY_A,
    SeqSpan,
    chronicle_config_digest,
    compare_chronicle_archives,
    render,
)
from coalitiond.log import Store
from coalitiond.log.archive import export_archive, verify_archive
from coalitiond.log.audit import AuditFailure
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.keys import load_key_file
from coalitiond.testing.chain import ChainBuilder

SUBJECT = b"\x44" * 32


def _chain(committee: Any, keys: list[SigningKey]) -> ChainBuilder:
    chain = ChainBuilder(len(keys))
    chain.keys, chain.committee = keys, committee
    chain.head, chain.view = genesis_block(committee), 0
    return chain


def _archive(root: Path, name: str, chain: ChainBuilder, member: int, items: list[Any],
             config_text: str | None) -> Path:
    d = root / name
    d.mkdir()
    with Store.open(d / "log.sqlite3", chain.committee, signing_key=chain.keys[member]) as s:
        s.append_blocks(items)
    out = root / f"{name}.arc"
    with Store.open(d / "log.sqlite3", read_only=True) as s:
        export_archive(s, out, config_text=config_text)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("chronicle-archives")
    (path, *_) = generate_devnet(5, "chronicle", root / "devnet", 20000)
    text = path.read_text().replace("anchor_every = 200", "anchor_every = 2")
    assert "anchor_every = 2\n" in text
    path.write_text(text)
    cfg = load_config(path, check_key=False)
    committee = cfg.committee_spec()
    keys = [load_key_file(root / "devnet" / f"member-{i}.key") for i in range(5)]
    operator = load_key_file(root / "devnet" / "operator.key")
    stranger = SigningKey(b"\x09" * 32)
    cid = committee.committee_id

    def env(nonce: int, *cmds: Any, key: SigningKey = operator) -> bytes:
        return Envelope.sign(key, cid, nonce, list(cmds)).raw

    chain = _chain(committee, keys)
    items = [
        chain.next([env(1, append_command("note", SUBJECT, 0),
                        append_command("note", SUBJECT, 1))]),
        chain.next([env(2, append_command("advisory", SUBJECT, 2)),
                    env(1, append_command("note", SUBJECT, "not admitted"), key=stranger)]),
        chain.next([env(3, append_command("publication", SUBJECT, 3),
                        append_command("note", SUBJECT, 4))]),
        chain.next([env(4, append_command("note", SUBJECT, 5))]),
    ]
    # Another history from height 3 on, in the same view: members 1..4 finalised it too.
    alt = chain.block([env(3, append_command("note", SUBJECT, "the other history"))],
                      parent=items[1].block, view=items[2].block.view)
    alt_item = chain.certify(alt, signers=[1, 2, 3, 4], all_votes=False)
    feed = ChainBuilder(5)
    feed_items = [feed.next([b"cmd"])]
    return {
        "committee": committee, "cfg": cfg, "root": root,
        "a": _archive(root, "a", chain, 0, items, text),
        "prefix": _archive(root, "prefix", chain, 2, items[:2], text),
        "fork": _archive(root, "fork", chain, 1, [*items[:2], alt_item], text),
        "bare": _archive(root, "bare", chain, 3, items, None),
        "feed": _archive(root, "feed", feed, 0, feed_items, None),
    }


def test_the_archives_verify(world: dict[str, Any]) -> None:
    for name in ("a", "prefix", "fork", "bare"):
        verify_archive(world[name], expect_committee=world["committee"].committee_id)


def test_identical_archives(world: dict[str, Any]) -> None:
    cmp = compare_chronicle_archives(world["a"], world["bare"])
    assert cmp.spans == [SeqSpan(0, 5, EQUAL)] and cmp.differences == []
    assert not cmp.diverged and cmp.common_prefix == 6
    assert cmp.a.state_root == cmp.b.state_root
    # The anchors the replay committed are the ones anyone recomputes from the entries.
    assert list(cmp.a.anchors) == recompute_anchors(cmp.a.entries, 2)
    assert [a.upto_seq for a in cmp.a.anchors] == [1, 3, 5]
    assert "verdict: identical (equal on seqs 0..5)" in render(cmp)


def test_a_prefix_is_consistent_and_names_the_signers_of_the_extra_entries(
        world: dict[str, Any]) -> None:
    cmp = compare_chronicle_archives(world["a"], world["prefix"])
    assert cmp.spans == [SeqSpan(0, 2, EQUAL), SeqSpan(3, 5, ONLY_A)]
    assert not cmp.diverged and cmp.anchor_divergence is None
    assert [d.seq for d in cmp.differences] == [3, 4, 5]
    d = cmp.differences[0]
    assert d.b is None and d.a is not None
    assert (d.a.block.height, d.a.block.finalized_by, d.a.block.notarized_by) == (
        3, (0, 1, 2, 3, 4), (0, 1, 2, 3, 4))
    assert d.a.entry.kind == "publication"
    text = render(cmp)
    assert "  seqs 3..5: only in A" in text
    assert "verdict: consistent: B is a prefix (equal on seqs 0..2)" in text


def test_a_fork_shows_where_entries_differ_and_who_signed_each_side(
        world: dict[str, Any]) -> None:
    cmp = compare_chronicle_archives(world["a"], world["fork"])
    assert cmp.spans == [SeqSpan(0, 2, EQUAL), SeqSpan(3, 3, DIFFER), SeqSpan(4, 5, ONLY_A)]
    assert cmp.diverged and cmp.anchor_divergence == 1
    d = cmp.differences[0]
    assert d.a is not None and d.b is not None
    assert (d.a.entry.kind, d.b.entry.kind) == ("publication", "note")
    assert d.a.block.height == d.b.block.height == 3
    assert d.a.block.digest != d.b.block.digest and d.a.block.view == d.b.block.view
    # A keeps every member's votes; the fork only its certificate (members 1..4).
    assert d.b.block.finalized_by == (1, 2, 3, 4) and d.b.block.notarized_by == ()
    assert d.both_sides == (1, 2, 3, 4)
    text = render(cmp)
    assert "  seq 3: DIFFER" in text
    assert "members whose signatures stand behind both: [1, 2, 3, 4] (same view: " \
           "equivocation)" in text
    assert "finalize signatures from members [1, 2, 3, 4], notarize from []" in text
    assert "anchors DIFFER from anchor 1 (upto_seq 3)" in text
    assert "verdict: DIVERGED" in text


def test_refused_commands_make_no_entries(world: dict[str, Any]) -> None:
    cmp = compare_chronicle_archives(world["a"], world["a"])
    bodies = [ChronicleEntry.decode(e).body for e in cmp.a.entries]
    assert len(bodies) == 6 and all(b"not admitted" not in b for b in bodies)
    # Blocks without entries are not attributed (none here); every entry's block is.
    assert sorted(cmp.a.blocks) == [1, 2, 3, 4]


def test_explicit_rules_must_be_the_committees(world: dict[str, Any]) -> None:
    cfg = world["cfg"]
    params, acl = cfg.component.to_cbor(), cfg.committee.acl
    assert chronicle_config_digest(params, acl) == world["committee"].component_config_digest
    cmp = compare_chronicle_archives(world["bare"], world["bare"], params=params, acl=acl)
    assert len(cmp.a.entries) == 6
    with pytest.raises(AuditFailure, match="not this committee's"):
        compare_chronicle_archives(world["bare"], world["bare"],
                                   params={**params, "anchor_every": 3}, acl=acl)
    with pytest.raises(AuditFailure, match="not this committee's"):
        compare_chronicle_archives(world["bare"], world["bare"], params=params,
                                   acl=AclConfig(clients=(b"\x01" * 32,)))


def test_archives_without_config_need_explicit_rules(world: dict[str, Any]) -> None:
    with pytest.raises(AuditFailure, match=r"neither archive carries its member config"):
        compare_chronicle_archives(world["bare"], world["bare"])


def test_other_committees_are_refused(world: dict[str, Any]) -> None:
    with pytest.raises(AuditFailure, match="the archives are of different committees"):
        compare_chronicle_archives(world["a"], world["feed"])
    with pytest.raises(AuditFailure, match="the archives are of a 'feed' committee, not a "
                                           "chronicle"):
        compare_chronicle_archives(world["feed"], world["feed"])


def test_a_config_of_another_committee_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    text = world["cfg"].path.read_text().replace("anchor_every = 2", "anchor_every = 4")
    chain = _chain(world["committee"], [load_key_file(world["root"] / "devnet" /
                                                      f"member-{i}.key") for i in range(5)])
    arc = _archive(tmp_path, "other-config", chain, 0, [chain.next([])], text)
    with pytest.raises(AuditFailure, match="config text is not this committee's"):
        compare_chronicle_archives(arc, arc)
