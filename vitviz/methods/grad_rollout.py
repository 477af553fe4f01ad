"""Gradient-weighted attention rollout: rollout over each layer's attention weighted by its gradient."""

from __future__ import annotations

from typing import ClassVar

import torch

from vitviz.maths.rollout import attention_rollout
from vitviz.methods.attention_gradients import AttentionGradientMethod

__all__ = ["GradRollout", "gradient_weighted_rollout"]


def gradient_weighted_rollout(
    attentions: list[torch.Tensor],
    gradients: list[torch.Tensor],
    discard_ratio: float = 0.0,
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """Rollout of Ā = max(0, mean over heads of ∇A ⊙ A): 0.5·Ā + 0.5·I, rows normalised, multiplied up.

    Args:
        attentions: one (B, heads, N, N) attention tensor per layer, first layer first.
        gradients: the gradient of the class score with respect to each, in the same order.
        discard_ratio: fraction of each row's lowest patch weights dropped, in [0, 1).
        num_prefix_tokens: leading tokens never discarded.

    Returns:
        (B, N, N) rollout; every row sums to 1.
    """
    assert len(attentions) == len(gradients) > 0, "need one gradient per attention layer"
    fused = [
        (gradient * attention).mean(dim=1, keepdim=True).clamp(min=0)  # (B, 1, N, N)
        for attention, gradient in zip(attentions, gradients, strict=True)
    ]
    return attention_rollout(
        fused, head_fusion="mean", discard_ratio=discard_ratio, num_prefix_tokens=num_prefix_tokens
    )


class GradRollout(AttentionGradientMethod):
    """Gradient-weighted attention rollout for any chosen class, batched.

    Options:
        discard_ratio: fraction of each row's lowest patch weights dropped, in [0, 1) (default 0).
        start_layer: first layer that takes part (default 0).
    """

    name: ClassVar[str] = "grad-rollout"
    title: ClassVar[str] = "Gradient-weighted rollout"

    def relevance(self, attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
        discard = float(self.options.get("discard_ratio", 0.0))
        return gradient_weighted_rollout(attentions, gradients, discard, self.facts.num_prefix_tokens)
