"""The streamed merge's machinery: exact values, digests, bounds and errors."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from services.common.errors import FailedPrecondition
from services.merger import lora_stream, write_lanes
from services.merger.buffers import BufferPool
from services.merger.lora_merge import merge_adapter, merged_weight, plan_merge
from services.merger.output import ModelWriter
from services.merger.write_lanes import HashedWriter
from tests.merger.helpers import make_adapter


def _tensors(model_dir) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("output_dtype", ["same", "bfloat16", "float16"])
def test_streamed_merge_is_bit_identical(
    tmp_path, tiny_model_dir, monkeypatch, output_dtype
):
    """Slices copied, weights merged in pooled buffers: the values of the plain
    per-tensor formula (merged_weight, then the output dtype), bit for bit; in
    float32, PEFT's merge_and_unload bit for bit too."""
    monkeypatch.setattr(lora_stream, "COPY_SLICE", 96)  # many slices per tensor
    peft = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=3)
    merge_adapter(
        tmp_path / "adapter",
        tiny_model_dir,
        tmp_path / "out",
        output_dtype=output_dtype,
    )
    ours, base = _tensors(tmp_path / "out"), _tensors(tiny_model_dir)
    plan = plan_merge(tmp_path / "adapter", tiny_model_dir)
    adapter = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert plan.merges and set(ours) == set(base)
    for name, tensor in base.items():
        want = tensor
        if name in plan.merges:
            m = plan.merges[name]
            want = merged_weight(
                tensor, adapter[m.a_key], adapter[m.b_key], m.scale, m.transposed
            )
            if output_dtype == "same" and tensor.dtype == torch.float32:
                assert torch.equal(ours[name], peft[name]), name
        same = output_dtype == "same"
        want = want.to(tensor.dtype if same else getattr(torch, output_dtype))
        assert ours[name].dtype == want.dtype and torch.equal(ours[name], want), name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model.layers.1.mlp.up_proj.weight", float("inf")),  # merged
        ("model.layers.1.mlp.up_proj.weight", float("nan")),
        ("model.layers.0.post_attention_layernorm.weight", float("inf")),  # copied
    ],
)
def test_non_finite_base_values_are_refused_on_every_path(
    tmp_path, tiny_model_dir, monkeypatch, name, value
):
    """A merged weight skips the separate NaN/Inf scan only when its max change
    proves it finite; an Inf in W (Inf - Inf = NaN) must not pass as proven."""
    monkeypatch.setattr(lora_stream, "COPY_SLICE", 32)
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    shutil.copytree(tiny_model_dir, tmp_path / "base")
    path = tmp_path / "base" / "model.safetensors"
    tensors = load_file(str(path))
    tensors[name].view(-1)[-1] = value  # in the last slice of a copied tensor
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(FailedPrecondition, match=re.escape(name)):
        merge_adapter(tmp_path / "adapter", tmp_path / "base", tmp_path / "out")


def test_hashed_writer_digests_what_it_writes_within_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(write_lanes, "_SLICE", 16)  # big buffers go in slices
    seen: list[int] = []
    real = HashedWriter._write_item

    def watching(self, state, item):
        seen.append(self._in_flight)
        return real(self, state, item)

    monkeypatch.setattr(HashedWriter, "_write_item", watching)
    released: list[int] = []
    lanes = HashedWriter(max_in_flight=100)
    chunks = {"a.bin": [b"x" * 40, b"y" * 70, b"", b"z" * 250], "b.bin": [b"q" * 9]}
    for name, parts in chunks.items():
        lanes.begin(tmp_path / name)
        for i, part in enumerate(parts):
            lanes.put(memoryview(part), release=lambda i=i: released.append(i))
        lanes.end()
    files = lanes.finish()
    for name, parts in chunks.items():
        data = b"".join(parts)
        assert (tmp_path / name).read_bytes() == data
        assert files[name] == (hashlib.sha256(data).hexdigest(), len(data))
    assert sorted(released) == [0, 0, 1, 2, 3]
    # never more than the bound in flight, but for the 250-byte buffer alone
    assert max(seen) == 250 and all(n <= 100 for n in seen if n != 250)


def test_a_lane_error_surfaces_and_the_file_is_closed(tmp_path, monkeypatch):
    def failing(self, state, item):
        if item[0] == "data":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(HashedWriter, "_hash_item", failing)
    lanes = HashedWriter(max_in_flight=1 << 20)
    lanes.begin(tmp_path / "f.bin")
    lanes.put(memoryview(b"abc"))
    with pytest.raises(OSError, match="No space left"):
        lanes.finish()
    lanes.abort()
    assert all(fh.closed for fh in lanes._opened)


def test_tensor_bytes_in_slices_give_the_same_file(tmp_path):
    tensors = {
        "a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.ones(5, dtype=torch.bfloat16),
    }
    specs = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    whole = ModelWriter(tmp_path / "whole", specs, {"format": "pt"})
    (tmp_path / "whole").mkdir()
    for name, tensor in tensors.items():
        whole.write(name, tensor)
    sliced = ModelWriter(tmp_path / "sliced", specs, {"format": "pt"})
    (tmp_path / "sliced").mkdir()
    for name, tensor in tensors.items():
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        for i in range(0, len(raw), 6):
            sliced.write_bytes(
                name, tensor.dtype, tensor.shape, memoryview(raw[i : i + 6])
            )
    with pytest.raises(RuntimeError, match="after the last tensor"):
        sliced.write_bytes("c", torch.float32, (1,), memoryview(b"1234"))
    one, two = whole.close(), sliced.close()
    assert one.files == two.files
    path = tmp_path / "sliced" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        assert all(torch.equal(f.get_tensor(k), t) for k, t in tensors.items())


def test_model_writer_refuses_bytes_that_do_not_fit(tmp_path):
    specs = [("a", torch.float32, (2,)), ("b", torch.float32, (1,))]
    writer = ModelWriter(tmp_path, specs, {})
    with pytest.raises(RuntimeError, match="expected a torch.float32"):
        writer.write_bytes("a", torch.float16, (2,), memoryview(b"1234"))
    writer.write_bytes("a", torch.float32, (2,), memoryview(b"1234"))
    with pytest.raises(RuntimeError, match="inside another tensor"):
        writer.write_bytes("b", torch.float32, (1,), memoryview(b"1234"))
    with pytest.raises(RuntimeError, match="got 8 bytes for a"):
        writer.write_bytes("a", torch.float32, (2,), memoryview(b"12345678"))
    with pytest.raises(RuntimeError, match="closed after 0 of 2 tensors"):
        writer.close()


def test_buffer_pool_reuses_up_to_its_cap():
    pool = BufferPool(keep_bytes=100)
    first = pool.take(60)
    pool.give(first)
    assert pool.take(60) is first  # reused, not allocated again
    second, third = pool.take(60), pool.take(60)
    pool.give(second)
    pool.give(third)  # over the cap: dropped
    assert pool.take(60) is second and pool.take(60) is not third
