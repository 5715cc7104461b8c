"""`coalitiond devnet --component intents|ledger` generates three citizen feed committees and a
confluence spanning them (the full run, with its audit, is exercised by hand and in the
README tour: it takes a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalitiond.cli.devnet import citizen_configs, generate_devnet
from coalitiond.components.confluence.component import Confluence
from coalitiond.config import load_config
from coalitiond.node.confluence import load_citizens
from coalitiond.node.devnet_workloads import CitizenLoad
from coalitiond.node.member import build_component
from coalitiond.primitives.crypto import SigningKey


@pytest.mark.parametrize("kind", ["intents", "ledger"])
def test_a_confluence_devnet_spans_its_own_citizen_committees(tmp_path: Path, kind: str) -> None:
    paths = generate_devnet(4, kind, tmp_path, 21000)
    cfg = load_config(paths[0], check_key=False)
    component = build_component(cfg)
    assert isinstance(component, Confluence) and len(component.citizens) == 3
    spanned = load_citizens(cfg, component.citizens)
    assert [s.committee_id for _, _, s in spanned] == list(component.citizens)
    assert len(citizen_configs(tmp_path)) == 9
    # Re-running rewrites nothing (same keys, same configs).
    before = [p.read_text() for p in paths]
    assert [p.read_text() for p in generate_devnet(4, kind, tmp_path, 21000)] == before


def test_the_ledger_load_repeats_every_fifth_submission_on_every_citizen() -> None:
    key = SigningKey(b"\x01" * 32)
    loads = [CitizenLoad("ledger", k, key, b"\x02" * 32, run_id=7) for k in range(3)]
    bodies = [[load.round(n) for load in loads] for n in (5, 6)]
    assert len({b[0] for b in bodies[0]}) == 3  # signed envelopes differ by citizen nonce...
    from coalitiond.commands.envelope import Envelope
    ids = [[Envelope.decode(e[0]).commands[0].args["body"]["submission_id"] for e in row]
           for row in bodies]
    assert len(set(ids[0])) == 1 and len(set(ids[1])) == 3
