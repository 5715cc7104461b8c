"""The monitoring files in deploy/ agree with the daemon: every metric the Grafana dashboard
and the Prometheus rules name is one the daemon exports, every alert has its runbook
paragraph, and the dashboard covers what an operator of a committee looks at. (`make
promtool` runs Prometheus' own checks and the rule unit tests.)"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import coalitiond
from coalitiond.primitives.metrics import REGISTRY

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "coalitiond-committee.json"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
OPERATIONS = REPO / "docs" / "operations.md"

#: Metrics the rules name before the daemon exports them, each with where it comes from.
#: Keep this empty but for work in flight on another branch (docs/decisions.md).
PENDING: dict[str, str] = {}

#: A daemon metric; `level:metric:operation` names are recording rules (RECORDED).
METRIC_NAME = re.compile(r"(?<![:\w])coalitiond_[a-z0-9_]+(?![:\w])")
RECORDED = re.compile(r"\b[a-z_]+:coalitiond_[a-z0-9_]+:[a-z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
            "histogram": ("_bucket", "_sum", "_count", "_created")}


def exported_names() -> set[str]:
    """Every sample name the daemon can expose: each runtime module imported (they register
    their metrics at import), each family expanded by its type's suffixes."""
    for module in pkgutil.walk_packages(coalitiond.__path__, "coalitiond."):
        if ".testing" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    names = set()
    for family in REGISTRY.collect():
        for suffix in SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def _exprs(obj: Any) -> list[str]:
    return [t["expr"] for p in obj["panels"] for t in p.get("targets", [])]


def test_the_daemon_exports_what_the_names_are_checked_against() -> None:
    names = exported_names()
    assert {"coalitiond_consensus_finalized_height", "coalitiond_consensus_finality_seconds_bucket",
            "coalitiond_consensus_nullify_votes_total", "coalitiond_build_info"} <= names


def test_the_dashboard_loads_and_every_panel_queries_metrics_the_daemon_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "coalitiond-committee"
    names = exported_names()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        used = {m for e in exprs for m in METRIC_NAME.findall(e)}
        assert used, f"panel {panel['title']!r} queries no coalitiond metric"
        missing = used - names
        assert not missing, f"panel {panel['title']!r}: the daemon exports no {sorted(missing)}"
    # The committee variable is read from a metric the daemon exports too.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(METRIC_NAME.findall(variables["committee"]["query"])) <= names


@pytest.mark.parametrize("topic, metric", [
    ("height", "coalitiond_consensus_finalized_height"),
    ("finalisation latency", "coalitiond_consensus_finality_seconds_bucket"),
    ("views and timeouts", "coalitiond_consensus_nullify_votes_total"),
    ("per-member skew", "max(coalitiond_consensus_finalized_height"),
    ("links", "coalitiond_network_members_connected"),
    ("store commit latency", "coalitiond_store_commit_seconds_bucket"),
])
def test_the_dashboard_covers(topic: str, metric: str) -> None:
    exprs = _exprs(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    assert any(metric in e for e in exprs), f"no panel shows {topic} ({metric})"


def _rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for r in g["rules"]]


def test_every_metric_the_rules_name_is_exported_or_pending_elsewhere() -> None:
    names = exported_names()
    for rule in _rules(RULES) + _rules(ALERTS):
        name = rule.get("alert") or rule["record"]
        for metric in METRIC_NAME.findall(rule["expr"]):
            assert metric in names or metric in PENDING, (
                f"rule {name}: the daemon exports no {metric}")
    recorded = {r["record"] for r in _rules(RULES)}
    for rule in _rules(ALERTS):
        for name in RECORDED.findall(rule["expr"]):
            assert name in recorded, f"alert {rule['alert']}: no recording rule {name}"
    # A pending name that the daemon now exports should leave PENDING.
    assert not set(PENDING) & names, f"{sorted(set(PENDING) & names)} are exported now"


def test_every_alert_has_its_runbook_paragraph() -> None:
    docs = OPERATIONS.read_text(encoding="utf-8")
    alerts = [r for r in _rules(ALERTS) if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "CoalitiondNoQuorum", "CoalitiondHeightStalled", "CoalitiondViewTimeoutsClimbing",
        "CoalitiondAttestationExpiryNear", "CoalitiondAnchorLag", "CoalitiondDiskAlmostFull",
        "CoalitiondPeersMissing"}
    for alert in alerts:
        heading = f"#### {alert['alert']}"
        assert heading in docs, f"docs/operations.md has no runbook entry {heading!r}"
        anchor = alert["alert"].lower()
        assert alert["annotations"]["runbook"] == f"docs/operations.md#{anchor}"
        assert alert["labels"]["severity"] in ("warning", "critical")


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (make promtool-deps; CI installs it first)")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, with the dashboard variable filled in, parsed by Prometheus' own
    parser (as a recording rule for `promtool check rules`)."""
    exprs = _exprs(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$committee", "coalitiond-feed")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout
