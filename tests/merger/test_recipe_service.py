"""mergekit recipes through the merger's StartMergeJob and `lorafleet merge`:
folders registered on the fly (once), refs resolved, and everything the
recipe says that lorafleet would not honour refused by name, creating nothing."""

from __future__ import annotations

import hashlib

import grpc
import pytest
import yaml

from lorafleet.v1 import common_pb2, merger_pb2, registry_pb2
from services.cli.main import main as cli
from tests.merger.test_model_merge import perturbed


@pytest.fixture(scope="module")
def folders(suite, tiny_model_dir):
    root = suite.config.data_dir / "incoming-recipes"
    root.mkdir(parents=True, exist_ok=True)
    return {
        "base": perturbed(tiny_model_dir, root / "recipe-base", seed=10, scale=0.0),
        "a": perturbed(tiny_model_dir, root / "recipe-a", seed=11),
        "b": perturbed(tiny_model_dir, root / "recipe-b", seed=12),
    }


def ties_recipe(folders, **extra) -> str:
    return yaml.safe_dump(
        {
            "merge_method": "ties",
            "base_model": str(folders["base"]),
            "models": [
                {
                    "model": str(folders["a"]),
                    "parameters": {"weight": 1.0, "density": 0.5},
                },
                {
                    "model": str(folders["b"]),
                    "parameters": {"weight": 0.5, "density": 0.5},
                },
            ],
            "parameters": {"normalize": True},
            "dtype": "float32",
            **extra,
        },
        sort_keys=False,
    )


def run(suite, **request):
    merger = suite.stub("merger")
    job = merger.StartMergeJob(
        merger_pb2.StartMergeJobRequest(**request), timeout=60
    ).job
    final = list(
        merger.WatchMergeJob(
            merger_pb2.WatchMergeJobRequest(job_id=job.status.job_id), timeout=600
        )
    )[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    return final


def count_jobs(suite) -> int:
    return len(
        suite.stub("merger")
        .ListMergeJobs(merger_pb2.ListMergeJobsRequest(page_size=1000), timeout=30)
        .jobs
    )


def test_a_recipe_with_folders_registers_them_once_and_merges(suite, folders):
    first = run(suite, recipe=ties_recipe(folders), output_name="recipe-ties")
    assert first.request.method == "ties"
    assert first.request.params["densities"] == [0.5, 0.5]
    registry = suite.stub("registry")
    inputs = [
        registry.GetArtifact(registry_pb2.GetArtifactRequest(id=i), timeout=30).artifact
        for i in first.request.input_model_ids
    ]
    assert [a.name for a in inputs] == ["recipe-a", "recipe-b"]
    again = run(suite, recipe=ties_recipe(folders), output_name="recipe-ties")
    # The same folders are the same versions: nothing new registered for them.
    assert list(again.request.input_model_ids) == list(first.request.input_model_ids)
    assert again.request.base_model_id == first.request.base_model_id
    versions = registry.ListArtifacts(
        registry_pb2.ListArtifactsRequest(name="recipe-a"), timeout=30
    ).artifacts
    assert len(versions) == 1


def test_a_layer_stack_is_merged_gated_and_registered_with_its_depth(suite, folders):
    """passthrough slices make a 3-layer model of 2-layer inputs: the gate
    loads it with 3 layers and the registry records the new depth."""
    recipe = yaml.safe_dump(
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": str(folders["a"]), "layer_range": [0, 2]}]},
                {"sources": [{"model": str(folders["b"]), "layer_range": [1, 2]}]},
            ],
            "chat_template": "chatml",
            "dtype": "float32",
        }
    )
    final = run(suite, recipe=recipe, output_name="recipe-stack")
    registry = suite.stub("registry")
    merged = registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=final.result.merged_model_id), timeout=30
    ).artifact
    meta = dict(merged.metadata)
    assert meta["num_hidden_layers"] == 3
    assert meta["num_layers"] == 3
    assert meta["chat_template"] == "chatml"
    # slices name models by digest (ids differ between installs, and the
    # provenance is in the weights' headers, so in the content digest)
    digests = {
        registry.GetArtifact(registry_pb2.GetArtifactRequest(id=i), timeout=30)
        .artifact.digest
        for i in final.request.input_model_ids
    }
    stacked = {s["inputs"][0]["model"] for s in meta["slices"]}
    assert stacked == digests
    assert final.result.gate["layers"] == 3
    from pathlib import Path

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged.local_path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n"
    assert (Path(merged.local_path) / "chat_template.jinja").is_file()


def test_a_stack_whose_ranges_do_not_fit_is_refused_naming_the_slice(suite, folders):
    recipe = yaml.safe_dump(
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": str(folders["a"]), "layer_range": [0, 2]}]},
                {"sources": [{"model": str(folders["b"]), "layer_range": [1, 5]}]},
            ],
        }
    )
    before = count_jobs(suite)
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(recipe=recipe, output_name="refused"),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "slices[1]" in err.value.details()
    assert "has 2 layers" in err.value.details()
    assert count_jobs(suite) == before


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"tokenizer_source": "union"}, ["union is not supported"]),
        ({"tokenizer": {"source": "base"}}, ["tokenizer settings"]),
        ({"chat_template": "nonsense"}, ["chat_template 'nonsense'"]),
        ({"slices": []}, ["slices"]),
        ({"parameters": {"normalize": True, "frobnicate": 1}}, ["frobnicate"]),
        ({"merge_method": "arcee_fusion"}, ["unknown merge method 'arcee_fusion'"]),
        ({"base_model": "/etc"}, ["base_model"]),
    ],
)
def test_what_a_recipe_says_and_lorafleet_would_not_honour_is_refused(
    suite, folders, extra, words
):
    before = count_jobs(suite)
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(
                recipe=ties_recipe(folders, **extra), output_name="refused"
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for word in words:
        assert word in err.value.details()
    assert count_jobs(suite) == before


def test_a_recipe_and_a_method_together_are_refused(suite, folders):
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(
                recipe=ties_recipe(folders), method="ties", output_name="both"
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "give a recipe or method" in err.value.details()


def test_lorafleet_merge_runs_a_recipe_file_and_writes_the_folder(
    suite, folders, tmp_path, capsys, monkeypatch
):
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(ties_recipe(folders))
    out = tmp_path / "merged"
    code = cli(
        [
            "merge",
            "--recipe",
            str(recipe),
            "--name",
            "recipe-cli",
            "--out",
            str(out),
            "--registry",
            suite.address("registry"),
            "--merger",
            suite.address("merger"),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    name_version, artifact_id, digest = printed.out.split()[:3]
    assert name_version.startswith("recipe-cli:")
    merged = (
        suite.stub("registry")
        .GetArtifact(registry_pb2.GetArtifactRequest(id=artifact_id), timeout=30)
        .artifact
    )
    for entry in merged.files:
        data = (out / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256
    assert (out / "config.json").is_file() and any(out.glob("*.safetensors"))
    # an unsupported key: one line, exit 2, nothing merged
    recipe.write_text(ties_recipe(folders, tokenizer_source="union"))
    assert (
        cli(
            [
                "merge",
                "--recipe",
                str(recipe),
                "--name",
                "x",
                "--registry",
                suite.address("registry"),
                "--merger",
                suite.address("merger"),
            ]
        )
        == 2
    )
    assert "union is not supported" in capsys.readouterr().err


def test_a_model_without_a_tokenizer_is_refused_up_front(suite, folders):
    bare = folders["a"].parent / "recipe-no-tokenizer"
    if not bare.exists():
        bare.mkdir()
        for f in folders["a"].iterdir():
            if f.name in ("config.json",) or f.suffix == ".safetensors":
                (bare / f.name).write_bytes(f.read_bytes())
    recipe = yaml.safe_dump(
        {
            "merge_method": "linear",
            "models": [
                {"model": str(bare), "parameters": {"weight": 1.0}},
                {"model": str(folders["b"]), "parameters": {"weight": 1.0}},
            ],
        }
    )
    before = count_jobs(suite)
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(recipe=recipe, output_name="no-tok"),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has no tokenizer (none of tokenizer.json" in err.value.details()
    assert "gate.skip" in err.value.details()
    assert count_jobs(suite) == before
    skipped = run(
        suite,
        recipe=recipe,
        output_name="no-tok",
        gate=merger_pb2.MergeGateConfig(skip=True),
    )
    assert skipped.result.merged_model_id
