"""Exactness of the merge against PEFT's merge_and_unload, and its refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.lora_merge import merge_adapter, merged_weight, plan_merge
from tests.merger.helpers import make_adapter, max_difference

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6
METHODS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}


def _keys(model_dir: Path) -> set[str]:
    keys: set[str] = set()
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as fh:
            keys.update(fh.keys())
    return keys


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gpt_neox"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_merge_matches_peft(tmp_path, tiny_model_factory, family, method):
    base = tiny_model_factory(family)
    reference = make_adapter(base, tmp_path / "adapter", seed=7, **METHODS[method])
    stats = merge_adapter(
        tmp_path / "adapter",
        base,
        tmp_path / "out",
        adapter_digest="sha256:aa",
        base_digest="sha256:bb",
    )
    diffs = max_difference(tmp_path / "out", reference)
    assert max(diffs.values()) <= TOLERANCE, sorted(
        diffs.items(), key=lambda kv: -kv[1]
    )[:3]
    assert set(diffs) == _keys(base)
    # every linear projection of both layers was adapted, and visibly so
    assert (
        stats.tensors_merged
        == {"llama": 14, "qwen2": 14, "gpt2": 8, "gpt_neox": 8}[family]
    )
    assert stats.tensors_total == len(diffs)
    assert stats.max_abs_delta > 1e-3
    assert stats.provenance["use_dora"] is (method == "dora")
    expected_scale = 6 / 2 if method == "rslora" else 6 / 4
    assert stats.provenance["scale"] == pytest.approx(expected_scale)


def test_output_metadata_and_side_files(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter", use_dora=True)
    merge_adapter(
        tmp_path / "adapter",
        tiny_model_dir,
        tmp_path / "out",
        adapter_digest="sha256:aa",
        base_digest="sha256:bb",
    )
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt"
    assert meta["merge_method"] == "lora" and meta["merge_use_dora"] == "true"
    assert meta["merge_rank"] == "4" and json.loads(meta["merge_scale"]) == 1.5
    assert meta["merge_adapter_digest"] == "sha256:aa"
    assert meta["merge_base_digest"] == "sha256:bb"
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        assert (tmp_path / "out" / name).read_bytes() == (
            tiny_model_dir / name
        ).read_bytes()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_embeddings_modules_to_save_and_patterns(tmp_path, tiny_model_dir, method):
    reference = make_adapter(
        tiny_model_dir,
        tmp_path / "adapter",
        seed=3,
        use_dora=method == "dora",
        target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
        modules_to_save=["lm_head"],
        rank_pattern={"v_proj": 2},
        alpha_pattern={"down_proj": 16},
    )
    stats = merge_adapter(tmp_path / "adapter", tiny_model_dir, tmp_path / "out")
    diffs = max_difference(tmp_path / "out", reference)
    assert max(diffs.values()) <= TOLERANCE
    assert stats.tensors_merged == 7  # 3 modules x 2 layers + embed_tokens
    assert stats.tensors_replaced == 1  # lm_head from modules_to_save
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not torch.equal(original["lm_head.weight"], reference["lm_head.weight"])


def test_lora_bias_is_merged(tmp_path, tiny_model_factory):
    base = tiny_model_factory("gpt2")
    reference = make_adapter(
        base, tmp_path / "adapter", target_modules=["c_attn"], lora_bias=True
    )
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    biases = [t for k, t in tensors.items() if k.endswith("lora_B.bias")]
    assert len(biases) == 2 and all(t.abs().max() > 0 for t in biases)
    stats = merge_adapter(tmp_path / "adapter", base, tmp_path / "out")
    assert max(max_difference(tmp_path / "out", reference).values()) <= TOLERANCE
    assert stats.tensors_merged == 4  # c_attn weight and bias in both layers


def test_sharded_base_gives_one_file_when_it_fits(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).save_pretrained(
        str(sharded), max_shard_size="60KB"
    )
    for f in tiny_model_dir.iterdir():
        if not f.name.endswith(".safetensors") and not (sharded / f.name).exists():
            shutil.copy(f, sharded / f.name)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    reference = make_adapter(sharded, tmp_path / "adapter", seed=5)
    stats = merge_adapter(tmp_path / "adapter", sharded, tmp_path / "out")
    assert stats.written.shards == 1
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert _keys_of(tmp_path / "out" / "model.safetensors") == set(index["weight_map"])
    assert max(max_difference(tmp_path / "out", reference).values()) <= TOLERANCE


def _keys_of(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def test_output_dtype_bfloat16(tmp_path, tiny_model_dir):
    reference = make_adapter(tiny_model_dir, tmp_path / "adapter")
    merge_adapter(
        tmp_path / "adapter", tiny_model_dir, tmp_path / "out", output_dtype="bfloat16"
    )
    ours = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {t.dtype for t in ours.values()} == {torch.bfloat16}
    for name, tensor in ours.items():
        assert torch.equal(tensor, reference[name].to(torch.bfloat16)), name
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"


def test_unknown_output_dtype_is_invalid(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(InvalidArgument, match="float8"):
        merge_adapter(
            tmp_path / "adapter",
            tiny_model_dir,
            tmp_path / "out",
            output_dtype="float8",
        )


def _rewrite(model_dir: Path, dest: Path, edit) -> Path:
    shutil.copytree(model_dir, dest)
    tensors = load_file(str(dest / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_shape_mismatch_names_tensor_and_shapes(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    name = "model.layers.1.self_attn.o_proj.weight"
    bad = _rewrite(
        tiny_model_dir,
        tmp_path / "bad",
        lambda t: t.__setitem__(name, torch.zeros(64, 32)),
    )
    with pytest.raises(FailedPrecondition) as err:
        plan_merge(tmp_path / "adapter", bad)
    assert name in err.value.message
    assert "(64, 32)" in err.value.message and "(64, 64)" in err.value.message
    assert not (tmp_path / "out").exists()


def test_missing_module_and_wrong_family_refused(
    tmp_path, tiny_model_dir, tiny_model_factory
):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    name = "model.layers.0.mlp.up_proj.weight"
    bad = _rewrite(tiny_model_dir, tmp_path / "bad", lambda t: t.pop(name))
    with pytest.raises(FailedPrecondition, match=name.replace(".", r"\.")):
        plan_merge(tmp_path / "adapter", bad)
    with pytest.raises(FailedPrecondition, match="does not have"):
        plan_merge(tmp_path / "adapter", tiny_model_factory("gpt2"))


def test_nan_in_adapter_fails_and_names_tensor(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(
        FailedPrecondition, match=r"model\.layers\.0\.self_attn\.k_proj"
    ):
        merge_adapter(tmp_path / "adapter", tiny_model_dir, tmp_path / "out")


def test_overflow_in_float16_fails(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    big = _rewrite(
        tiny_model_dir, tmp_path / "big", lambda t: t["model.norm.weight"].fill_(1e6)
    )
    merge_adapter(tmp_path / "adapter", big, tmp_path / "ok")  # float32 holds 1e6
    with pytest.raises(FailedPrecondition, match=r"model\.norm\.weight.*float16"):
        merge_adapter(
            tmp_path / "adapter", big, tmp_path / "out", output_dtype="float16"
        )


def test_dora_conv1d_formula_by_hand():
    torch.manual_seed(0)
    w, a, b = (
        torch.randn(6, 4),
        torch.randn(2, 6),
        torch.randn(4, 2),
    )  # Conv1D (in, out)
    m = torch.rand(4) + 0.5
    got = merged_weight(w, a, b, 0.5, transposed=True, magnitude=m)
    direction = w.T + 0.5 * (b @ a)  # (out, in)
    expected = (m / direction.norm(dim=1)).view(-1, 1) * direction
    assert torch.allclose(got, expected.T, atol=1e-6)


def test_merge_module_imports_neither_transformers_nor_peft(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from services.merger.lora_merge import merge_adapter\n"
        f"merge_adapter(Path({str(tmp_path / 'adapter')!r}), "
        f"Path({str(tiny_model_dir)!r}), Path({str(tmp_path / 'out')!r}))\n"
        "bad = sorted(m for m in ('transformers', 'peft') if m in sys.modules)\n"
        "print('LOADED', bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_renamed_checkpoint_keys_resolve(tmp_path, tiny_model_factory):
    base = tiny_model_factory("gpt_neox")  # file says embed_out, PEFT says lm_head
    reference = make_adapter(
        base,
        tmp_path / "adapter",
        target_modules=["dense"],
        modules_to_save=["lm_head"],
    )
    stats = merge_adapter(tmp_path / "adapter", base, tmp_path / "out")
    assert stats.tensors_replaced == 1
    assert max(max_difference(tmp_path / "out", reference).values()) <= TOLERANCE
