"""Sharded, digested, all-or-nothing merge output."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from services.common.errors import InvalidArgument
from services.merger import output
from services.merger.lora_merge import merge_adapter
from services.merger.output import ModelWriter, all_finite, sweep_stale_staging
from tests.merger.helpers import make_adapter, max_difference

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("output") / "adapter"
    return out, make_adapter(tiny_model_dir, out, seed=21)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _logits(model_dir: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.inference_mode():
        return model.eval()(torch.tensor([[5, 17, 42, 99, 3, 250]])).logits


def test_small_max_shard_size_writes_an_index_transformers_loads(
    tiny_model_dir, adapter, tmp_path
):
    adapter_dir, reference = adapter
    one = merge_adapter(adapter_dir, tiny_model_dir, tmp_path / "one")
    many = merge_adapter(
        adapter_dir, tiny_model_dir, tmp_path / "many", max_shard_size=100_000
    )
    assert one.written.shards == 1 and not (tmp_path / "one" / "index").exists()
    n = many.written.shards
    assert n >= 4
    shards = sorted(p.name for p in (tmp_path / "many").glob("*.safetensors"))
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    with safe_open(str(tmp_path / "one" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        tensor_bytes = sum(
            f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in names
        )
    assert set(index["weight_map"]) == names
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == tensor_bytes
    for shard in shards:  # every file obeys the limit (no tensor here exceeds it)
        assert (tmp_path / "many" / shard).stat().st_size < 100_000 + 4096
    # digests taken while writing are the files' digests
    for name, (sha, size) in many.written.files.items():
        path = tmp_path / "many" / name
        assert _sha256(path) == sha and path.stat().st_size == size, name
    assert set(many.written.files) == {p.name for p in (tmp_path / "many").iterdir()}
    assert max(max_difference(tmp_path / "many", reference).values()) <= 1e-6
    assert torch.equal(_logits(tmp_path / "many"), _logits(tmp_path / "one"))


def test_all_finite_is_exact_even_when_a_sum_overflows(monkeypatch):
    monkeypatch.setattr(output, "_SCAN", 4)  # several slices of a small tensor
    assert all_finite(torch.ones(10)) and all_finite(torch.arange(10))
    assert all_finite(torch.full((10,), 3e38))  # sums to inf; entries are finite
    assert all_finite(torch.full((10,), 6e4, dtype=torch.float16))
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.ones(10, dtype=torch.bfloat16)
        t[9] = bad
        assert not all_finite(t), bad
    t = torch.ones(10)
    t[1], t[2] = float("inf"), float("-inf")
    assert not all_finite(t)


def test_bad_shard_size_is_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="max_shard_size"):
        ModelWriter(tmp_path, [("w", torch.float32, (2, 2))], {}, max_shard_size=0)


# A merge that is SIGKILLed after a few tensors, the way a crash or an OOM kill
# would stop it: staged exactly as the merge job stages its output.
_KILLED_MERGE = """
import sys, time
from pathlib import Path
from services.common.paths import staged_directory
from services.merger.lora_merge import merge_adapter

adapter, base, final, ready = map(Path, sys.argv[1:5])

def on_tensor(done, total, name):
    if done == 5:
        ready.write_text("half-way")
        time.sleep(120)

with staged_directory(final) as tmp:
    merge_adapter(adapter, base, tmp, on_tensor=on_tensor, max_shard_size=100_000)
"""


def test_a_merge_killed_midway_leaves_no_visible_output(
    tiny_model_dir, adapter, tmp_path
):
    staging = tmp_path / "staging"
    final, ready = staging / "merge-killed", tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_MERGE,
            str(adapter[0]),
            str(tiny_model_dir),
            str(final),
            str(ready),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert proc.poll() is None, "the merge process died on its own"
            assert time.time() < deadline, "the merge never got half-way"
            time.sleep(0.05)
        partial = [p for p in staging.iterdir() if p.name.startswith(".")]
        assert partial and any(partial[0].glob("model-*.safetensors"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not final.exists()
    # only the hidden temp directory remains; nothing a reader would pick up
    assert [p.name for p in staging.iterdir() if not p.name.startswith(".")] == []
    # a merger starting later removes it once nothing in it changed for a while
    (left,) = staging.iterdir()
    assert sweep_stale_staging(staging, older_than_s=3600) == []
    old = time.time() - 7200
    for path in [left, *left.rglob("*")]:
        os.utime(path, (old, old))
    assert sweep_stale_staging(staging, older_than_s=3600) == [left]
    assert list(staging.iterdir()) == []
