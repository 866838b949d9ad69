"""Recognising and loading sequence classifiers (services.common.modeling)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from services.common.errors import FailedPrecondition
from services.common.modeling import (
    adapter_class_labels,
    classification_head,
    classification_labels,
    classifier_model_labels,
    classifier_pad_token_id,
    is_classification_adapter,
    load_classifier,
    load_sequence_classifier,
)
from tests.common.classifier_adapter import LABELS, TEXTS, train_classifier
from tests.merger.helpers import make_adapter


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """(adapter dir, its trainer metadata, a causal-LM adapter dir)."""
    root = tmp_path_factory.mktemp("classifier-modeling")
    metadata = train_classifier(tiny_model_dir, root / "classifier")
    make_adapter(tiny_model_dir, root / "causal", seed=5)
    return root / "classifier", metadata, root / "causal"


def _artifact(path: Path, metadata: dict | None = None, id: str = "a1"):
    return SimpleNamespace(id=id, local_path=str(path), metadata=metadata or {})


def test_the_trainers_classifier_is_recognised_with_its_labels(trained, tiny_model_dir):
    adapter, metadata, causal = trained
    assert metadata["task_type"] == "classification"
    assert metadata["class_labels"] == LABELS
    assert is_classification_adapter(adapter)
    assert not is_classification_adapter(causal)
    assert classification_head(adapter) == {"score.weight": (2, 64)}
    assert adapter_class_labels(adapter, metadata["class_labels"]) == LABELS
    assert adapter_class_labels(adapter) == ["LABEL_0", "LABEL_1"]
    with pytest.raises(FailedPrecondition, match="head scores 2 classes"):
        adapter_class_labels(adapter, ["a", "b", "c"])
    base = _artifact(tiny_model_dir, id="base")
    assert classification_labels(base, _artifact(adapter, metadata)) == LABELS
    assert classification_labels(base, _artifact(causal)) is None
    assert classification_labels(base) is None
    assert classifier_model_labels(tiny_model_dir) is None
    assert classifier_pad_token_id(tiny_model_dir) == 0


def test_load_classifier_applies_the_trained_head(trained, tiny_model_dir):
    adapter, metadata, _ = trained
    model, labels = load_classifier(
        tiny_model_dir, "cpu", adapter, labels=metadata["class_labels"]
    )
    assert labels == LABELS
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    head = model.base_model.model.score.modules_to_save["default"].weight
    assert torch.equal(head, saved["base_model.model.score.weight"])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        for text, label in TEXTS:
            logits = model(**tokenizer([text], return_tensors="pt")).logits[0]
            if label is not None:  # a random head would get these wrong half the time
                assert labels[int(logits.argmax())] == label, text
    # The validator's call: (model dir, device, adapter_dir=...) -> (model, labels).
    again, names = load_sequence_classifier(tiny_model_dir, "cpu", adapter_dir=adapter)
    assert names == ["LABEL_0", "LABEL_1"]  # the files carry no names
    # The trainer's call still builds a base with a fresh head.
    fresh = load_sequence_classifier(tiny_model_dir, ["x", "y", "z"], 0)
    assert fresh.config.id2label == {0: "x", 1: "y", 2: "z"}


def test_what_is_not_a_classifier_is_refused_naming_the_fix(
    trained, tiny_model_dir, tmp_path
):
    adapter, _, causal = trained
    with pytest.raises(FailedPrecondition, match="causal language model, not a seq"):
        load_classifier(tiny_model_dir, "cpu")
    with pytest.raises(FailedPrecondition, match="not a classification adapter"):
        load_classifier(tiny_model_dir, "cpu", causal)
    # A classifier directory whose head tensor is missing: never a random head.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config.update(
        architectures=["LlamaForSequenceClassification"],
        id2label={"0": "lamps", "1": "socks"},
        label2id={"lamps": 0, "socks": 1},
    )
    (broken / "config.json").write_text(json.dumps(config))
    assert classifier_model_labels(broken) == LABELS
    tensors = load_file(str(broken / "model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if k != "lm_head.weight"},
        str(broken / "model.safetensors"),
        metadata={"format": "pt"},
    )
    with pytest.raises(FailedPrecondition, match="lacks 1 tensors .*score.weight"):
        load_classifier(broken, "cpu")
    with pytest.raises(FailedPrecondition, match="already a sequence classifier"):
        load_classifier(broken, "cpu", adapter)
    base = _artifact(broken, id="cls")
    with pytest.raises(FailedPrecondition, match="takes no adapter"):
        classification_labels(base, _artifact(causal))
    # An adapter without its head (modules_to_save lost) is no classifier.
    headless = tmp_path / "headless"
    shutil.copytree(adapter, headless)
    weights = load_file(str(headless / "adapter_model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if "score" not in k},
        str(headless / "adapter_model.safetensors"),
    )
    with pytest.raises(FailedPrecondition, match="carries no classification head"):
        adapter_class_labels(headless)
