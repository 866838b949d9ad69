"""Packing: packed rows score exactly like the examples alone, with less padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from services.common.errors import InvalidArgument
from services.common.modeling import load_causal_lm
from services.trainer.data import prepare_data
from services.trainer.model_setup import build_peft_model
from services.trainer.packing import PackedCollator, pack
from services.trainer.spec import TrainConfig
from services.trainer.training import fine_tune
from tests.trainer.families import build_family_model

LENGTHS = (5, 9, 3, 12, 7, 2, 11, 4)


def _features(lengths=LENGTHS, vocab: int = 300) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def test_pack_fills_rows_and_restarts_positions() -> None:
    features = _features()
    rows = pack(features, 16)
    assert all(len(r["input_ids"]) <= 16 for r in rows)
    assert len(rows) == 4  # 53 tokens: best-fit decreasing needs 4 rows of 16
    assert sum(len(r["input_ids"]) for r in rows) == sum(LENGTHS) == 53
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        for s in starts:  # each example's first label is masked
            assert row["labels"][s] == -100
        assert len(row["labels"]) == len(row["input_ids"]) == len(row["position_ids"])
    packed_tokens = sorted(
        tuple(r["input_ids"][s:e])
        for r in rows
        for s, e in _segments(r["position_ids"])
    )
    assert packed_tokens == sorted(tuple(f["input_ids"]) for f in features)


def _segments(positions: list[int]) -> list[tuple[int, int]]:
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return list(zip(starts[:-1], starts[1:], strict=True))


def test_packed_batch_equals_examples_run_alone(tiny_model_dir) -> None:
    """Logits of every token, and the batch loss, match the unpacked run."""
    model = load_causal_lm(tiny_model_dir).eval()
    model.config.use_cache = False
    features = _features(vocab=model.config.vocab_size)
    batch = PackedCollator(pad_token_id=0)(pack(features, 24))
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(**batch)
        for r, row in enumerate(batch["input_ids"]):
            positions = batch["position_ids"][r].tolist()
            for s, e in _segments(positions):
                alone = model(input_ids=row[s:e][None]).logits[0]
                assert torch.allclose(packed.logits[r, s:e], alone, atol=1e-5)
        # the same examples, right-padded one per row, give the same mean loss
        width = max(len(f["input_ids"]) for f in features)
        padded = {
            "input_ids": torch.tensor(
                [f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features]
            ),
            "attention_mask": torch.tensor(
                [
                    [1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                    for f in features
                ]
            ),
            "labels": torch.tensor(
                [f["labels"] + [-100] * (width - len(f["labels"])) for f in features]
            ),
        }
        unpacked = model(**padded)
    assert abs(float(packed.loss) - float(unpacked.loss)) < 1e-5


def _completion_file(tmp_path: Path, n: int = 24) -> Path:
    rows = [
        {
            "prompt": f"Order {'many ' * (i % 5)}socks {i}:",
            "completion": f" {i} x socks",
        }
        for i in range(n)
    ]
    path = tmp_path / "completion.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _positions(batches: list[dict]) -> int:
    return sum(b["input_ids"].numel() for b in batches)


def test_packing_cuts_padding_and_steps(tiny_model_dir, tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    path = _completion_file(tmp_path)
    cfg = dict(max_seq_length=64, eval_fraction=0.0, batch_size=4)
    plain = prepare_data(tokenizer, path, TrainConfig(**cfg))
    packed = prepare_data(tokenizer, path, TrainConfig(packing=True, **cfg))
    real = sum(len(f["input_ids"]) for f in plain.train)
    assert sum(len(r["input_ids"]) for r in packed.train) == real
    assert len(packed.train) <= len(plain.train) // 2
    assert packed.extra["packing"] == {
        "train_examples": len(plain.train),
        "train_rows": len(packed.train),
    }

    def batches(data) -> list[dict]:
        rows = data.train
        return [data.collator(rows[i : i + 4]) for i in range(0, len(rows), 4)]

    plain_positions, packed_positions = (
        _positions(batches(plain)),
        _positions(batches(packed)),
    )
    assert packed_positions < plain_positions
    # packed rows carry almost no padding; the plain batches carry a lot
    assert packed_positions - real < (plain_positions - real) / 2


def test_packed_training_lowers_the_loss(tiny_model_dir, tmp_path) -> None:
    losses: list[float] = []
    fine_tune(
        tiny_model_dir,
        _completion_file(tmp_path),
        tmp_path / "adapter",
        TrainConfig(
            packing=True,
            rank=4,
            learning_rate=1e-2,
            max_steps=4,
            batch_size=2,
            max_seq_length=64,
            eval_fraction=0.0,
        ),
        device="cpu",
        on_progress=lambda s, t, m: losses.append(m["loss"]) if "loss" in m else None,
        should_stop=lambda: False,
    )
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_architectures_that_leak_across_packed_rows_are_refused(
    tmp_path, tiny_tokenizer_dir
) -> None:
    """OPT's attention ignores restarting positions: packing would mix examples."""
    base = build_family_model(tmp_path / "opt", tiny_tokenizer_dir, "opt")
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    cfg = TrainConfig(packing=True, max_seq_length=64, eval_fraction=0.0)
    data = prepare_data(tokenizer, _completion_file(tmp_path), cfg)
    with pytest.raises(InvalidArgument, match="attend to each other") as err:
        build_peft_model(base, cfg, "cpu", data)
    assert "opt" in err.value.message and "group_by_length" in err.value.message


def test_packing_and_grouping_options_per_task(tiny_model_dir, tmp_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    path = tmp_path / "cls.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"text": f"row {i}", "label": "a" if i % 2 else "b"})
            for i in range(6)
        )
    )
    with pytest.raises(InvalidArgument, match="config.packing applies to causal-LM"):
        prepare_data(tokenizer, path, TrainConfig(packing=True))
    grouped = prepare_data(tokenizer, path, TrainConfig(group_by_length=True))
    assert grouped.trainer_args == {"train_sampling_strategy": "group_by_length"}
    with pytest.raises(InvalidArgument, match="not classification"):
        TrainConfig(packing=True, task_type="classification").check()


def test_group_by_length_uses_the_length_grouped_sampler(
    tiny_model_dir, tmp_path
) -> None:
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cfg = TrainConfig(group_by_length=True, eval_fraction=0.0, batch_size=4)
    data = prepare_data(tokenizer, _completion_file(tmp_path), cfg)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to="none",
        **data.trainer_args,
    )
    model = load_causal_lm(tiny_model_dir)
    trainer = Trainer(model=model, args=args, train_dataset=data.train)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == [len(f["input_ids"]) for f in data.train]


def _varied_file(tmp_path: Path, spread: int = 16, n: int = 32) -> Path:
    """Rows whose lengths vary by up to `spread` words: padding-heavy batches."""
    rows = [
        {"prompt": f"Order {'many ' * (i * 7 % spread)}socks {i}:", "completion": " ok"}
        for i in range(n)
    ]
    path = tmp_path / f"varied-{spread}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _auto(base: Path, path: Path, **cfg) -> tuple[TrainConfig, object]:
    from services.trainer.auto_packing import resolve_packing

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    config = TrainConfig(max_seq_length=64, eval_fraction=0.0, **cfg)
    data = prepare_data(tokenizer, path, config)
    model, _ = build_peft_model(base, config, "cpu", data)
    rng = torch.random.get_rng_state()
    resolved = resolve_packing(config, data, model, base)
    # the probe draws from its own generator: training's RNG is untouched
    assert torch.equal(torch.random.get_rng_state(), rng)
    return resolved, data


def test_auto_packs_where_the_probe_finds_examples_kept_apart(
    tiny_model_dir, tmp_path
) -> None:
    cfg, data = _auto(tiny_model_dir, _varied_file(tmp_path))
    assert data.extra["auto_packing"]["padding_share"] >= 0.2
    assert cfg.packing and cfg.packing_mode == "auto"
    assert isinstance(data.collator, PackedCollator)
    assert data.extra["packing"]["train_rows"] < data.extra["packing"]["train_examples"]


def test_auto_groups_by_length_where_packing_would_leak(
    tmp_path, tiny_tokenizer_dir
) -> None:
    """OPT lets packed rows attend to each other: auto does not pack it (it is
    not refused either, as an explicit packing request is) and groups rows by
    length instead."""
    base = build_family_model(tmp_path / "opt", tiny_tokenizer_dir, "opt")
    cfg, data = _auto(base, _varied_file(tmp_path))
    assert not cfg.packing and cfg.group_by_length
    assert data.trainer_args == {"train_sampling_strategy": "group_by_length"}
    assert "attend to each other" in data.extra["auto_packing"]["packing_skipped"]
    assert not isinstance(data.collator, PackedCollator)


def test_auto_leaves_batches_with_little_padding_as_they_are(
    tiny_model_dir, tmp_path
) -> None:
    """Rows of about one length: packing would only lengthen rows (more memory,
    block-diagonal attention) for no padding saved."""
    cfg, data = _auto(tiny_model_dir, _varied_file(tmp_path, spread=1))
    decision = data.extra["auto_packing"]
    assert decision["padding_share"] < 0.2 and not decision["packed"]
    assert not cfg.packing and not cfg.group_by_length
    assert not isinstance(data.collator, PackedCollator)


@pytest.mark.parametrize(
    "options", [{"packing_mode": "off"}, {"group_by_length": True}]
)
def test_auto_leaves_an_explicit_choice_alone(tiny_model_dir, tmp_path, options):
    cfg, data = _auto(tiny_model_dir, _completion_file(tmp_path), **options)
    assert not cfg.packing
    assert not isinstance(data.collator, PackedCollator)
    assert cfg.group_by_length == bool(options.get("group_by_length"))


def test_packing_mode_on_the_wire() -> None:
    from lorafleet.v1 import common_pb2
    from services.trainer.convert import config_from_pb, config_to_pb

    assert config_from_pb(common_pb2.TrainConfig()).packing_mode == "auto"
    legacy = config_from_pb(common_pb2.TrainConfig(packing=True))
    assert (legacy.packing_mode, legacy.packing) == ("on", True)
    off = config_from_pb(
        common_pb2.TrainConfig(packing_mode=common_pb2.PACKING_MODE_OFF)
    )
    assert (off.packing_mode, off.packing) == ("off", False)
    assert config_to_pb(off).packing_mode == common_pb2.PACKING_MODE_OFF
    clash = config_from_pb(
        common_pb2.TrainConfig(packing=True, packing_mode=common_pb2.PACKING_MODE_OFF)
    )
    with pytest.raises(InvalidArgument, match="packing_mode is OFF"):
        clash.check()


def test_padding_share_of_nothing_is_zero() -> None:
    from services.trainer.auto_packing import padding_share

    assert padding_share([0, 0, 0], 8, 1) == 0.0
    assert padding_share([], 8, 1) == 0.0
    assert padding_share([10, 10, 10, 10], 2, 1) == 0.0
    assert 0.45 < padding_share([1, 100] * 8, 8, 1) < 0.55  # about half
