"""The inference service over real gRPC: a registry and inference in process,
a tiny model with two adapters registered, requests from many threads.

Every wait is on an event (a call's reply, the engine's own counters), with
a generous guard that only stops a hung test.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from lorafleet.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
)
from services.cli.models import import_model
from tests.inference.helpers import register_random_adapter
from tests.suite import Suite, start_suite

GUARD_S = 300.0


def wait_until(predicate, what: str) -> None:
    """Polls `predicate` until true; the guard only stops a hung test."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > GUARD_S:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def bed(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("serving")
    suite = start_suite(data, inference_max_batch=4, inference_max_queue=6)
    # Only the registry and inference are needed; the rest idle.
    registry = suite.stub("registry")
    base = import_model(
        tiny_model_dir, "tiny-serving", suite.config.staging_dir, registry
    )
    adapters = [
        register_random_adapter(
            registry,
            tiny_model_dir,
            base,
            suite.config.staging_dir / f"adapter-{seed}",
            f"tiny-serving-lora-{seed}",
            seed,
        )
        for seed in (1, 2)
    ]
    yield suite, base, adapters
    suite.stop()


def engine(suite: Suite):
    """The in-process inference service's engine (to read its counters)."""
    servicer_engine = suite.servers["inference"].parts.get("engine")
    assert servicer_engine is not None
    return servicer_engine


def request(model_id, adapter_id="", prompt="Order for Ana", new=8, **params):
    return inference_pb2.InferenceServiceGenerateRequest(
        model_id=model_id,
        adapter_id=adapter_id,
        params=common_pb2.GenerationParams(prompt=prompt, max_new_tokens=new, **params),
    )


def test_concurrent_mixed_adapter_calls_match_sequential_ones(bed):
    suite, base, adapters = bed
    inference = suite.stub("inference")
    # Six: never more than the queue holds (6), so none is refused.
    asks = [
        request(base.id, adapter, prompt=f"Order {i} for Ana", new=6 + i)
        for i, adapter in enumerate(["", adapters[0].id, adapters[1].id] * 2)
    ]
    alone = [inference.Generate(r, timeout=120).output for r in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda r: inference.Generate(r, timeout=120), asks))
    assert [o.output.text for o in together] == [o.text for o in alone]
    assert [o.output.completion_tokens for o in together] == [
        o.completion_tokens for o in alone
    ]
    # The adapters change the output (else this test would prove nothing).
    texts = {o.text for o in alone[:3]}
    assert len(texts) == 3


def test_a_cancelled_stream_leaves_no_work_behind(bed):
    suite, base, adapters = bed
    inference = suite.stub("inference")
    streams = []
    for i in range(10):
        stream = inference.GenerateStream(
            request(base.id, adapters[i % 2].id, new=400), timeout=120
        )
        next(stream)  # it is decoding
        streams.append(stream)
    for stream in streams:
        stream.cancel()
    wait_until(
        lambda: all(
            m.queued_requests == 0 and m.batch_rows == 0 for m in engine(suite).loaded()
        ),
        "the cancelled streams to leave the batch",
    )


def test_a_passed_deadline_ends_the_call_and_its_work(bed):
    suite, base, _ = bed
    # A plain channel: the suite's stretch deadlines under load.
    channel = grpc.insecure_channel(suite.address("inference"))
    inference = inference_pb2_grpc.InferenceServiceStub(channel)
    suite.stub("inference").LoadModel(
        inference_pb2.LoadModelRequest(model_id=base.id), timeout=120
    )
    entry = next(e for e in engine(suite).entries() if e.artifact.id == base.id)
    steps = entry.scheduler.steps
    try:
        with entry.scheduler.model_lock:  # nothing decodes until the call is over
            with pytest.raises(grpc.RpcError) as late:
                inference.Generate(request(base.id, new=400), timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(
            lambda: entry.scheduler.pending() == (0, 0),
            "the late request to leave the batch",
        )
        # It left at the first turn after the deadline, not after 400 tokens.
        assert entry.scheduler.steps - steps <= 2
    finally:
        channel.close()


def test_prompt_plus_new_tokens_over_the_context_is_refused_with_numbers(bed):
    suite, base, _ = bed
    inference = suite.stub("inference")
    with pytest.raises(grpc.RpcError) as over:
        inference.Generate(request(base.id, new=500, prompt="Ana " * 40), timeout=60)
    assert over.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exceed" in over.value.details() and "context of 512" in over.value.details()
    with pytest.raises(grpc.RpcError) as huge:
        inference.Generate(request(base.id, prompt="x" * 1_000_000), timeout=60)
    assert huge.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1000000 characters" in huge.value.details()


def test_a_full_queue_refuses_with_retry_details_and_health_still_answers(bed):
    suite, base, _ = bed
    inference = suite.stub("inference")
    health = health_pb2_grpc.HealthStub(
        grpc.insecure_channel(suite.address("inference"))
    )
    loaded = inference.LoadModel(
        inference_pb2.LoadModelRequest(model_id=base.id), timeout=120
    )
    assert loaded.model.model_id == base.id
    entry = next(e for e in engine(suite).entries() if e.artifact.id == base.id)
    calls = []
    with entry.scheduler.model_lock:  # nothing decodes: the queue fills up
        pool = ThreadPoolExecutor(12)
        for _ in range(12):
            calls.append(pool.submit(inference.Generate, request(base.id), timeout=120))
        wait_until(
            lambda: sum(1 for c in calls if c.done()) >= 2,
            "the calls beyond batch + queue to be refused",
        )
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=60)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    pool.shutdown(wait=True)
    refused = [c.exception() for c in calls if c.exception() is not None]
    # At most batch (4) + queue (6) were admitted; the rest were refused.
    assert len(refused) >= 2
    assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
    status = rpc_status.from_call(refused[0])
    kinds = {d.type_url.rsplit(".", 1)[-1] for d in status.details}
    assert kinds == {"QuotaFailure", "RetryInfo"}
    retry = error_details_pb2.RetryInfo()
    next(d for d in status.details if d.Is(retry.DESCRIPTOR)).Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() > 0
    served = [c.result() for c in calls if c.exception() is None]
    assert len(served) + len(refused) == 12 and served


def test_one_thread_per_request_never_starves_the_rest(bed):
    """More concurrent calls than batch + queue: some are refused at once,
    the rest finish; none waits for a thread it cannot get."""
    suite, base, adapters = bed
    inference = suite.stub("inference")
    results: list = []
    lock = threading.Lock()

    def call(i: int) -> None:
        try:
            out = inference.Generate(
                request(base.id, adapters[i % 2].id, new=4), timeout=120
            )
            outcome = out.output.completion_tokens
        except grpc.RpcError as exc:
            outcome = exc.code()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    assert set(results) <= {4, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert 4 in results


def test_the_callers_deadline_reaches_inference_through_the_gateway(bed, monkeypatch):
    """The gateway gives inference only the time its own caller has left, so
    a call given up by its caller is dropped by inference too (not kept for
    the 30 s default deadline)."""
    suite, base, _ = bed
    suite.stub("gateway").Deploy(
        gateway_pb2.DeployRequest(
            deployment="serving-deadline", model_id=base.id, reason="test"
        ),
        timeout=120,
    )
    channel = grpc.insecure_channel(suite.address("gateway"))
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    entry = next(e for e in engine(suite).entries() if e.artifact.id == base.id)
    seen = []
    submit = entry.scheduler.submit

    def record(seq):
        seen.append((seq, engine(suite).now()))
        return submit(seq)

    monkeypatch.setattr(entry.scheduler, "submit", record)
    try:
        with entry.scheduler.model_lock:
            with pytest.raises(grpc.RpcError) as late:
                gateway.Generate(
                    gateway_pb2.GenerateRequest(
                        deployment="serving-deadline",
                        params=common_pb2.GenerationParams(
                            prompt="Order for Ana", max_new_tokens=400
                        ),
                    ),
                    timeout=5.0,
                )
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        [(seq, submitted)] = seen
        # What the caller gave the gateway (5 s; grpc rounds deadlines up to
        # whole milliseconds on each hop), not the 30 s default.
        assert seq.deadline is not None and seq.deadline - submitted < 6.0
        wait_until(
            lambda: entry.scheduler.pending() == (0, 0),
            "inference to drop the abandoned request",
        )
    finally:
        channel.close()


def test_budget_is_the_served_calls_time_left():
    from services.common.deadlines import budget, remaining_s, serving
    from services.common.errors import DeadlineExceeded

    assert remaining_s() is None and budget(30.0, "x") == 30.0
    with serving(5.0):
        assert 0 < budget(30.0, "x") <= 5.0
        assert budget(1.0, "x") == 1.0
    with serving(None):
        assert budget(30.0, "x") == 30.0
    with serving(-0.001), pytest.raises(DeadlineExceeded, match="before x was called"):
        budget(30.0, "x")
    assert remaining_s() is None  # restored after each call


def test_list_loaded_models_shows_adapters_with_their_books_and_stats(bed):
    suite, base, adapters = bed
    inference = suite.stub("inference")
    for adapter in (adapters[0].id, adapters[0].id, ""):
        inference.Generate(request(base.id, adapter, new=5), timeout=120)
    pinned = inference.LoadModel(
        inference_pb2.LoadModelRequest(
            model_id=base.id, adapter_id=adapters[1].id, pin=True
        ),
        timeout=120,
    ).model
    assert pinned.bytes > 0 and pinned.decode_steps > 0
    assert pinned.mean_batch_rows >= 1.0
    books = {a.adapter_ids[0]: a for a in pinned.adapters}
    first, second = books[adapters[0].id], books[adapters[1].id]
    assert first.digest == adapters[0].digest and first.bytes > 0
    assert first.loads == 1 and first.hits >= 1 and not first.pinned
    assert first.stats.requests >= 2 and first.stats.completion_tokens > 0
    assert first.stats.mean_first_token_ms > 0 and first.last_used.seconds > 0
    assert second.pinned and second.active_requests == 0
    assert pinned.base_stats.requests >= 1
    listed = inference.ListLoadedModels(
        inference_pb2.ListLoadedModelsRequest(), timeout=60
    )
    [model] = [m for m in listed.models if m.model_id == base.id]
    assert set(model.adapter_ids) >= {adapters[0].id, adapters[1].id}
    # Unloading one adapter keeps the model and the other adapter.
    inference.UnloadModel(
        inference_pb2.UnloadModelRequest(model_id=base.id, adapter_id=adapters[0].id),
        timeout=60,
    )
    with pytest.raises(grpc.RpcError) as gone:
        inference.UnloadModel(
            inference_pb2.UnloadModelRequest(
                model_id=base.id, adapter_id=adapters[0].id
            ),
            timeout=60,
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert "is not loaded" in gone.value.details()
    listed = inference.ListLoadedModels(
        inference_pb2.ListLoadedModelsRequest(), timeout=60
    )
    [model] = [m for m in listed.models if m.model_id == base.id]
    assert [a.adapter_ids[0] for a in model.adapters] == [adapters[1].id]
    # It comes back on the next request for it.
    out = inference.Generate(request(base.id, adapters[0].id, new=3), timeout=120)
    assert out.output.completion_tokens >= 1


def test_a_stream_gets_its_text_piece_by_piece(bed):
    """Chunks come as tokens are made (many chunks, not one at the end), and
    add up to the unary answer."""
    suite, base, adapters = bed
    inference = suite.stub("inference")
    ask = request(base.id, adapters[0].id, prompt="Order 7 for Ana", new=40)
    whole = inference.Generate(ask, timeout=120).output
    entry = next(e for e in engine(suite).entries() if e.artifact.id == base.id)
    stream = inference.GenerateStream(
        inference_pb2.InferenceServiceGenerateStreamRequest(
            model_id=ask.model_id, adapter_id=ask.adapter_id, params=ask.params
        ),
        timeout=120,
    )
    chunks = list(stream)
    text = "".join(c.chunk.text_delta for c in chunks)
    assert text == whole.text
    assert chunks[-1].chunk.completion_tokens == whole.completion_tokens
    assert whole.completion_tokens > 2  # else this proves nothing
    assert len(chunks) > 2  # piece by piece, not one chunk at the end
    # It leaves the batch right after its last chunk was sent.
    wait_until(lambda: entry.scheduler.pending() == (0, 0), "the stream to leave")
