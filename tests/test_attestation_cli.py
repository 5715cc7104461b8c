"""`coalitiond attest verify|quote`: JSON output, exit statuses (0 admitted, 1 refused,
2 operator error) and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_TESTDATA
from tdx_resign import NOW, ResignPki

from coalitiond.attestation import dcap, tsm
from coalitiond.attestation.policy import AttestationPolicy, check_ticket
from coalitiond.attestation.ticket import decode_ticket
from coalitiond.cli import main
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.keys import write_key_file

TDX = SHARED_TESTDATA / "tdx"
V4_NOW = 1752919234
V5_NOW = 1794008710
V4_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
V5_MRTD = "2a674327c50218dba880066b349b8d559d749ed68dce33fd651c184a877d084b07a9e583767a7ad5da13ed91deec2b70"


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, dict | None, str]:
    status = main(["attest", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else None), err


def verify(capsys: pytest.CaptureFixture[str], quote: Path, col: Path, at: int, *extra: object) -> tuple[int, dict | None, str]:
    return run(capsys, "verify", "--quote", quote, "--collateral", col, "--at", at, *extra)


def write_config(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "att.toml"
    p.write_text("[attestation]\n" + body)
    return p


def test_verify_real_v4_without_config(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = verify(capsys, TDX / "tdx_quote", TDX / "tdx_quote_collateral.json", V4_NOW)
    assert status == 0
    assert out is not None
    assert out["quote"]["mr_td"] == V4_MRTD
    assert out["quote"]["tcb_status"] == "UpToDate"
    assert out["quote"]["fmspc"] == "B0C06F000000"
    assert out["verdict"] == {"admitted": True, "reason": None, "checks": ["dcap"],
                              "not_checked": ["binding", "ticket_age"]}


def test_verify_outofdate_and_expired_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    col = json.loads((TDX / "tdx_quote_td15ex_collateral.json").read_text())
    del col["pck_certificate_chain"]
    stripped = tmp_path / "col.json"
    stripped.write_text(json.dumps(col))
    status, out, _ = verify(capsys, TDX / "tdx_quote", stripped, V5_NOW)
    assert status == 1
    assert out is not None
    assert out["quote"]["tcb_status"] == "OutOfDate"  # shown, but not admitted
    assert out["verdict"]["reason"] == "tcb_status"
    status, out, _ = verify(capsys, TDX / "tdx_quote", TDX / "tdx_quote_collateral.json", V4_NOW + 2 * 86400)
    assert status == 1
    assert out is not None
    assert out["quote"] is None
    assert out["verdict"]["reason"] == "collateral_expired"
    assert "TCBInfo expired" in out["verdict"]["detail"]


def test_verify_with_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f'mode = "tdx"\nmrtd = ["{V4_MRTD}"]\n')
    status, out, _ = verify(capsys, TDX / "tdx_quote", TDX / "tdx_quote_collateral.json", V4_NOW, "--config", cfg)
    assert status == 0
    assert out is not None
    assert out["verdict"]["checks"] == ["dcap", "measurements"]
    status, out, _ = verify(capsys, TDX / "tdx_quote_td15ex", TDX / "tdx_quote_td15ex_collateral.json", V5_NOW, "--config", cfg)
    assert status == 1
    assert out is not None
    assert out["verdict"]["reason"] == "mr_td"
    # The v5 sample has a non-zero MRCONFIGID: refused unless the policy relaxes that.
    cfg5 = write_config(tmp_path, f'mode = "tdx"\nmrtd = ["{V5_MRTD}"]\n')
    status, out, _ = verify(capsys, TDX / "tdx_quote_td15ex", TDX / "tdx_quote_td15ex_collateral.json", V5_NOW, "--config", cfg5)
    assert (status, out and out["verdict"]["reason"]) == (1, "host_fields")
    cfg5 = write_config(tmp_path, f'mode = "tdx"\nmrtd = ["{V5_MRTD}"]\nrequire_zero_host_fields = false\n')
    status, out, _ = verify(capsys, TDX / "tdx_quote_td15ex", TDX / "tdx_quote_td15ex_collateral.json", V5_NOW, "--config", cfg5)
    assert status == 0


def test_operator_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 'mode = "tdx"\n')
    status, out, err = verify(capsys, TDX / "tdx_quote", TDX / "tdx_quote_collateral.json", V4_NOW, "--config", cfg)
    assert (status, out) == (2, None)
    assert err == f'coalitiond: error: {cfg}: attestation.mrtd: mode = "tdx" needs at least one allowed MR_TD\n'
    missing = tmp_path / "missing"
    status, out, err = verify(capsys, missing, TDX / "tdx_quote_collateral.json", V4_NOW)
    assert (status, out) == (2, None)
    assert err == f"coalitiond: error: cannot read quote {missing}: No such file or directory\n"
    notoml = tmp_path / "bad.toml"
    notoml.write_text("[node]\n")
    status, _, err = verify(capsys, TDX / "tdx_quote", TDX / "tdx_quote_collateral.json", V4_NOW, "--config", notoml)
    assert status == 2
    assert err == f"coalitiond: error: {notoml}: attestation: missing required table\n"


def test_verify_garbage_quote(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x04\x00" + b"\x00" * 100)
    status, out, _ = verify(capsys, junk, TDX / "tdx_quote_collateral.json", V4_NOW)
    assert status == 1
    assert out is not None
    assert out["verdict"]["reason"] == "quote_invalid"


MEMBER_CONFIG = """
[node]
key_file = "member.key"
data_dir = "data"
listen = "127.0.0.1:7000"

[network]
name = "tdx-cli"

[committee]
component = "feed"
name = "gated"
{members}

[attestation]
mode = "tdx"
mrtd = ["{mrtd}"]
collateral_cache = "collateral"

[component]
publishers = ["{publisher}"]
"""


def test_quote_writes_a_ticket(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    pki = ResignPki()
    keys = [SigningKey(bytes([i + 9]) * 32) for i in range(4)]
    write_key_file(tmp_path / "member.key", keys[0])
    members = "".join(
        f'\n[[committee.members]]\npeer_id = "{k.public.hex()}"\naddress = "127.0.0.1:{7000 + i}"\n'
        for i, k in enumerate(keys)
    )
    mrtd = b"\x42" * 48
    cfg = tmp_path / "member.toml"
    cfg.write_text(MEMBER_CONFIG.format(members=members, mrtd=mrtd.hex(),
                                       publisher=keys[1].public.hex()))
    monkeypatch.setattr(tsm, "get_quote", lambda rd, **kw: pki.quote(mr_td=mrtd, report_data=rd))
    status, out, err = run(capsys, "quote", "--config", cfg)
    assert status == 0, err
    assert out is not None
    path = tmp_path / "data" / "attestation" / "tdx.ticket"
    assert out["ticket"] == str(path)
    ticket = decode_ticket(path.read_bytes())
    assert ticket.peer_id == keys[0].public
    v = dcap.verify_under_test_root(ticket.quote, pki.collateral(), NOW, pki.root_der)
    from coalitiond.config import load_config

    spec = load_config(cfg).committee_spec()
    policy = AttestationPolicy(allowed_mr_td=frozenset({mrtd}), max_ticket_age_seconds=10**10)
    check_ticket(policy, ticket, v, peer_id=keys[0].public, network_id=spec.network_id,
                 committee_id=spec.committee_id, epoch=0, now=ticket.issued_at)
    # The production root refuses the re-signed ticket through the CLI.
    col = tmp_path / "col.json"
    col.write_text(pki.collateral())
    status, out, _ = verify(capsys, path, col, NOW, "--config", cfg)
    assert status == 1
    assert out is not None
    assert out["input"] == "ticket"
    assert out["verdict"]["reason"] == "quote_invalid"
