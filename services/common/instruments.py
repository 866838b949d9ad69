"""Every metric the suite records, in one place: names, units, attributes.

RPC metrics follow OpenTelemetry's RPC semantic conventions
(`rpc.server.call.duration` in seconds, with `rpc.system.name`,
`rpc.method` as "package.Service/Method" and `rpc.response.status_code`);
the rest are `lorafleet.*`. Prometheus shows them with dots as underscores
and the unit appended (`rpc_server_call_duration_seconds_bucket`,
`lorafleet_job_duration_seconds_count`, ...).

Instruments come from the global meter, so they are no-ops until
`services.common.metrics.setup_metrics` installs a provider with a reader,
and recording never raises into the code that records. Observable gauges
(queue depths, adapter bytes) read their sources at collection time: the
sources register here and are held weakly, so a stopped engine or cache
simply stops reporting.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from lorafleet import __version__

log = logging.getLogger(__name__)
_meter = metrics.get_meter("lorafleet", __version__)

# Seconds: RPCs from sub-millisecond reads to hour-long watches.
_RPC_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
_RPC_BUCKETS += [30, 60, 300, 1800, 3600]
_JOB_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400]
_TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]
_LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120]

rpc_server_duration = _meter.create_histogram(
    "rpc.server.call.duration",
    unit="s",
    description="Duration of incoming RPCs, by method and status code",
    explicit_bucket_boundaries_advisory=_RPC_BUCKETS,
)
job_duration = _meter.create_histogram(
    "lorafleet.job.duration",
    unit="s",
    description="Wall time of a job attempt that ended, by kind and outcome",
    explicit_bucket_boundaries_advisory=_JOB_BUCKETS,
)
training_loss = _meter.create_gauge(
    "lorafleet.training.loss",
    description="The latest training (or eval) loss a running training reported",
)
training_tokens_per_second = _meter.create_gauge(
    "lorafleet.training.throughput",
    unit="{token}/s",
    description="Tokens per second of a running training, since it (re)started",
)
training_steps = _meter.create_gauge(
    "lorafleet.training.step",
    unit="{step}",
    description="The step a running training reached",
)
inference_tokens = _meter.create_counter(
    "lorafleet.inference.tokens",
    unit="{token}",
    description="Tokens processed by inference, by type (prompt, completion)",
)
time_to_first_token = _meter.create_histogram(
    "lorafleet.inference.time_to_first_token",
    unit="s",
    description="From a request's arrival in the batch queue to its first token",
    explicit_bucket_boundaries_advisory=_TTFT_BUCKETS,
)
batch_occupancy = _meter.create_histogram(
    "lorafleet.inference.batch.occupancy",
    unit="",  # a ratio; "1" would be named `_ratio` by some exporters only
    description="Rows decoding together per decode step over the batch's capacity",
    explicit_bucket_boundaries_advisory=[0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0],
)
adapter_cache_requests = _meter.create_counter(
    "lorafleet.inference.adapter_cache.requests",
    unit="{request}",
    description="Requests for an adapter, by result (hit: already loaded; miss)",
)
deployment_requests = _meter.create_counter(
    "lorafleet.deployment.requests",
    unit="{request}",
    description="Generation requests the gateway routed, by deployment, arm and "
    "status code",
)
deployment_request_duration = _meter.create_histogram(
    "lorafleet.deployment.request.duration",
    unit="s",
    description="Latency of successful routed requests, by deployment and arm",
    explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
)


class _Sources:
    """Objects read at collection time: (object, read) pairs, held weakly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[weakref.ref, Callable]] = []

    def add(self, owner: object, read: Callable[[object], Iterable[Observation]]):
        with self._lock:
            self._items = [(r, f) for r, f in self._items if r() is not None]
            self._items.append((weakref.ref(owner), read))

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._items)
        for ref, read in items:
            owner = ref()
            if owner is None:
                continue
            try:
                yield from read(owner)
            except Exception:  # noqa: BLE001 - a failing source skips one scrape
                log.debug("metrics source %r failed", owner, exc_info=True)


job_queues = _Sources()
adapter_caches = _Sources()
_meter.create_observable_gauge(
    "lorafleet.job.queue.depth",
    callbacks=[job_queues.observe],
    unit="{job}",
    description="Jobs waiting (queued) and running, by kind",
)
_meter.create_observable_gauge(
    "lorafleet.inference.adapter_cache.bytes",
    callbacks=[adapter_caches.observe],
    unit="By",
    description="Bytes of adapter weights loaded, and the budget, per model",
)


def record(instrument, value: float, attributes: dict[str, str | int]) -> None:
    """Records, never raising into the caller (metrics must not fail work)."""
    try:
        instrument.record(value, attributes)
    except Exception:  # noqa: BLE001
        log.debug("recording %s failed", instrument, exc_info=True)


def add(instrument, value: float, attributes: dict[str, str | int]) -> None:
    try:
        instrument.add(value, attributes)
    except Exception:  # noqa: BLE001
        log.debug("recording %s failed", instrument, exc_info=True)


def set_gauge(instrument, value: float, attributes: dict[str, str | int]) -> None:
    try:
        instrument.set(value, attributes)
    except Exception:  # noqa: BLE001
        log.debug("recording %s failed", instrument, exc_info=True)
