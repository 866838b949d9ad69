"""The provisioned Grafana dashboard queries metrics the services export,
under the names Prometheus gives them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "compose" / "grafana" / "dashboards" / "lorafleet.json"

# Each instrument recorded once, through the Prometheus exporter, in a fresh
# interpreter (this one's global meter is the tests' in-memory provider).
EXPOSITION = """
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

registry = CollectorRegistry()
metrics.set_meter_provider(
    MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
)
from services.common import instruments as i

labels = {
    "rpc.method": "m", "rpc.response.status_code": "OK", "lorafleet.job.kind": "k",
    "lorafleet.job.outcome": "o", "lorafleet.job.state": "s", "lorafleet.job.id": "j",
    "lorafleet.loss.split": "train", "lorafleet.token.type": "t",
    "lorafleet.cache.result": "hit", "lorafleet.cache.measure": "m",
    "lorafleet.deployment": "d", "lorafleet.arm": "a",
}
for name in dir(i):
    instrument = getattr(i, name)
    for method in ("record", "add", "set"):
        if callable(getattr(instrument, method, None)) and hasattr(instrument, "name"):
            getattr(instrument, method)(1, labels)
            break
class Source:
    pass
source = Source()
i.job_queues.add(source, lambda _: [Observation(1, labels)])
i.adapter_caches.add(source, lambda _: [Observation(1, labels)])
print(generate_latest(registry).decode())
"""


def exposition() -> str:
    ran = subprocess.run(
        [sys.executable, "-c", EXPOSITION],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_every_dashboard_query_names_an_exported_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    text = exposition()
    metric_names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    label_names = set(re.findall(r"[{,]([a-zA-Z_][a-zA-Z0-9_]*)=", text))
    # service_name etc. come from the resource (the collector turns it into
    # labels); `le` is every histogram's bucket label.
    label_names |= {"service_name", "service_instance_id", "le"}
    for expr in exprs:
        for token in re.findall(r"\b((?:rpc|lorafleet|service)_[a-z_]+)\b", expr):
            assert token in metric_names | label_names, (
                f"{token!r} in {expr!r} is neither an exported metric nor a label"
            )
    # And each metric family the dashboard promises has a panel.
    joined = " ".join(exprs)
    for family in (
        "rpc_server_call_duration_seconds",
        "lorafleet_job_queue_depth",
        "lorafleet_training_loss",
        "lorafleet_deployment_requests_total",
        "lorafleet_deployment_request_duration_seconds",
        "lorafleet_inference_time_to_first_token_seconds",
        "lorafleet_inference_adapter_cache_requests_total",
    ):
        assert family in joined, family
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"RPC rate per service", "Job queue", "Training loss"} <= titles
    assert any("per arm" in t for t in titles)
