"""The shared step of gradient-weighted attention methods: each layer's attention with its own gradient."""

from __future__ import annotations

from typing import ClassVar

import torch

from vitviz.capture import AttentionCapture
from vitviz.maths.rollout import rollout_map
from vitviz.methods.base import ExplanationMethod
from vitviz.models import LoadedModel

__all__ = ["AttentionGradientMethod", "attention_with_gradients"]


def attention_with_gradients(
    loaded: LoadedModel, pixels: torch.Tensor, class_indices: torch.Tensor | None
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Every layer's attention A and the gradient ∂score/∂A of each image's class logit.

    `torch.autograd.grad` returns one gradient per requested tensor in the order asked, so each
    layer's attention is paired with that layer's own gradient (backward hooks would fire from
    the last layer down, and are not used). No `.grad` is left on anything.

    Args:
        loaded: a ViT or hybrid with a classifier head.
        pixels: (B, 3, H, W) on the model's device.
        class_indices: (B,) classes, or None for each image's most probable class.

    Returns:
        Attentions and gradients, one (B, heads, N, N) tensor each per layer, first layer first,
        and the (B,) classes explained.
    """
    model = loaded.model
    with torch.inference_mode(False), torch.enable_grad():
        # A leaf that requires grad starts the graph; the frozen parameters stay out of it.
        start = pixels.detach().requires_grad_(True)
        with AttentionCapture(model, detach=False) as capture:
            logits = model(start)
        classes = ExplanationMethod.chosen_classes(logits, class_indices)
        score = ExplanationMethod.class_score(logits, classes)
        gradients = torch.autograd.grad(score, capture.attentions, allow_unused=True)
    attentions = [attention.detach() for attention in capture.attentions]
    paired = [
        torch.zeros_like(attention) if gradient is None else gradient
        for attention, gradient in zip(attentions, gradients, strict=True)
    ]
    return attentions, paired, classes


class AttentionGradientMethod(ExplanationMethod):
    """Base of the methods that combine each layer's attention with its gradient into (B, N, N) relevance.

    Subclasses implement `relevance`; the class row (or the mean patch row for average-pooled
    models) is read from `num_prefix_tokens` on and reshaped by the model's own grid size.
    """

    families: ClassVar = ("vit", "hybrid")

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        facts = self.facts
        assert facts.grid_size is not None, f"{facts.name} has no token grid"
        attentions, gradients, classes = attention_with_gradients(self.loaded, pixels, class_indices)
        start = int(self.options.get("start_layer", 0))
        if not 0 <= start < len(attentions):
            raise ValueError(f"start layer {start} outside 0..{len(attentions) - 1}")
        relevance = self.relevance(attentions[start:], gradients[start:])  # (B, N, N)
        pooling = "token" if facts.num_prefix_tokens > 0 and facts.global_pool == "token" else "avg"
        maps = rollout_map(relevance, facts.num_prefix_tokens, facts.grid_size, pooling)
        return maps, classes, f"layers {start}–{len(attentions) - 1}, {pooling} row"

    def relevance(self, attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
        """Token-to-token relevance from per-layer attention and gradients, each (B, heads, N, N).

        Returns:
            (B, N, N).
        """
        raise NotImplementedError
