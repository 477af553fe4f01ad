"""Chefer et al. (2021), "Generic Attention-model Explainability": class-specific relevance for ViTs."""

from __future__ import annotations

from typing import ClassVar

import torch

from vitviz.methods.attention_gradients import AttentionGradientMethod

__all__ = ["Chefer", "chefer_relevance"]


def chefer_relevance(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """R = I; for each layer from the first, Ā = mean over heads of (∇A ⊙ A)⁺ and R ← R + Ā·R.

    Args:
        attentions: one (B, heads, N, N) attention tensor per layer, first layer first.
        gradients: the gradient of the class score with respect to each, in the same order.

    Returns:
        (B, N, N) relevance of each input token (columns) for each output token (rows).
    """
    assert len(attentions) == len(gradients) > 0, "need one gradient per attention layer"
    batch, _, tokens, _ = attentions[0].shape
    identity = torch.eye(tokens, dtype=torch.float64, device=attentions[0].device)
    relevance = identity.expand(batch, tokens, tokens).clone()  # (B, N, N)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient.double() * attention.double()).clamp(min=0).mean(dim=1)  # (B, N, N)
        relevance = relevance + weighted @ relevance
    return relevance.float()


class Chefer(AttentionGradientMethod):
    """Gradient-weighted attention relevance for any chosen class, batched.

    Options:
        start_layer: first layer that takes part (default 0).
    """

    name: ClassVar[str] = "chefer"
    title: ClassVar[str] = "Chefer et al. relevance"

    def pooled_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """R − I for a head that averages the patch tokens: what the attention layers added.

        Read from the class token, R starts at zero on every patch; averaged over the patch rows, the
        starting identity would add the same 1/patches to every cell and, on a map scaled to its
        maximum, paint every patch as nearly the most relevant.
        """
        identity = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
        return relevance - identity

    def relevance(self, attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
        return chefer_relevance(attentions, gradients)
