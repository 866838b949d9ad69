"""Causal-LM loss from logits at labelled positions only, a chunk at a time.

The plain loss runs the vocabulary-wide `lm_head` and a softmax at every
position and then ignores the prompt positions (label -100), and it holds the
whole [tokens x vocab] logits tensor, its log-softmax and its gradient at once
(for SmolLM2's 49,152-way head that is most of a CPU step's peak memory). Here
the decoder's hidden states are gathered at the positions whose shifted label
is learned, and the head plus cross-entropy run over those in chunks of
`CHUNK_ROWS` positions, so no more than one chunk's logits ever exist.

The result is the plain loss (sum of the per-token cross-entropies over the
labelled tokens, divided by their count or by `num_items_in_batch`) up to
floating-point summation order, with the same gradients:

- a frozen plain `nn.Linear` head (the usual case, tied embeddings included)
  uses `_FrozenHeadCE`, which computes each chunk's gradient with respect to
  the hidden states during the forward pass (Liger's fused linear
  cross-entropy idea), so the logits are never kept for backward;
- any other head (a LoRA target, a `modules_to_save` copy) is called as a
  module, so its adapter applies, under activation checkpointing per chunk:
  its logits are recomputed in backward instead of kept.

`supports_labelled_logits` checks, once per model, that the model's logits are
exactly `lm_head(decoder(...))` (no soft-capping or scaling after the head);
models that do more keep the plain loss.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
# Positions per chunk: 256 x 49,152 fp32 logits is 48 MiB.
CHUNK_ROWS = 256


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body and the output head of a (PEFT-wrapped) causal LM."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


def supports_labelled_logits(model: Any) -> bool:
    """True when `model`'s logits are its head applied to its decoder's output.

    A probe on a few random tokens in eval mode (no dropout, no RNG use), so
    families that scale or soft-cap logits after the head fall back to the
    plain loss instead of training on a different objective.
    """
    import torch

    try:
        decoder, head = _decoder_and_head(model)
    except (AttributeError, NotImplementedError, ValueError):
        return False
    if decoder is None or head is None or decoder is model:
        return False
    param = next(model.parameters())
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (1, 6), generator=torch.Generator().manual_seed(0))
    ids = ids.to(param.device if param.device.type != "meta" else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits
            hidden = decoder(input_ids=ids, use_cache=False)[0]
            split = head(hidden)
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return False
    finally:
        model.train(was_training)
    return full.shape == split.shape and bool(torch.equal(full, split))


def labelled_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
) -> Any:
    """The causal-LM loss of `inputs` (which carry `labels`), computed sparsely.

    Divides by `num_items_in_batch` when given (transformers' Trainer counts
    the labelled tokens of the whole accumulated batch), else by this batch's
    labelled-token count, exactly as the model's own loss does.
    """
    import torch

    decoder, head = _decoder_and_head(model)
    labels = inputs["labels"]
    body = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = decoder(**body, use_cache=False)[0]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = hidden[:, :-1][keep]
    wanted = targets[keep].to(rows.device)
    if num_items_in_batch is None:
        denominator = torch.tensor(max(int(keep.sum()), 1), dtype=torch.float32)
    else:
        denominator = torch.as_tensor(num_items_in_batch, dtype=torch.float32)
    denominator = denominator.to(rows.device)
    if rows.shape[0] == 0:
        # Nothing learned in this batch: a zero that still reaches the graph.
        return hidden.sum() * 0.0
    if _is_frozen_linear(head):
        return _FrozenHeadCE.apply(rows, head.weight, head.bias, wanted, denominator)
    from torch.utils.checkpoint import checkpoint

    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], CHUNK_ROWS):
        chunk = slice(start, start + CHUNK_ROWS)
        total = total + checkpoint(
            _chunk_ce_sum, head, rows[chunk], wanted[chunk], use_reentrant=False
        )
    return total / denominator


def _is_frozen_linear(head: Any) -> bool:
    import torch

    return (
        type(head) is torch.nn.Linear
        and not head.weight.requires_grad
        and (head.bias is None or not head.bias.requires_grad)
    )


def _chunk_ce_sum(head: Any, rows: Any, wanted: Any) -> Any:
    import torch.nn.functional as F

    logits = head(rows).float()
    return F.cross_entropy(logits, wanted, reduction="sum")


def _fused_function() -> Any:
    import torch
    import torch.nn.functional as F

    class FrozenHeadCE(torch.autograd.Function):
        """sum CE(rows @ W.T + b, wanted) / denominator, chunked, W frozen.

        The gradient with respect to `rows` is (softmax - one_hot) @ W /
        denominator; it is worked out chunk by chunk in forward and scaled by
        the incoming gradient in backward.
        """

        @staticmethod
        def forward(ctx, rows, weight, bias, wanted, denominator):
            total = rows.new_zeros((), dtype=torch.float32)
            # Under no_grad (evaluation) only the loss is wanted.
            wants_grad = ctx.needs_input_grad[0]
            grad_rows = torch.empty_like(rows) if wants_grad else rows.new_empty(0)
            for start in range(0, rows.shape[0], CHUNK_ROWS):
                chunk = slice(start, start + CHUNK_ROWS)
                logits = F.linear(rows[chunk], weight, bias).float()
                target = wanted[chunk, None]
                # as cross_entropy computes it (nll of log_softmax); one
                # fused pass over the chunk, then exp in place
                log_probs = torch.log_softmax(logits, -1)
                del logits
                total -= log_probs.gather(1, target).sum()
                if not wants_grad:
                    continue
                # softmax - one_hot, in place of the log-probabilities
                probs = log_probs.exp_()
                probs.scatter_add_(1, target, probs.new_full(target.shape, -1.0))
                grad_rows[chunk] = (probs.to(weight.dtype) @ weight).to(rows.dtype)
                del log_probs, probs
            ctx.save_for_backward(grad_rows, denominator)
            return total / denominator

        @staticmethod
        def backward(ctx, grad_output):
            grad_rows, denominator = ctx.saved_tensors
            scale = (grad_output / denominator).to(grad_rows.dtype)
            return grad_rows * scale, None, None, None, None

    return FrozenHeadCE


class _Lazy:
    """Builds the autograd Function on first use (torch imports lazily here)."""

    _fn: Any = None

    def apply(self, *args: Any) -> Any:
        if self._fn is None:
            type(self)._fn = _fused_function()
        return self._fn.apply(*args)


_FrozenHeadCE = _Lazy()
