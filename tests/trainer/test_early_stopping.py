"""Early stopping on eval loss; the adapter saved is the best checkpoint's."""

from __future__ import annotations

from services.trainer import checkpoints
from tests.trainer.runs import adapter_sha, config, train_in_process

PATIENCE = 2


def test_rising_eval_loss_stops_early_and_keeps_the_best(
    tiny_model_dir, demo_dataset_path, tmp_path
):
    # A learning rate this high overshoots: eval loss falls, then climbs.
    cfg = config(
        max_steps=30,
        learning_rate=1.0,
        lr_schedule="constant",
        eval_fraction=0.03,
        eval_steps=1,
        early_stopping_patience=PATIENCE,
        checkpoint_steps=50,
    )
    events: list = []
    ckpt = tmp_path / "checkpoints"
    outcome = train_in_process(
        tiny_model_dir,
        demo_dataset_path,
        tmp_path / "adapter",
        cfg,
        checkpoint_dir=ckpt,
        events=events,
    )
    metrics = outcome.metrics
    evals = {step: m["eval_loss"] for step, _, m in events if "eval_loss" in m}
    stopped_at = int(metrics["steps"])
    best_step = int(metrics["best_step"])

    assert metrics["stopped_early"] == 1.0
    assert stopped_at < 30
    assert best_step == stopped_at - PATIENCE
    assert metrics["best_eval_loss"] == min(evals.values()) == evals[best_step]
    assert metrics["eval_loss"] == metrics["best_eval_loss"]
    assert evals[stopped_at] > evals[best_step]
    # The saved adapter is the best checkpoint's, not the last step's weights.
    best = ckpt / f"checkpoint-{best_step}"
    assert checkpoints.is_complete(best)
    assert adapter_sha(tmp_path / "adapter") == adapter_sha(best)


def test_without_eval_nothing_stops_early(tiny_model_dir, demo_dataset_path, tmp_path):
    outcome = train_in_process(
        tiny_model_dir,
        demo_dataset_path,
        tmp_path / "adapter",
        config(max_steps=3, checkpoint_steps=2),
        checkpoint_dir=tmp_path / "checkpoints",
    )
    assert outcome.metrics["steps"] == 3
    assert "stopped_early" not in outcome.metrics
    assert "eval_loss" in outcome.metrics  # one evaluation at the end
    names = [p.name for p in checkpoints.checkpoints(tmp_path / "checkpoints")]
    assert names == ["checkpoint-2", "checkpoint-3"]
