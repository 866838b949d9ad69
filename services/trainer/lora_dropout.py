"""LoRA dropout that keeps a one-byte mask for backward instead of two copies.

PEFT computes `lora_B(lora_A(dropout(x)))`: autograd then keeps, per adapted
module, the dropout's float noise tensor and its output (lora_A's input), each
the size of `x`. With seven adapted modules per layer that is most of a CPU
step's activation memory (about 1 GiB of 1.75 for SmolLM2-135M, 8 x 110
tokens). Here dropout and lora_A run as one autograd function that keeps `x`
itself (q/k/v and gate/up share one input, so it is kept once) and a bool
keep-mask, and rebuilds the noise and the dropped input in backward.

The numbers are the same to the bit: the noise is drawn exactly as torch's CPU
dropout draws it (`empty_like(x).bernoulli_(1 - p)`, then `div_(1 - p)`, so
the RNG stream and the masks are unchanged; on the CPU `native_dropout` draws
the same noise in blocks, far faster), and backward re-runs the same
operations under autograd. Only vanilla LoRA on `nn.Linear` layers is
changed; DoRA and other variants keep PEFT's own path.
"""

from __future__ import annotations

from typing import Any

from services.trainer import native_dropout


def use_saved_mask_dropout(model: Any, *, native_noise: bool = True) -> int:
    """Swaps in the fused dropout + lora_A wherever it applies; returns how often.

    Each adapter's `lora_dropout` becomes an identity and its `lora_A` (an
    `nn.Linear`) takes over the dropout: same parameters, same state-dict
    keys, so the saved adapter is what PEFT would write. With `native_noise`
    the noise of CPU float32 inputs comes from `native_dropout` (the same
    draws, in blocks) when that is available.
    """
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    swapped = 0
    for module in model.modules():
        if type(module) is not LoraLinear:
            continue
        for name, dropout in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name]
            p = float(getattr(dropout, "p", 0.0))
            if (
                type(dropout) is not torch.nn.Dropout
                or not 0.0 < p < 1.0
                or name in getattr(module, "lora_variant", {})
                or type(lora_a) is not torch.nn.Linear
            ):
                continue
            lora_a.__class__ = _dropout_linear_class()
            lora_a.dropout_p = p
            lora_a.native_noise = native_noise
            module.lora_dropout[name] = torch.nn.Identity()
            swapped += 1
    return swapped


_CLASS: Any = None


def _dropout_linear_class() -> Any:
    global _CLASS
    if _CLASS is None:
        _CLASS = _build()
    return _CLASS


def _build() -> Any:
    import torch
    import torch.nn.functional as F

    class DropoutThenLinearFn(torch.autograd.Function):
        """linear(dropout(x, p), weight, bias), keeping x and a bool mask."""

        @staticmethod
        def forward(ctx, x, weight, bias, p, native):
            ctx.p, ctx.native = p, native
            if native:
                # The same noise from the same generator, drawn in blocks.
                dropped, keep = native_dropout.dropout(x, p)
                ctx.save_for_backward(x, keep, weight, bias)
                return F.linear(dropped, weight, bias)
            noise = torch.empty_like(x).bernoulli_(1 - p)
            noise.div_(1 - p)
            out = F.linear(x * noise, weight, bias)
            # The kept value, computed as div_ computed it: 1 / (1 - p) in x's dtype.
            scale = torch.ones((), dtype=x.dtype).div_(1 - p)
            ctx.save_for_backward(x, noise != 0, weight, bias, scale)
            return out

        @staticmethod
        def backward(ctx, grad_out):
            if ctx.native:
                x, keep, weight, bias = ctx.saved_tensors

                def times_noise(t):
                    return native_dropout.scale_by_mask(t, keep, ctx.p)
            else:
                x, keep, weight, bias, scale = ctx.saved_tensors
                # the forward's noise, bit for bit
                noise = torch.where(keep, scale, 0.0)

                def times_noise(t):
                    return t * noise

            dropped = times_noise(x)
            if bias is None:
                grad_dropped, grad_w = _linear_grads(
                    grad_out, dropped, weight, ctx.needs_input_grad
                )
                grad_b = None
            else:
                grad_dropped, grad_w, grad_b = _autograd_linear_grads(
                    grad_out, dropped, weight, bias, ctx.needs_input_grad
                )
            # dropout's own backward: grad * noise, as autograd computes it
            grad_x = times_noise(grad_dropped) if grad_dropped is not None else None
            return grad_x, grad_w, grad_b, None, None

    def _linear_grads(grad_out, dropped, weight, needs):
        """F.linear(dropped, weight)'s input and weight gradients, computed by
        the calls autograd makes for it (linear is matmul(x, weight.t()), a
        flattened mm; MmBackward gives grad @ weight and, weight.t() being
        column-major, (grad.t() @ x)), so the bits are autograd's, without
        re-running the forward matmul."""
        rank = weight.shape[0]
        grad_2d = grad_out.reshape(-1, rank)
        grad_dropped = grad_w = None
        if needs[0]:
            grad_dropped = grad_2d.mm(weight).view(dropped.shape)
        if needs[1]:
            grad_w = grad_2d.t().mm(dropped.reshape(-1, dropped.shape[-1]))
        return grad_dropped, grad_w

    def _autograd_linear_grads(grad_out, dropped, weight, bias, needs):
        """With a bias, F.linear takes other paths (addmm): let autograd
        differentiate it."""
        with torch.enable_grad():
            d = dropped.detach().requires_grad_(needs[0])
            w = weight.detach().requires_grad_(needs[1])
            b = bias.detach().requires_grad_(needs[2])
            wanted = [t for t in (d, w, b) if t.requires_grad]
            grads = iter(torch.autograd.grad(F.linear(d, w, b), wanted, grad_out))
        return tuple(next(grads) if t.requires_grad else None for t in (d, w, b))

    class DropoutThenLinear(torch.nn.Linear):
        """An adapter's lora_A that applies the adapter's dropout itself."""

        dropout_p: float = 0.0
        native_noise: bool = False

        def forward(self, x):
            if not self.training or not torch.is_grad_enabled():
                if self.training:  # no_grad in train mode: plain dropout
                    x = F.dropout(x, self.dropout_p, True)
                return F.linear(x, self.weight, self.bias)
            native = self.native_noise and native_dropout.usable_for(x)
            return DropoutThenLinearFn.apply(
                x, self.weight, self.bias, self.dropout_p, native
            )

    return DropoutThenLinear
