"""The fused LoRA dropout: same masks and gradients, less kept for backward."""

from __future__ import annotations

import copy

import pytest
import torch

from services.trainer.lora_dropout import use_saved_mask_dropout

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _model():
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    base = tf.AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=TARGETS)
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model.train()


def _step(model, ids):
    """Loss, adapter gradients and bytes autograd kept, from one seeded step."""
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    torch.manual_seed(5)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return loss, grads, sum(v for k, v in kept.items() if k not in weights)


@pytest.mark.parametrize("native_noise", [True, False])
def test_same_loss_and_gradients_to_the_bit_with_less_kept_for_backward(
    native_noise,
):
    plain = _model()
    fused = copy.deepcopy(plain)
    swapped = use_saved_mask_dropout(fused, native_noise=native_noise)
    assert swapped == len(TARGETS) * 2
    ids = torch.randint(0, 300, (3, 24), generator=torch.Generator().manual_seed(1))
    loss_a, grads_a, kept_a = _step(plain, ids)
    loss_b, grads_b, kept_b = _step(fused, ids)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    assert kept_b < 0.8 * kept_a
    assert fused.state_dict().keys() == plain.state_dict().keys()


def test_eval_mode_applies_no_dropout():
    model = _model()
    use_saved_mask_dropout(model)
    model.eval()
    ids = torch.randint(0, 300, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first = model(input_ids=ids).logits
        second = model(input_ids=ids).logits
    assert torch.equal(first, second)
