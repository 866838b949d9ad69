"""OpenTelemetry metrics, configured once per process like tracing.

Every service records into one MeterProvider. Readers: a Prometheus scrape
endpoint (`/metrics` on `metrics_port`, through opentelemetry's Prometheus
exporter) and, when `otlp_endpoint` is set, OTLP export to the collector
that also receives the traces. Both carry the resource tracing uses
(`service_resource`: service name, namespace, version, instance), so a
metric and a trace of one process name it alike (Prometheus shows the
resource as `target_info`).

The instruments live in `services.common.instruments`; this module only
wires the provider and the endpoint. Without a reader (no port, no
endpoint) the API's no-op meter records nothing and costs next to nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from lorafleet import __version__
from services.common.config import SERVICE_NAMES, Config, ConfigError

log = logging.getLogger(__name__)
_lock = threading.Lock()
_endpoint: MetricsEndpoint | None = None
_configured = False
# How often OTLP export pushes (Prometheus is pulled on each scrape).
OTLP_EXPORT_INTERVAL_MS = 15_000


def service_resource(service_name: str, config: Config) -> Resource:
    """What traces and metrics of this process say about where they come
    from (OpenTelemetry's service.* resource attributes)."""
    # Any process name works ("trainer-child" too): the worker id when the
    # launcher or the deployment set one, else host, name and pid.
    known = service_name if service_name in SERVICE_NAMES else ""
    instance = (config.worker_id_of(known) if known else config.worker_id) or (
        f"{socket.gethostname()}-{service_name}-{os.getpid()}"
    )
    return Resource.create(
        {
            "service.name": f"lorafleet-{service_name}",
            "service.namespace": "lorafleet",
            "service.version": __version__,
            "service.instance.id": instance,
        }
    )


@dataclass(frozen=True)
class MetricsEndpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def setup_metrics(service_name: str, config: Config) -> MetricsEndpoint | None:
    """Installs the process-wide MeterProvider once (the first caller names
    it, as with tracing) and starts the scrape endpoint when a port is set.
    Returns the endpoint (None when there is none)."""
    global _configured, _endpoint
    with _lock:
        if _configured:
            return _endpoint
        _configured = True
        readers = []
        if config.metrics_port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server

            readers.append(PrometheusMetricReader())
            host = config.metrics_host or config.host
            try:
                server, _ = start_http_server(config.metrics_port, addr=host)
            except OSError as exc:
                raise ConfigError(
                    f"{service_name}: cannot serve metrics on {host}:"
                    f"{config.metrics_port} ({exc}): set metrics_port "
                    "(LORAFLEET_METRICS_PORT) to a free port, 0 for any"
                ) from exc
            _endpoint = MetricsEndpoint(host, server.server_port)
            log.info("%s metrics at %s", service_name, _endpoint.url)
        if config.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import (
                PeriodicExportingMetricReader,
            )

            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=config.otlp_endpoint, insecure=True),
                    export_interval_millis=OTLP_EXPORT_INTERVAL_MS,
                )
            )
        if readers and not isinstance(metrics.get_meter_provider(), MeterProvider):
            metrics.set_meter_provider(
                MeterProvider(
                    resource=service_resource(service_name, config),
                    metric_readers=readers,
                )
            )
        return _endpoint
