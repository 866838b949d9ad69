"""Classify over real gRPC: a classification adapter on its base, and its merge.

A registry, a merger and an inference service run in process; the adapter
is trained by the real trainer, merged by the merger service, and both are
served: the same labels and probabilities, equal to PEFT's, and clear errors
for a call of the wrong kind.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
from transformers import AutoTokenizer

from lorafleet.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    merger_pb2,
    merger_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.common.config import load_config
from services.common.modeling import load_classifier
from services.inference.classify import Limits, batches
from tests.common.classifier_adapter import (
    LABELS,
    TEXTS,
    register_adapter,
    train_classifier,
)
from tests.inference.helpers import register_random_adapter

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
GUARD_S = 300.0


@dataclasses.dataclass
class Bed:
    registry: registry_pb2_grpc.RegistryServiceStub
    inference: inference_pb2_grpc.InferenceServiceStub
    engine: object
    address: str
    base: common_pb2.Artifact
    classifier: common_pb2.Artifact  # the classification adapter
    causal: common_pb2.Artifact  # a causal-LM adapter on the same base
    merged: common_pb2.Artifact  # the classifier merged by the merger service
    incoming: Path  # where files to register go (under the data directory)


@pytest.fixture(scope="module")
def bed(tmp_path_factory, tiny_model_dir):
    from services.inference.server import create as create_inference
    from services.merger.server import create as create_merger
    from services.registry.server import create as create_registry

    data_dir = tmp_path_factory.mktemp("classify") / "data"
    config = load_config(
        env={}, auth_mode="disabled", data_dir=data_dir, port=0, inference_max_batch=2
    )
    registry_server = create_registry(config, port=0)
    config = dataclasses.replace(config, registry_address=registry_server.address)
    servers = [registry_server, create_merger(config, port=0)]
    servers.append(create_inference(config, port=0))
    channels = [grpc.insecure_channel(s.address) for s in servers]
    registry = registry_pb2_grpc.RegistryServiceStub(channels[0])
    incoming = data_dir / "incoming"
    shutil.copytree(tiny_model_dir, incoming / "llama")
    base = registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            kind=common_pb2.ARTIFACT_KIND_BASE_MODEL,
            name="tiny-llama",
            source_path=str(incoming / "llama"),
        )
    ).artifact
    metadata = train_classifier(Path(base.local_path), incoming / "classifier")
    classifier = register_adapter(
        registry, base, incoming / "classifier", "orders-classifier", metadata
    )
    causal = register_random_adapter(
        registry, Path(base.local_path), base, incoming / "causal", "causal", 3
    )
    merger = merger_pb2_grpc.MergerServiceStub(channels[1])
    job = merger.StartMergeJob(
        merger_pb2.StartMergeJobRequest(
            adapter_id=classifier.id, output_name="orders-classifier-merged"
        ),
        timeout=60,
    ).job
    final = list(
        merger.WatchMergeJob(
            merger_pb2.WatchMergeJobRequest(job_id=job.status.job_id), timeout=600
        )
    )[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    merged = registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=final.result.merged_model_id)
    ).artifact
    yield Bed(
        registry,
        inference_pb2_grpc.InferenceServiceStub(channels[2]),
        servers[2].parts["engine"],
        servers[2].address,
        base,
        classifier,
        causal,
        merged,
        incoming,
    )
    for channel in channels:
        channel.close()
    for server in reversed(servers):
        server.stop(1.0)


def classify(bed: Bed, model_id: str, adapter_id: str = "", texts=None, **kw):
    return bed.inference.Classify(
        inference_pb2.InferenceServiceClassifyRequest(
            model_id=model_id,
            adapter_id=adapter_id,
            texts=texts if texts is not None else [t for t, _ in TEXTS],
        ),
        timeout=kw.get("timeout", 120),
    )


def generate(bed: Bed, model_id: str, adapter_id: str = ""):
    return bed.inference.Generate(
        inference_pb2.InferenceServiceGenerateRequest(
            model_id=model_id,
            adapter_id=adapter_id,
            params=common_pb2.GenerationParams(
                prompt="Order for Ana", max_new_tokens=6
            ),
        ),
        timeout=120,
    ).output


def test_the_adapter_and_its_merge_classify_alike_and_as_peft_does(bed):
    by_adapter = classify(bed, bed.base.id, bed.classifier.id)
    by_merge = classify(bed, bed.merged.id)
    assert list(by_adapter.labels) == list(by_merge.labels) == LABELS
    assert len(by_adapter.results) == len(TEXTS)
    for a, m, (text, label) in zip(
        by_adapter.results, by_merge.results, TEXTS, strict=True
    ):
        assert (a.label, a.class_id) == (m.label, m.class_id)
        assert a.probabilities == pytest.approx(m.probabilities, abs=1e-5)
        assert sum(a.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert a.label == LABELS[a.class_id]
        if label is not None:  # the trained head, not a random one
            assert a.label == label, text
    # PEFT's classifier on each text alone (batches of 2 padded them here).
    reference, _ = load_classifier(
        Path(bed.base.local_path), "cpu", Path(bed.classifier.local_path)
    )
    tokenizer = AutoTokenizer.from_pretrained(bed.base.local_path)
    with torch.no_grad():
        for (text, _), got in zip(TEXTS, by_adapter.results, strict=True):
            ids = tokenizer([text], return_tensors="pt")
            want = reference(**ids).logits.softmax(-1)[0].tolist()
            assert got.probabilities == pytest.approx(want, abs=1e-5)
            assert got.prompt_tokens == ids["input_ids"].shape[1]
    assert by_adapter.prompt_tokens == sum(r.prompt_tokens for r in by_adapter.results)


def test_a_classification_adapter_shares_the_base_with_generation(bed):
    before = generate(bed, bed.base.id, bed.causal.id).text
    classify(bed, bed.base.id, bed.classifier.id)
    assert generate(bed, bed.base.id, bed.causal.id).text == before
    models = {
        m.model_id: m
        for m in bed.inference.ListLoadedModels(
            inference_pb2.ListLoadedModelsRequest()
        ).models
    }
    base = models[bed.base.id]
    assert base.task == "causal" and not base.labels
    adapters = {tuple(a.adapter_ids): a for a in base.adapters}
    assert list(adapters[(bed.classifier.id,)].labels) == LABELS
    assert adapters[(bed.classifier.id,)].stats.requests >= 1
    assert list(adapters[(bed.causal.id,)].labels) == []
    classify(bed, bed.merged.id)
    loaded = bed.inference.ListLoadedModels(inference_pb2.ListLoadedModelsRequest())
    merged = next(m for m in loaded.models if m.model_id == bed.merged.id)
    assert merged.task == "classification" and list(merged.labels) == LABELS


def test_a_dora_classifier_runs_through_peft_beside_plain_adapters(bed):
    """DoRA is not plain LoRA: its rows run with it as PEFT's active adapter."""
    files = bed.incoming / "dora"
    metadata = train_classifier(Path(bed.base.local_path), files, "dora")
    dora = register_adapter(bed.registry, bed.base, files, "dora", metadata)
    before = generate(bed, bed.base.id, bed.causal.id).text
    got = classify(bed, bed.base.id, dora.id)
    reference, _ = load_classifier(
        Path(bed.base.local_path), "cpu", Path(dora.local_path), labels=LABELS
    )
    tokenizer = AutoTokenizer.from_pretrained(bed.base.local_path)
    with torch.no_grad():
        for (text, _), row in zip(TEXTS, got.results, strict=True):
            want = reference(**tokenizer([text], return_tensors="pt")).logits
            assert row.probabilities == pytest.approx(
                want.softmax(-1)[0].tolist(), abs=1e-5
            )
    # The plain one still runs as before, and generation is untouched.
    plain = classify(bed, bed.base.id, bed.classifier.id)
    assert [r.label for r in plain.results][:4] == [c for _, c in TEXTS][:4]
    assert generate(bed, bed.base.id, bed.causal.id).text == before
    assert (
        bed.inference.UnloadModel(
            inference_pb2.UnloadModelRequest(model_id=bed.base.id, adapter_id=dora.id)
        )
        is not None
    )
    entry = next(e for e in bed.engine.entries() if e.artifact.id == bed.base.id)
    assert len(entry.heads) == 1  # the unloaded adapter's head went with it


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def test_calls_of_the_wrong_kind_fail_naming_the_fix(bed):
    cases = [
        (
            lambda: generate(bed, bed.base.id, bed.classifier.id),
            "classification adapter: it scores labels and cannot generate; "
            "call Classify",
        ),
        (
            lambda: generate(bed, bed.merged.id),
            "merged sequence classifier (labels ['lamps', 'socks']); it scores "
            "labels and cannot generate: call Classify",
        ),
        (
            lambda: classify(bed, bed.base.id),
            "causal language model, not a classifier; pass a classification adapter",
        ),
        (
            lambda: classify(bed, bed.base.id, bed.causal.id),
            "is a causal-LM adapter, not a classifier",
        ),
        (
            lambda: classify(bed, bed.merged.id, bed.classifier.id),
            "it takes no adapter",
        ),
    ]
    for call, message in cases:
        err = _error(call)
        assert err.code() == FAILED_PRECONDITION, err.details()
        assert message in err.details()
    bad = [
        ([], "texts is empty"),
        (["ok"] * 257, "texts has 257 entries, more than 256"),
        (["ok", "  "], "texts[1] is empty"),
        (["lamps " * 600], "tokens, more than model"),
    ]
    for texts, message in bad:
        err = _error(lambda t=texts: classify(bed, bed.base.id, bed.classifier.id, t))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert message in err.details()
    err = _error(lambda: classify(bed, "no-such-model"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_a_passed_deadline_ends_the_call_and_its_work(bed):
    classify(bed, bed.base.id, bed.classifier.id)  # loaded
    entry = next(e for e in bed.engine.entries() if e.artifact.id == bed.base.id)
    slot = next(s for s in bed.engine.adapters.of_model(bed.base.id) if s.labels)
    requests, abandoned = slot.stats.requests, slot.stats.abandoned
    # A plain channel and a short deadline; the model stays busy meanwhile.
    channel = grpc.insecure_channel(bed.address)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    with entry.scheduler.model_lock:
        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(
                inference_pb2.InferenceServiceClassifyRequest(
                    model_id=bed.base.id,
                    adapter_id=bed.classifier.id,
                    texts=["ship 3 desk lamps to Oslo"],
                ),
                timeout=0.5,
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The service gives up by itself while the model is still busy.
        started = time.monotonic()
        while slot.stats.requests == requests:
            assert time.monotonic() - started < GUARD_S, "the call never ended"
            time.sleep(0.02)
    assert slot.stats.abandoned == abandoned + 1
    assert slot.active == 0
    channel.close()


def test_texts_are_batched_by_rows_and_padded_tokens():
    limits = Limits(max_rows=2, max_tokens=10, context=None)
    assert batches([3, 9, 4, 1, 2], limits) == [[1], [2, 0], [4, 3]]
    assert batches([12], limits) == [[0]]  # too long for a batch: alone
    assert batches([1] * 5, Limits(8, 3, None)) == [[0, 1, 2], [3, 4]]


def test_concurrent_classify_calls_agree(bed):
    texts = [t for t, _ in TEXTS]
    alone = classify(bed, bed.base.id, bed.classifier.id, texts)
    out: list = []
    threads = [
        threading.Thread(
            target=lambda: out.append(classify(bed, bed.base.id, bed.classifier.id))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4
    for result in out:
        assert [r.label for r in result.results] == [r.label for r in alone.results]
