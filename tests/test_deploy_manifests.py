"""deploy/: the compose file against the compose-spec schema, the Kubernetes manifests against
Kubernetes' own schemas (strict: an unknown field is an error), and what neither schema
knows: the pieces agree with each other and with the committee deploy/make-committee.sh
writes (names, ports, probes, the quorum the PodDisruptionBudget keeps). The system test
(`make system-test`) runs the image and the committee for real."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from coalitiond.config import load_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
#: The Kubernetes schema version the manifests are checked against (the oldest we document).
KUBE_VERSION = "1.30.0"
MEMBERS = 4


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _manifests() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for name in ("service", "statefulset", "pdb")
            for doc in yaml.safe_load_all((KUBE / f"{name}.yaml").read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """deploy/make-committee.sh run for real, once per mode."""
    out = {}
    for mode in ("compose", "kubernetes"):
        d = tmp_path_factory.mktemp(mode)
        r = subprocess.run(["bash", str(DEPLOY / "make-committee.sh"), str(d), str(MEMBERS),
                            mode], capture_output=True, text=True, check=False,
                           env={"COALITIOND": f"{sys.executable} -m coalitiond",
                                "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        out[mode] = d
    return out


@pytest.mark.parametrize("kind", ["Service", "StatefulSet", "PodDisruptionBudget"])
def test_each_manifest_is_valid_against_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate.validate(_manifests()[kind], KUBE_VERSION, strict=True)


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    broken = copy.deepcopy(_manifests()["StatefulSet"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_statefulset_service_and_budget_fit_together(committee: dict[str, Path]) -> None:
    m = _manifests()
    service, sts, pdb = m["Service"], m["StatefulSet"], m["PodDisruptionBudget"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    # Headless, publishing members before they are ready (they must reach each other first).
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert spec["serviceName"] == service["metadata"]["name"]
    assert spec["podManagementPolicy"] == "Parallel"
    for selector in (service["spec"]["selector"], spec["selector"]["matchLabels"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    # The budget keeps a quorum of the committee the replicas run.
    configs = [load_config(committee["kubernetes"] / f"member-{i}" / "member.toml",
                           check_key=False) for i in range(MEMBERS)]
    q = configs[0].committee_spec().quorum
    assert spec["replicas"] == MEMBERS == configs[0].committee_spec().n
    assert pdb["spec"]["minAvailable"] == q
    assert spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"] <= MEMBERS - q
    # Members dial each other at <statefulset>-<i>.<service>:<member port>.
    (main,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    expected = [f"{sts['metadata']['name']}-{i}.{service['metadata']['name']}:{ports['member']}"
                for i in range(MEMBERS)]
    assert [str(mem.address) for mem in configs[0].committee.members] == expected
    assert str(configs[0].node.metrics) == f"0.0.0.0:{ports['metrics']}"
    # Probes: ready = /readyz, alive = /healthz, on the metrics port.
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # Data on a claim per pod, at the data_dir of the configs; config and key from the Secret.
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {v["name"]: v["mountPath"] for v in main["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(configs[0].node.data_dir)
    secret = next(v["secret"] for v in pod["volumes"] if "secret" in v)
    kustomization = _load(KUBE / "kustomization.yaml")
    (generator,) = kustomization["secretGenerator"]
    assert generator["name"] == secret["secretName"]
    assert sorted(f.split("=")[0] for f in generator["files"]) == sorted(
        f"member-{i}.{ext}" for i in range(MEMBERS) for ext in ("key", "toml"))
    assert set(kustomization["resources"]) == {"service.yaml", "statefulset.yaml", "pdb.yaml"}
    assert main["args"] == ["run", "--config", f"{mounts['member']}/member.toml"]


def test_compose_is_valid_against_the_compose_spec() -> None:
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                        "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_members_volumes_health_and_scrape_targets(committee: dict[str, Path]) -> None:
    compose = _load(DEPLOY / "compose.yaml")
    members = sorted(s for s in compose["services"] if s.startswith("member-"))
    assert members == [f"member-{i}" for i in range(MEMBERS)]
    configs = [load_config(committee["compose"] / name / "member.toml", check_key=False)
               for name in members]
    assert len({c.committee_spec().committee_id for c in configs}) == 1
    assert [str(m.address) for m in configs[0].committee.members] == [
        f"{name}:7000" for name in members]
    data_volumes = set()
    for name, config in zip(members, configs, strict=True):
        service = compose["services"][name]
        assert service["hostname"] == name
        mounts = dict(v.rsplit(":", 1)[0].split(":", 1) if v.endswith(":ro") else v.split(":")
                      for v in service["volumes"])
        assert mounts[f"./committee/{name}"] == "/etc/coalitiond"
        data = next(src for src, dst in mounts.items() if dst == str(config.node.data_dir))
        data_volumes.add(data)
        assert service["command"] == ["run", "--config", "/etc/coalitiond/member.toml"]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert f":{config.node.metrics.port}/readyz" in " ".join(service["healthcheck"]["test"])
    assert len(data_volumes) == MEMBERS and data_volumes <= set(compose["volumes"])
    prometheus = _load(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"{n}:{configs[0].node.metrics.port}"
                                                   for n in members]
    assert "./prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
