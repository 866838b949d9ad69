"""The native dropout kernel: torch's own noise, bit for bit, or not used at all."""

from __future__ import annotations

import ctypes
import tempfile

import pytest
import torch

from services.trainer import native_dropout
from services.trainer.speed import SPEED_ENV
from tests.trainer.runs import adapter_sha, config, train_in_process


@pytest.fixture
def fresh_check(tmp_path, monkeypatch):
    """`available()` and the built library are cached; each test here builds
    and judges anew, in a cache of its own."""
    monkeypatch.setenv(native_dropout.CACHE_ENV, str(tmp_path / "cache"))
    cached = (native_dropout.available, native_dropout._library)
    for function in cached:
        function.cache_clear()
    yield tmp_path / "cache" / "native"
    for function in cached:  # (tests may have patched the module's names)
        function.cache_clear()


def _torch_dropout(x, p):
    noise = torch.empty_like(x).bernoulli_(1 - p)
    noise.div_(1 - p)
    return x * noise, noise != 0


def test_the_kernel_compiles_once_into_a_private_cache_and_agrees_with_torch(
    fresh_check,
):
    # CI and `make setup` machines have a C compiler
    lib = native_dropout._library()
    assert lib is not None, "the native dropout kernel did not compile (no cc?)"
    assert native_dropout._disagreement(lib) is None
    assert native_dropout.available()
    (built,) = fresh_check.glob("mt_dropout-*.so")
    assert fresh_check.stat().st_mode & 0o777 == 0o700
    # a second process (here: a cleared cache) reuses the build
    native_dropout._library.cache_clear()
    stamp = built.stat().st_mtime_ns
    assert native_dropout._library() is not None
    assert built.stat().st_mtime_ns == stamp


def test_a_cache_others_can_write_to_is_not_used(fresh_check, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fresh_check.mkdir(parents=True)
    fresh_check.chmod(0o777)
    private = native_dropout._cache_dir()
    assert private != fresh_check and private.parent == tmp_path
    assert native_dropout._library() is not None
    assert not list(fresh_check.glob("*.so"))


def test_without_a_compiler_it_is_simply_not_used(fresh_check, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert native_dropout._library() is None
    assert native_dropout.available() is False


@pytest.mark.parametrize(
    ("shape", "p"),
    [
        ((3, 5), 0.05),
        ((2, 37, 64), 0.1),
        ((1,), 0.5),
        ((8, 101, 576), 0.05),
        ((4, 96, 1536), 0.3),
        ((7, 313), 0.999),
    ],
)
def test_same_noise_and_generator_state_as_torch(shape, p):
    torch.manual_seed(11)
    torch.rand(int(torch.randint(0, 700, ()).item()))  # somewhere mid-block
    x = torch.randn(shape)
    x.view(-1)[0] = float("inf")  # x * 0.0 is nan in torch: the same here
    x.view(-1)[-1] = -0.0
    start = torch.get_rng_state()
    expected, expected_keep = _torch_dropout(x, p)
    expected_state = torch.get_rng_state()
    torch.set_rng_state(start)
    dropped, keep = native_dropout.dropout(x, p)
    assert torch.equal(keep, expected_keep)
    assert torch.equal(dropped.view(torch.int32), expected.view(torch.int32))
    assert torch.equal(torch.get_rng_state(), expected_state)
    g = torch.randn(shape)
    assert torch.equal(
        native_dropout.scale_by_mask(g, keep, p).view(torch.int32),
        (g * torch.where(keep, native_dropout.kept_scale(p), 0.0)).view(torch.int32),
    )


def test_from_a_fresh_seed_the_engine_twists_first_as_torch_does():
    torch.manual_seed(2026)
    expected, keep = _torch_dropout(torch.ones(5000), 0.05)
    after = torch.get_rng_state()
    torch.manual_seed(2026)
    dropped, native_keep = native_dropout.dropout(torch.ones(5000), 0.05)
    assert torch.equal(native_keep, keep) and torch.equal(dropped, expected)
    assert torch.equal(torch.get_rng_state(), after)


def test_only_contiguous_cpu_float32_takes_the_native_path():
    x = torch.randn(4, 6)
    assert native_dropout.usable_for(x)
    assert not native_dropout.usable_for(x.t())
    assert not native_dropout.usable_for(x.double())
    assert not native_dropout.usable_for(x.to(torch.bfloat16))


def test_a_kernel_that_draws_differently_is_not_used(fresh_check, monkeypatch, caplog):
    real = native_dropout._library()

    class OffByOne:
        """Keeps one element torch drops (or the reverse) in every draw."""

        lf_scale_by_mask = real.lf_scale_by_mask

        @staticmethod
        def lf_dropout(state, size, x, out, mask, n, threshold, scale):
            status = real.lf_dropout(state, size, x, out, mask, n, threshold, scale)
            flipped = ctypes.c_uint8.from_address(mask)
            flipped.value ^= 1
            return status

    assert "masks differ" in native_dropout._disagreement(OffByOne)
    monkeypatch.setattr(native_dropout, "_library", lambda: OffByOne)
    with caplog.at_level("WARNING"):
        assert native_dropout.available() is False
    assert "native dropout disabled" in caplog.text


def test_without_the_kernel_training_falls_back_to_the_same_adapter(
    fresh_check, tiny_model_dir, demo_dataset_path, tmp_path, monkeypatch
):
    cfg = config(max_steps=2, dropout=0.1)
    fast = train_in_process(tiny_model_dir, demo_dataset_path, tmp_path / "a", cfg)
    monkeypatch.setattr(native_dropout, "_library", lambda: None)
    native_dropout.available.cache_clear()
    slow = train_in_process(tiny_model_dir, demo_dataset_path, tmp_path / "b", cfg)
    assert fast.extra["native_dropout"] is True
    assert slow.extra["native_dropout"] is False
    assert adapter_sha(tmp_path / "a") == adapter_sha(tmp_path / "b")


def test_native_dropout_trains_the_byte_identical_adapter(
    tiny_model_dir, demo_dataset_path, tmp_path, monkeypatch
):
    """Against the lever off, and against PEFT's own dropout modules
    (saved_mask_dropout off): the same masks from the same draws, the same
    backward operations."""
    cfg = config(max_steps=3, dropout=0.1)
    monkeypatch.setenv(SPEED_ENV, "labelled_logits=off")
    native = train_in_process(tiny_model_dir, demo_dataset_path, tmp_path / "a", cfg)
    monkeypatch.setenv(SPEED_ENV, "labelled_logits=off,native_dropout=off")
    torch_noise = train_in_process(
        tiny_model_dir, demo_dataset_path, tmp_path / "b", cfg
    )
    monkeypatch.setenv(SPEED_ENV, "labelled_logits=off,saved_mask_dropout=off")
    peft = train_in_process(tiny_model_dir, demo_dataset_path, tmp_path / "c", cfg)
    assert native.extra["native_dropout"] is True
    assert torch_noise.extra["native_dropout"] is False
    assert peft.extra["native_dropout"] is False
    assert native.metrics["train_loss"] == peft.metrics["train_loss"]
    sha = adapter_sha(tmp_path / "a")
    assert sha == adapter_sha(tmp_path / "b") == adapter_sha(tmp_path / "c")
