"""Choosing each row's next token by that row's own settings.

Greedy rows take the argmax. Sampling rows scale by their temperature, keep
their top_p nucleus and draw with their own generator, seeded from the
request's seed: the same seed reproduces the same text whatever else shares
the batch (a global RNG would not).
"""

from __future__ import annotations

import random
from typing import Any


class RowSampler:
    """One request's next-token rule."""

    def __init__(self, temperature: float, top_p: float, seed: int) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self._generator = None
        if temperature > 0:
            import torch

            self._generator = torch.Generator()
            self._generator.manual_seed(seed or random.SystemRandom().getrandbits(63))

    def choose(self, logits: Any) -> int:
        """The next token from a [vocab] logits row."""
        import torch

        if self._generator is None:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always >= 1).
            outside = ordered.cumsum(-1) - ordered >= self.top_p
            ordered[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        return int(torch.multinomial(probs, 1, generator=self._generator))
