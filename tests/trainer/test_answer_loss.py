"""The labelled-positions loss equals the plain causal-LM loss, gradients too."""

from __future__ import annotations

import pytest
import torch

from services.trainer import answer_loss
from services.trainer.answer_loss import labelled_loss, supports_labelled_logits

VOCAB = 400


def _model(tied: bool, targets: list[str], family: str = "llama"):
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    if family == "gemma2":  # soft-caps its logits after the head
        config = tf.Gemma2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            final_logit_softcapping=5.0,
        )
    else:
        config = tf.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tied,
        )
    base = tf.AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(base, lora)
    # LoRA B starts at zero; random B makes every adapter weight matter.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model


def _batch(rows: int = 3, width: int = 40):
    """Padded rows whose first part is prompt (-100) and the rest answer."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (rows, width), generator=gen)
    lengths = [width, width - 7, width - 15][:rows]
    mask = torch.zeros(rows, width, dtype=torch.long)
    labels = torch.full((rows, width), -100)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        labels[i, n // 2 : n] = ids[i, n // 2 : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loss_and_grads(model, loss_fn):
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    grads = {
        name: p.grad.clone()
        for name, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    return loss.detach(), grads


def _plain(model, batch, num_items=None):
    def fn():
        extra = {} if num_items is None else {"num_items_in_batch": num_items}
        return model(**batch, **extra).loss

    return fn


def _assert_same(model, batch, num_items=None):
    plain_loss, plain_grads = _loss_and_grads(model, _plain(model, batch, num_items))
    sparse_loss, sparse_grads = _loss_and_grads(
        model, lambda: labelled_loss(model, batch, num_items)
    )
    assert plain_grads, "the adapter received no gradient"
    assert sparse_grads.keys() == plain_grads.keys()
    assert torch.allclose(sparse_loss, plain_loss, atol=1e-5, rtol=0)
    for name, grad in plain_grads.items():
        assert torch.allclose(sparse_grads[name], grad, atol=1e-5, rtol=1e-5), name


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"]


@pytest.mark.parametrize("tied", [False, True])
def test_frozen_head_loss_and_gradients_equal_the_plain_loss(tied, monkeypatch):
    monkeypatch.setattr(answer_loss, "CHUNK_ROWS", 16)  # several chunks
    model = _model(tied, ALL_LINEAR + ["down_proj"])
    base = model.get_base_model()
    assert (base.lm_head.weight is base.model.embed_tokens.weight) is tied
    assert supports_labelled_logits(model)
    _assert_same(model, _batch())


def test_lora_on_the_head_still_applies_its_adapter(monkeypatch):
    monkeypatch.setattr(answer_loss, "CHUNK_ROWS", 16)
    model = _model(False, ["q_proj", "v_proj", "lm_head"])
    assert supports_labelled_logits(model)
    _, grads = _loss_and_grads(model, lambda: labelled_loss(model, _batch()))
    assert any("lm_head.lora_A" in name for name in grads)
    _assert_same(model, _batch())


def test_divides_by_the_accumulated_item_count_when_given():
    model = _model(False, ["q_proj", "v_proj"])
    batch = _batch()
    items = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()) * 3)
    _assert_same(model, batch, num_items=items)
    own = labelled_loss(model, batch)
    assert torch.allclose(labelled_loss(model, batch, items) * 3, own, atol=1e-6)


def test_a_batch_with_nothing_to_learn_gives_zero_and_a_gradient_path():
    model = _model(False, ["q_proj", "v_proj"])
    batch = _batch()
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = labelled_loss(model, batch)
    loss.backward()
    assert float(loss) == 0.0


def test_a_model_that_soft_caps_its_logits_keeps_the_plain_loss():
    model = _model(False, ["q_proj", "v_proj"], family="gemma2")
    assert not supports_labelled_logits(model)
