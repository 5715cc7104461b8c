"""The foundation CLI (keygen, init, fingerprint, devnet, --version), run in-process through
`coalitiond.cli.main` and once as a real subprocess; plus the observability base (structlog
configuration, the metrics registry)."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import structlog

from coalitiond import __version__
from coalitiond.cli import main
from coalitiond.cli.devnet import generate_devnet
from coalitiond.config import COMPONENT_KINDS, load_config
from coalitiond.primitives import logs, metrics
from coalitiond.primitives.keys import load_key_file

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "configs" / "coalition-example.toml"
GOLDEN = {
    "coalition": "661e272774fdd4d48a67dc58b1807e2091e2d075906e51b6c91938d45f698948",
    "coalition_root": "9f0c9887fb848ed107f96e10fd2fa41cd704766640774aef08059e85992f07fe",
    "modules": {
        "atlas": "573d3abe19db3e1bdfb5724f398db74aca5e3dd41a99a3d99b3894375e0a9c02",
        "almanac": "8284e44ef6fa4a0182fa6551349b02796d9bd0990195f0338a352f721237863f",
        "chronicle": "608aa58a518eee990c27015d86c134214f63c37164fedc34f0e12b4e417eb1fb",
        "compute": "e943e18404ec065c41ae8e1bd08199fb29c0ea0f2b5a6ce4d88604b66407c273",
    },
    "ticket_issuer_root": None,
    "confluences": ["c84b1bba373ee26ffdca1f84def7bc42e94c0410696123057b4ad306f03e9860"],
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """argparse refusals exit 2 with a usage message."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


# --- version and help ---------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"coalitiond {__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys)
    assert code == 2
    for name in ("keygen", "init", "fingerprint", "devnet"):
        assert name in err


# --- keygen -------------------------------------------------------------------------------


def test_keygen(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "id.key"
    code, out, err = run_cli(capsys, "keygen", "--out", str(key))
    assert (code, err) == (0, "")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert out == load_key_file(key).public.hex() + "\n"
    code, out, err = run_cli(capsys, "keygen", "--out", str(key))
    assert (code, out) == (2, "")
    assert err == f"coalitiond: error: {key}: refusing to overwrite an existing key file\n"
    code, out, _ = run_cli(capsys, "keygen", "--out", str(key), "--force")
    assert code == 0 and out.strip() == load_key_file(key).public.hex()


def test_keygen_into_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "missing" / "id.key"
    code, out, err = run_cli(capsys, "keygen", "--out", str(key))
    assert (code, out) == (2, "")
    assert err == f"coalitiond: error: {key}: cannot write key file: No such file or directory\n"


# --- init ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", COMPONENT_KINDS)
def test_init_writes_a_loadable_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    out_path = tmp_path / f"{kind}.toml"
    code, out, err = run_cli(capsys, "init", "--component", kind, "--out", str(out_path))
    assert (code, err) == (0, "")
    config = load_config(out_path)
    key = load_key_file(tmp_path / f"{kind}.key")
    assert config.committee.component == kind and config.committee.name == kind
    assert config.committee.peer_ids == (key.public,)
    assert config.node.key_file == tmp_path / f"{kind}.key"
    assert config.node.data_dir == tmp_path / f"{kind}-data"
    note = ""
    if kind == "feed":
        # A feed gets its own publisher key, never the member's identity.
        publisher = load_key_file(tmp_path / "feed-publisher.key")
        assert config.component.publishers == (publisher.public,)  # type: ignore[union-attr]
        assert publisher.public != key.public
        note = f"; publisher key {tmp_path / 'feed-publisher.key'}"
    assert out == (f"wrote {out_path} ({kind}/{kind}); peer id {key.public.hex()} "
                   f"(key {tmp_path / f'{kind}.key'}){note}\n")
    text = out_path.read_text()
    assert text.count("\n# ") > 10  # commented for the operator


def test_init_reuses_an_existing_key_and_refuses_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "k.key"
    assert main(["keygen", "--out", str(key)]) == 0
    peer = capsys.readouterr().out.strip()
    cfg = tmp_path / "m.toml"
    code, _, _ = run_cli(capsys, "init", "--component", "almanac", "--out", str(cfg),
                         "--key", str(key), "--name", "acme.almanac", "--network", "acme",
                         "--listen", "127.0.0.1:7100")
    assert code == 0
    config = load_config(cfg)
    assert config.committee.peer_ids == (bytes.fromhex(peer),)
    assert (config.committee.name, config.network.name) == ("acme.almanac", "acme")
    assert str(config.node.listen) == "127.0.0.1:7100"
    code, out, err = run_cli(capsys, "init", "--component", "almanac", "--out", str(cfg))
    assert (code, out) == (2, "")
    assert err == f"coalitiond: error: {cfg}: refusing to overwrite an existing config (use --force)\n"
    code, _, _ = run_cli(capsys, "init", "--component", "feed", "--out", str(cfg),
                         "--key", str(key), "--force")
    assert code == 0 and load_config(cfg).committee.component == "feed"


def test_init_quotes_awkward_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    name = 'acme "feed"\\ \u6c34\n\x7f'
    cfg = tmp_path / "m.toml"
    code, _, err = run_cli(capsys, "init", "--component", "ledger", "--out", str(cfg),
                           "--name", name)
    assert (code, err) == (0, "")
    assert load_config(cfg).committee.name == name


def test_init_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = usage_error(capsys, "init", "--component", "oracle", "--out", str(tmp_path / "x.toml"))
    assert "argument --component: invalid choice: 'oracle'" in err
    missing_dir = tmp_path / "nope"
    code, _, err = run_cli(capsys, "init", "--component", "feed", "--out",
                           str(missing_dir / "x.toml"))
    assert code == 2
    assert err == f"coalitiond: error: {missing_dir}: directory does not exist\n"
    loose = tmp_path / "loose.key"
    assert main(["keygen", "--out", str(loose)]) == 0
    capsys.readouterr()
    os.chmod(loose, 0o644)
    code, _, err = run_cli(capsys, "init", "--component", "feed", "--out",
                           str(tmp_path / "x.toml"), "--key", str(loose))
    assert code == 2
    assert err == (f"coalitiond: error: {loose}: key file mode is 0644; it must not be readable "
                   f"by group or others (run: chmod 600 {loose})\n")
    assert not (tmp_path / "x.toml").exists()
    code, _, err = run_cli(capsys, "init", "--component", "feed", "--out",
                           str(tmp_path / "y.toml"), "--listen", "nowhere")
    assert code == 2
    assert err == f"coalitiond: error: {tmp_path / 'y.toml'}: node.listen: expected HOST:PORT, got 'nowhere'\n"
    # Refused before anything was written: no config, no key, no publisher key.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loose.key"]


# --- fingerprint --------------------------------------------------------------------------


def test_fingerprint_golden(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "fingerprint", "--config", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert json.loads(out) == GOLDEN


def test_fingerprint_of_a_member_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    member = (REPO / "configs" / "atlas.toml").read_text()
    coalition = EXAMPLE.read_text()
    path = tmp_path / "m.toml"
    path.write_text(member + "\n" + coalition)  # key file absent: not needed to fingerprint
    code, out, _ = run_cli(capsys, "fingerprint", "--config", str(path))
    assert code == 0 and json.loads(out) == GOLDEN


def test_fingerprint_of_a_confluence(capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "configs" / "intents.toml"
    code, out, _ = run_cli(capsys, "fingerprint", "--confluence", "--config", str(path))
    expected = load_config(path, check_key=False).confluence_fingerprint()
    assert code == 0 and expected is not None
    assert json.loads(out) == {"confluence": expected.hex()}
    feed = REPO / "configs" / "feed.toml"
    code, out, err = run_cli(capsys, "fingerprint", "--confluence", "--config", str(feed))
    assert (code, out) == (2, "")
    assert err == (f"coalitiond: error: {feed}: committee.component: 'feed' is not a "
                   f"confluence (intents, ledger)\n")


def test_fingerprint_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    code, out, err = run_cli(capsys, "fingerprint", "--config", str(missing))
    assert (code, out, err) == (2, "", f"coalitiond: error: {missing}: config file not found\n")
    feed = REPO / "configs" / "feed.toml"
    code, out, err = run_cli(capsys, "fingerprint", "--config", str(feed))
    assert (code, out) == (2, "")
    assert err == f"coalitiond: error: {feed}: coalition: missing required table\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('not_shipped = []', 'not_shipped = ["atlas"]'))
    code, out, err = run_cli(capsys, "fingerprint", "--config", str(bad))
    assert (code, out) == (2, "")
    assert err == (f"coalitiond: error: {bad}: coalition.not_shipped: module 'atlas' is also "
                   f"listed in coalition.modules\n")
    assert "--config" in usage_error(capsys, "fingerprint")


MEMBER_REFUSALS = [
    # (edit of configs/feed.toml, key, problem)
    (("[network]", "[network]\nnetwork_id = 1"), "network.network_id",
     "unknown key (allowed here: bootstrap, name)"),
    (('listen = "0.0.0.0:7000"\n', ""), "node.listen", "missing required key"),
    (("epoch = 0", 'epoch = "zero"'), "committee.epoch", "expected an integer, got a string"),
    (('peer_id = "', 'peer_id = "ab'), "committee.members[0].peer_id",
     "expected 64 hex characters (32 bytes), got 66"),
    (("# fault_bound = 1", "fault_bound = 5"), "committee.fault_bound",
     "q > n: fault bound f_s=5 needs quorum q=6 = ceil((n + f_s + 1)/2), but the committee "
     "has only n=5 members"),
]


@pytest.mark.parametrize(("edit", "key", "problem"), MEMBER_REFUSALS)
def test_member_config_refusals_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, edit: tuple[str, str], key: str,
    problem: str,
) -> None:
    text = (REPO / "configs" / "feed.toml").read_text()
    assert edit[0] in text
    path = tmp_path / "member.toml"
    path.write_text(text.replace(edit[0], edit[1], 1) + "\n" + EXAMPLE.read_text())
    code, out, err = run_cli(capsys, "fingerprint", "--config", str(path))
    assert (code, out) == (2, "")
    assert err == f"coalitiond: error: {path}: {key}: {problem}\n"


def test_duplicate_member_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = (REPO / "configs" / "feed.toml").read_text()
    first = text.split('peer_id = "')[1].split('"')[0]
    second = text.split('peer_id = "')[2].split('"')[0]
    path = tmp_path / "member.toml"
    path.write_text(text.replace(second, first))
    code, _, err = run_cli(capsys, "fingerprint", "--confluence", "--config", str(path))
    assert code == 2
    assert err == (f"coalitiond: error: {path}: committee.members[1].peer_id: duplicate member: "
                   f"same peer id as committee.members[0]\n")


# --- devnet -------------------------------------------------------------------------------


def test_devnet_generates_and_is_rerunnable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "devnet"
    code, out, err = run_cli(capsys, "devnet", "--members", "5", "--component", "feed",
                             "--dir", str(d), "--generate-only")
    assert (code, err) == (0, "")
    assert "(feed/devnet-feed, epoch 0): n=5 q=4; safe against 2 Byzantine, live with 1 down" in out
    configs = [load_config(d / f"member-{i}.toml") for i in range(5)]
    ids = {c.committee_spec().committee_id for c in configs}
    assert len(ids) == 1
    assert [str(c.node.listen) for c in configs] == [f"127.0.0.1:{7400 + i}" for i in range(5)]
    for i, c in enumerate(configs):
        assert c.committee_spec().index_of(load_key_file(d / f"member-{i}.key").public) == i
        assert (d / f"member-{i}-data").is_dir()
    operator = load_key_file(d / "operator.key").public
    assert configs[0].component.publishers == (operator,)  # type: ignore[union-attr]
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    code, out2, _ = run_cli(capsys, "devnet", "--members", "5", "--component", "feed",
                            "--dir", str(d), "--generate-only")
    assert code == 0 and out2 == out
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("kind", COMPONENT_KINDS)
def test_generate_devnet_every_kind(tmp_path: Path, kind: str) -> None:
    paths = generate_devnet(3, kind, tmp_path, 9000)
    assert paths == [tmp_path / f"member-{i}.toml" for i in range(3)]
    specs = [load_config(p).committee_spec() for p in paths]
    assert len({s.committee_id for s in specs}) == 1 and specs[0].component_kind == kind


def test_devnet_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "devnet", "--members", "0", "--dir", str(tmp_path / "a"))
    assert (code, err) == (2, "coalitiond: error: --members must be between 1 and 15, got 0\n")
    code, _, err = run_cli(capsys, "devnet", "--members", "16", "--dir", str(tmp_path / "a"))
    assert (code, err) == (2, "coalitiond: error: --members must be between 1 and 15, got 16\n")
    code, _, err = run_cli(capsys, "devnet", "--base-port", "65500", "--dir", str(tmp_path / "a"))
    assert code == 2
    assert err == ("coalitiond: error: --base-port 65500 leaves ports outside 1024..65535 "
                   "(the devnet uses up to 65604)\n")
    assert not (tmp_path / "a").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "devnet", "--dir", str(blocker))
    assert code == 2 and err.startswith(f"coalitiond: error: {blocker}: cannot create the devnet")
    # A damaged key in an existing devnet is reported, not silently replaced.
    d = tmp_path / "dn"
    generate_devnet(2, "feed", d, 9100)
    (d / "member-1.key").write_text("garbage\n")
    code, _, err = run_cli(capsys, "devnet", "--members", "2", "--dir", str(d))
    assert code == 2 and err.startswith(f"coalitiond: error: {d / 'member-1.key'}: malformed key file")
    assert "invalid choice: 'oracle'" in usage_error(capsys, "devnet", "--component", "oracle")


# --- one real process ---------------------------------------------------------------------


def test_subprocess_fingerprint_and_version() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "coalitiond", "fingerprint", "--config", str(EXAMPLE)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == GOLDEN
    done = subprocess.run(
        [sys.executable, "-m", "coalitiond", "fingerprint", "--config", "/nonexistent.toml"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "coalitiond: error: /nonexistent.toml: config file not found\n"


# --- observability base -------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_structlog() -> object:
    yield None
    structlog.reset_defaults()


def test_logs_json_when_not_a_terminal(restore_structlog: object) -> None:
    out = io.StringIO()
    logs.configure("auto", "info", stream=out)
    logs.get_logger("test").info("hello", member=3)
    record = json.loads(out.getvalue())
    assert record["event"] == "hello" and record["member"] == 3
    assert record["level"] == "info" and record["timestamp"].endswith("Z")


def test_logs_console_on_a_terminal_and_json_on_request(restore_structlog: object) -> None:
    tty = _Tty()
    logs.configure("auto", "info", stream=tty)
    logs.get_logger("test").info("hello")
    assert "hello" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue())
    tty = _Tty()
    logs.configure("json", "info", stream=tty)
    logs.get_logger("test").info("hello")
    assert json.loads(tty.getvalue())["event"] == "hello"


def test_logs_level_filter(restore_structlog: object) -> None:
    out = io.StringIO()
    logs.configure("json", "warning", stream=out)
    log = logs.get_logger("test")
    log.info("quiet")
    log.warning("loud")
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["loud"]
    assert logging.WARNING > logging.INFO


def test_metrics_registry() -> None:
    # Unique names: the registry is process-wide and other tests register into it too.
    tag = uuid.uuid4().hex[:8]
    c = metrics.counter(f"test_foundation_{tag}_total", "a test counter", ("reason",))
    c.labels(reason="x").inc(2)
    assert metrics.sample_value(f"coalitiond_test_foundation_{tag}_total", {"reason": "x"}) == 2.0
    assert metrics.sample_value("coalitiond_build_info", {"version": __version__}) == 1.0
    g = metrics.gauge(f"test_foundation_{tag}_gauge", "a test gauge")
    g.set(7)
    assert metrics.sample_value(f"coalitiond_test_foundation_{tag}_gauge") == 7.0
    h = metrics.histogram(f"test_foundation_{tag}_seconds", "a test histogram", buckets=(0.1, 1.0))
    h.observe(0.5)
    assert metrics.sample_value(f"coalitiond_test_foundation_{tag}_seconds_bucket",
                                {"le": "1.0"}) == 1.0
    # Registering a name twice is a programming error, caught at import time.
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.counter(f"test_foundation_{tag}_total", "registered twice", ("reason",))


# --- packaging (exercised for real later; checked statically now) -------------------------


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit() -> None:
    d = _directives((REPO / "systemd" / "coalitiond@.service").read_text())
    for key, value in [("Type", "notify"), ("NoNewPrivileges", "yes"),
                       ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("Restart", "on-failure"), ("User", "coalitiond")]:
        assert d[key] == [value], key
    assert "/var/lib/coalitiond/%i" in d["ReadWritePaths"]
    assert d["ExecStart"] == ["/usr/local/bin/coalitiond run --config /etc/coalitiond/%i.toml"]
    assert d["StateDirectory"] == ["coalitiond/%i"]


def test_dockerfile_and_ignore() -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms and all("slim" in f and "alpine" not in f for f in froms)
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and "root" not in user[-1] and user[-1].split()[1] != "0"
    assert 'VOLUME ["/var/lib/coalitiond"]' in text
    assert 'ENTRYPOINT ["coalitiond"]' in text
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "**/*.key" in ignored and ".venv" in ignored and ".git" in ignored
