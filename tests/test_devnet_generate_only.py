"""`devnet --generate-only` writes everything its layout lists, client.toml included, so
`submit`, `tail` and `status` work against members started by hand or in containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalitiond.cli import main
from coalitiond.node.client import load_client_config
from coalitiond.primitives.keys import load_key_file


def test_generate_only_writes_a_client_config_that_loads(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "devnet"
    assert main(["devnet", "--members", "4", "--dir", str(d), "--generate-only"]) == 0
    capsys.readouterr()
    client = load_client_config(d / "client.toml")
    assert client.key_file == d / "operator.key"
    assert load_key_file(client.key_file).public == load_key_file(d / "operator.key").public
    assert client.committee.n == 4
    assert client.member_config.committee_spec() == client.committee
    # Every member address is a default connect target.
    assert [port for _, port in client.connect] == [7400 + i for i in range(4)]
