"""PEFT adapters come in without surgery: `lorafleet models import <adapter
folder>` registers them with their base, and every service applies one rule
for an adapter's base."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest

from lorafleet.v1 import (
    common_pb2,
    inference_pb2,
    merger_pb2,
    registry_pb2,
)
from services.cli.main import main as cli
from tests.merger.helpers import make_adapter


@pytest.fixture(scope="module")
def peft_folder(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("peft") / "adapter"
    make_adapter(tiny_model_dir, out, seed=5, r=4)
    return out


def run(suite, *args) -> int:
    return cli(
        [
            *args,
            "--registry",
            suite.address("registry"),
            "--data-dir",
            str(suite.config.data_dir),
        ]
    )


def test_an_adapter_folder_imports_with_its_base_and_serves(
    suite, base_model, peft_folder, capsys
):
    code = run(
        suite,
        "models",
        "import",
        str(peft_folder),
        "--name",
        "peft-in",
        "--base",
        "tiny-llama",
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    artifact_id = out.out.split()[1]
    registry = suite.stub("registry")
    adapter = registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=artifact_id), timeout=30
    ).artifact
    assert adapter.kind == common_pb2.ARTIFACT_KIND_ADAPTER
    assert adapter.metadata["base_model_digest"] == base_model.digest
    assert adapter.metadata["rank"] == 4 and adapter.metadata["method"] == "lora"
    edges = registry.GetLineage(
        registry_pb2.GetLineageRequest(id=adapter.id), timeout=30
    ).edges
    assert (base_model.id, "base_model") in {(e.parent_id, e.relation) for e in edges}
    # inference serves it on its base (the rule every service shares)
    reply = suite.stub("inference").Generate(
        inference_pb2.InferenceServiceGenerateRequest(
            model_id=base_model.id,
            adapter_id=adapter.id,
            params=common_pb2.GenerationParams(prompt="hi", max_new_tokens=2),
        ),
        timeout=120,
    )
    assert reply.output.completion_tokens >= 1


def test_the_base_comes_from_base_model_name_or_path_when_registered(
    suite, base_model, peft_folder, tmp_path, capsys
):
    folder = shutil.copytree(peft_folder, tmp_path / "named")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "tiny-llama"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert run(suite, "models", "import", str(folder), "--name", "peft-named") == 0
    assert "peft-named:1" in capsys.readouterr().out
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert run(suite, "models", "import", str(folder), "--name", "peft-unknown") == 2
    err = capsys.readouterr().err
    assert "'HuggingFaceTB/SmolLM2-135M-Instruct', which is not a registered" in err
    assert "--base" in err
    found = (
        suite.stub("registry")
        .ListArtifacts(
            registry_pb2.ListArtifactsRequest(name="peft-unknown"), timeout=30
        )
        .artifacts
    )
    assert not found


def test_a_pickled_adapter_is_refused_with_a_safe_way_to_convert_it(
    suite, peft_folder, tmp_path, capsys
):
    folder = shutil.copytree(peft_folder, tmp_path / "pickled")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    assert run(suite, "models", "import", str(folder), "--name", "peft-bin") == 2
    err = capsys.readouterr().err
    assert "adapter_model.bin (a pickle" in err
    assert "weights_only=True" in err and "save_file" in err


def test_an_adapter_without_a_recorded_base_is_refused_by_the_merger_too(
    suite, base_model, peft_folder, tmp_path
):
    staged = shutil.copytree(peft_folder, suite.config.data_dir / "bare-adapter")
    bare = (
        suite.stub("registry")
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_ADAPTER,
                name="bare-adapter",
                source_path=str(staged),
            ),
            timeout=60,
        )
        .artifact
    )
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(
                adapter_id=bare.id, base_model_id=base_model.id, output_name="x"
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "records no base model" in err.value.details()
    assert "--base" in err.value.details()


def test_an_exported_adapter_loads_in_plain_peft_and_generates_the_same_tokens(
    suite, base_model, peft_folder, tiny_model_dir, tmp_path, capsys
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (
        run(
            suite,
            "models",
            "import",
            str(peft_folder),
            "--name",
            "peft-rt",
            "--base",
            "tiny-llama",
        )
        == 0
    )
    adapter_id = capsys.readouterr().out.split()[1]
    out = tmp_path / "exported"
    assert run(suite, "models", "export", "peft-rt", str(out)) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama"  # portable
    sidecar = json.loads((out / "lorafleet.json").read_text())
    assert sidecar["base_model_digest"] == base_model.digest
    assert sidecar["artifact_id"] == adapter_id

    prompt = "Extract the order"
    ours = (
        suite.stub("inference")
        .Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=base_model.id,
                adapter_id=adapter_id,
                params=common_pb2.GenerationParams(
                    prompt=prompt, raw=True, max_new_tokens=8, temperature=0.0
                ),
            ),
            timeout=120,
        )
        .output
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(
        str(tiny_model_dir), dtype=torch.float32
    )
    model = PeftModel.from_pretrained(base, str(out)).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        generated = model.generate(
            ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    theirs = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
    assert ours.text == theirs
    assert ours.completion_tokens == generated.shape[1] - ids.shape[1] == 8
    with torch.no_grad(), model.disable_adapter():
        plain = model.generate(
            ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    assert not torch.equal(plain, generated)  # the adapter's weights made it out
