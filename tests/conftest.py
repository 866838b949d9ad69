"""Session fixtures shared by every test: the demo dataset and tiny models."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lorafleet.v1 import common_pb2, gateway_pb2
from services.cli.models import import_model
from services.demo.orders import DATASET_PATH
from tests.suite import start_suite
from tests.tiny_models import build_tiny_model, build_tokenizer

# `lorafleet up` records the newest running suite under $XDG_STATE_HOME: the
# suites tests start (and their children) write to a place of their own.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="lorafleet-test-state-")
# Services the tests start as child processes run with auth off (the code's
# default is required); tests/test_auth.py and the auth-specific tests turn it
# on with their own settings. In-process servers get it from their config.
os.environ.setdefault("LORAFLEET_AUTH_MODE", "disabled")

# One process-wide provider: the services' setup_tracing keeps an SDK provider it
# finds, so every in-process server's spans land here for tests to inspect.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


# Likewise one meter provider: in-process services record into it (their
# setup_metrics keeps an SDK provider it finds) and tests read it.
METRICS = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[METRICS]))


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    return SPANS


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    return METRICS


def _corpus() -> list[str]:
    rows = [json.loads(line) for line in DATASET_PATH.read_text().splitlines()]
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in rows]
    return texts + ["user assistant system"] * 10


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(out, _corpus())
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A 2-layer llama (hidden 64) with a chat-template tokenizer, in safetensors."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, tiny_tokenizer_dir):
    """Builds (and caches) a tiny model of another family: gpt2, qwen2, gpt_neox."""
    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            cache[family] = build_tiny_model(
                tmp_path_factory.mktemp(f"tiny-{family}"),
                tiny_tokenizer_dir,
                family=family,
            )
        return cache[family]

    return make


@pytest.fixture(scope="session")
def demo_dataset_path() -> Path:
    return DATASET_PATH


# --- the whole suite, in process, shared by the end-to-end tests -----------------
TRAIN = common_pb2.TrainConfig(
    rank=4,
    alpha=8,
    learning_rate=5e-3,
    max_steps=4,
    batch_size=8,
    max_seq_length=128,
    seed=7,
    eval_fraction=0.05,
)
LENIENT = common_pb2.ValidationGates(max_latency_ratio=100.0, max_perplexity_ratio=1.5)


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    suite = start_suite(tmp_path_factory.mktemp("lorafleet-data"))
    yield suite
    suite.stop()


@pytest.fixture(scope="session")
def base_model(suite, tiny_model_dir):
    return import_model(
        tiny_model_dir, "tiny-llama", suite.config.staging_dir, suite.stub("registry")
    )


@pytest.fixture(scope="session")
def dataset_copy(suite, demo_dataset_path):
    path = suite.config.data_dir / "datasets" / "orders.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(demo_dataset_path.read_bytes())
    return path


def run_workflow(suite, request: gateway_pb2.RunWorkflowRequest):
    gateway = suite.stub("gateway")
    job = gateway.RunWorkflow(request, timeout=60).job
    events = list(
        gateway.WatchWorkflowJob(
            gateway_pb2.WatchWorkflowJobRequest(job_id=job.status.job_id), timeout=600
        )
    )
    return job, events


@pytest.fixture(scope="session")
def workflow(suite, base_model, dataset_copy, span_exporter):
    span_exporter.clear()
    job, events = run_workflow(
        suite,
        gateway_pb2.RunWorkflowRequest(
            base_model_id=base_model.id,
            dataset_path=str(dataset_copy),
            name="orders",
            train_config=TRAIN,
            gates=LENIENT,
            validation_examples=4,
            validation_max_new_tokens=8,
        ),
    )
    return job, events, span_exporter.get_finished_spans()
