"""Merging a classification adapter over real gRPC: a sequence classifier out.

The adapter is trained by the real trainer and registered with the trainer's
metadata; the merged model must score every text as the adapter does
(unmerged, through PEFT), to float tolerance.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import grpc
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lorafleet.v1 import (
    common_pb2,
    merger_pb2,
    merger_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.common.config import load_config
from services.common.convert import from_struct, struct
from services.common.modeling import load_classifier
from tests.common.classifier_adapter import (
    LABELS,
    TEXTS,
    register_adapter,
    train_classifier,
)
from tests.merger.helpers import make_adapter

SUCCEEDED = common_pb2.JOB_STATE_SUCCEEDED


@dataclasses.dataclass
class World:
    registry: registry_pb2_grpc.RegistryServiceStub
    merger: merger_pb2_grpc.MergerServiceStub
    base: common_pb2.Artifact
    classifier: common_pb2.Artifact  # the classification adapter
    metadata: dict
    incoming: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    from services.merger.server import create as create_merger
    from services.registry.server import create as create_registry

    data_dir = tmp_path_factory.mktemp("classifier-merge") / "data"
    config = load_config(env={}, auth_mode="disabled", data_dir=data_dir, port=0)
    registry_server = create_registry(config, port=0)
    config = dataclasses.replace(config, registry_address=registry_server.address)
    merger_server = create_merger(config, port=0)
    channels = [
        grpc.insecure_channel(s.address) for s in (registry_server, merger_server)
    ]
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
    adapter = register_adapter(
        registry, base, incoming / "classifier", "orders-classifier", metadata
    )
    yield World(
        registry,
        merger_pb2_grpc.MergerServiceStub(channels[1]),
        base,
        adapter,
        metadata,
        incoming,
    )
    for channel in channels:
        channel.close()
    merger_server.stop(1.0)
    registry_server.stop(1.0)


def _merge(world: World, **fields) -> merger_pb2.MergeJob:
    job = world.merger.StartMergeJob(
        merger_pb2.StartMergeJobRequest(**fields), timeout=60
    ).job
    events = list(
        world.merger.WatchMergeJob(
            merger_pb2.WatchMergeJobRequest(job_id=job.status.job_id), timeout=600
        )
    )
    return events[-1].job


def _logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def merged(world):
    job = _merge(
        world,
        adapter_id=world.classifier.id,
        output_name="orders-classifier-merged",
        max_shard_size=60_000,  # several shards: the streaming writer's path
    )
    assert job.status.state == SUCCEEDED, job.status.error
    artifact = world.registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=job.result.merged_model_id)
    ).artifact
    return job, artifact


def test_the_merged_classifier_scores_texts_as_the_adapter_does(world, merged):
    job, artifact = merged
    path = Path(artifact.local_path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    texts = [t for t, _ in TEXTS]
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), dtype=torch.float32
    ).eval()
    unmerged, labels = load_classifier(
        Path(world.base.local_path),
        "cpu",
        Path(world.classifier.local_path),
        labels=LABELS,
    )
    got, want = _logits(model, tokenizer, texts), _logits(unmerged, tokenizer, texts)
    assert labels == LABELS and got.shape == (len(texts), 2)
    assert float((got - want).abs().max()) < 1e-5
    assert [LABELS[i] for i in got.argmax(-1)][:4] == [c for _, c in TEXTS][:4]
    # One text at a time, too (no padding): the same classes.
    for text, label in TEXTS[:4]:
        assert LABELS[int(_logits(model, tokenizer, [text]).argmax())] == label
    # The gate compared the same logits before registering.
    gate = from_struct(job.result.gate)
    assert gate["relative_logit_diff"] < 1e-5 and gate["class_agreement"] == 1.0
    assert gate["labels"] == LABELS


def test_the_merged_classifier_is_saved_and_registered_as_one(world, merged):
    job, artifact = merged
    path = Path(artifact.local_path)
    assert artifact.kind == common_pb2.ARTIFACT_KIND_MERGED_MODEL
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["id2label"] == {"0": "lamps", "1": "socks"}
    assert config["label2id"] == {"lamps": 0, "socks": 1}
    assert config["pad_token_id"] == 0
    files = sorted(p.name for p in path.iterdir())
    assert "tokenizer.json" in files and "model.safetensors.index.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    names = set()
    for shard in path.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            names.update(f.keys())
    assert "score.weight" in names and "lm_head.weight" not in names
    assert job.result.shards > 1
    meta = from_struct(artifact.metadata)
    assert meta["task_type"] == "classification"
    assert meta["class_labels"] == LABELS
    assert meta["architecture"] == "LlamaForSequenceClassification"
    assert meta["dropped_tensors"] == ["lm_head.weight"]
    assert meta["adapter_id"] == world.classifier.id
    assert meta["base_model_id"] == world.base.id
    assert job.result.tensors_merged == 14  # 7 LoRA targets x 2 layers
    # The head came from the adapter, unchanged.
    with safe_open(
        str(Path(world.classifier.local_path) / "adapter_model.safetensors"), "pt"
    ) as f:
        head = f.get_tensor("base_model.model.score.weight")
    loaded = AutoModelForSequenceClassification.from_pretrained(str(path))
    assert torch.equal(loaded.score.weight, head)


def test_a_qlora_classifier_merges_with_the_quantized_gap_measured(world):
    qlora = register_adapter(
        world.registry,
        world.base,
        Path(world.classifier.local_path),
        "orders-classifier-qlora",
        {**world.metadata, "base_quantization": "nf4"},
    )
    job = _merge(world, adapter_id=qlora.id, output_name="orders-qlora-merged")
    assert job.status.state == SUCCEEDED, job.status.error
    gate = from_struct(job.result.gate)
    assert gate["base_quantization"] == "nf4"
    assert 0.0 <= gate["quantized_base_top1_agreement"] <= 1.0
    assert any("NF4-quantized base" in n for n in job.result.notes)


def _refused(world: World, **fields) -> grpc.RpcError:
    before = len(world.merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest()).jobs)
    with pytest.raises(grpc.RpcError) as err:
        world.merger.StartMergeJob(merger_pb2.StartMergeJobRequest(**fields))
    after = len(world.merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest()).jobs)
    assert after == before, "a refused merge left a job behind"
    return err.value


def test_what_a_classifier_merge_cannot_do_is_refused_at_start(world, merged):
    _, classifier = merged
    err = _refused(
        world,
        adapter_id=world.classifier.id,
        output_name="with-exports",
        exports=[
            merger_pb2.QuantizedExport(format=merger_pb2.QUANTIZED_FORMAT_GGUF_Q8_0)
        ],
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "quantized exports (gguf_q8_0)" in err.details()
    assert "leave exports empty" in err.details()
    err = _refused(
        world,
        method="linear",
        input_model_ids=[classifier.id, world.base.id],
        output_name="mixed",
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"{classifier.id} is a sequence classifier" in err.details()
    # A causal-LM adapter recorded against the classifier as its base.
    make_adapter(Path(world.base.local_path), world.incoming / "causal", seed=2)
    causal = world.registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            kind=common_pb2.ARTIFACT_KIND_ADAPTER,
            name="causal-on-classifier",
            source_path=str(world.incoming / "causal"),
            metadata=struct({"base_model_id": classifier.id}),
        )
    ).artifact
    err = _refused(world, adapter_id=causal.id, output_name="nope")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already a sequence classifier" in err.details()
    # Labels that do not fit the trained head.
    wrong = register_adapter(
        world.registry,
        world.base,
        Path(world.classifier.local_path),
        "three-labels",
        {**world.metadata, "class_labels": ["a", "b", "c"]},
    )
    err = _refused(world, adapter_id=wrong.id, output_name="nope")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "records labels ['a', 'b', 'c'] but its head scores 2" in err.details()
    names = {
        a.name
        for a in world.registry.ListArtifacts(
            registry_pb2.ListArtifactsRequest(
                kind=common_pb2.ARTIFACT_KIND_MERGED_MODEL
            )
        ).artifacts
    }
    assert not names & {"with-exports", "mixed", "nope"}
