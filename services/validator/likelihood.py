"""Scoring held-out rows with a forward pass, no generation: each answer's
summed log-probability (preference rows) and a classifier's predicted labels.

Rows are tokenised exactly as the trainer tokenises them
(`prompts.tokenize_for_training`, `tokenizer(text)` for classification), so a
model is judged on the sequences it learned from.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common import datasets

NAN = float("nan")


def answer_logprobs(
    model,
    tokenizer,
    examples: Sequence[datasets.Example],
    max_length: int,
    batch_size: int = 8,
) -> list[float]:
    """Sum of log p(answer token | everything before it) per example.

    NaN for an example whose answer truncation to `max_length` removed
    entirely, so the caller can leave it out rather than read it as "certain".
    """
    import torch
    from transformers import DataCollatorForSeq2Seq

    features = [
        datasets.tokenize_for_training(tokenizer, ex, max_length) for ex in examples
    ]
    scored = [i for i, f in enumerate(features) if any(x != -100 for x in f["labels"])]
    out = [NAN] * len(features)
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    device = next(model.parameters()).device
    for start in range(0, len(scored), batch_size):
        rows = scored[start : start + batch_size]
        batch = collate([features[i] for i in rows]).to(device)
        with torch.inference_mode():
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.float()
        labels = batch["labels"][:, 1:]
        mask = labels != -100
        picked = torch.gather(
            logits[:, :-1].log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)
        ).squeeze(-1)
        for i, total in zip(rows, (picked * mask).sum(-1).tolist(), strict=True):
            out[i] = float(total)
    return out


def predicted_labels(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[str],
    max_length: int,
    batch_size: int = 8,
) -> list[str]:
    """The label (by class id: `labels[argmax(logits)]`) a sequence
    classifier gives each text."""
    import torch

    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        ).to(device)
        with torch.inference_mode():
            logits = model(**enc).logits
        # A head wider than the label list names its extra classes by id.
        out += [
            labels[i] if i < len(labels) else str(i) for i in logits.argmax(-1).tolist()
        ]
    return out
