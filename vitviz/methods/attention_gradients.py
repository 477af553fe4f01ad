"""The shared step of gradient-weighted attention methods: each layer's attention with its own gradient."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vitviz.capture import AttentionCapture, class_attention_layers
from vitviz.maths.rollout import embed_class_attention, rollout_map
from vitviz.methods.base import AttentionKindMethod, ExplanationMethod
from vitviz.models import LoadedModel

__all__ = ["AttentionGradientMethod", "attention_with_gradients"]


def attention_with_gradients(
    loaded: LoadedModel,
    pixels: torch.Tensor,
    class_indices: torch.Tensor | None,
    modules: list[nn.Module] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Every layer's attention A and the gradient ∂score/∂A of each image's class logit.

    `torch.autograd.grad` returns one gradient per requested tensor in the order asked, so each
    layer's attention is paired with that layer's own gradient (backward hooks would fire from
    the last layer down, and are not used). No `.grad` is left on anything.

    Args:
        loaded: a ViT or hybrid with a classifier head.
        pixels: (B, 3, H, W) on the model's device.
        class_indices: (B,) classes, or None for each image's most probable class.
        modules: the layers to record, when not `attention_modules` (CaiT's, see
            `vitviz.capture.class_attention_layers`).

    Returns:
        Attentions and gradients, one (B, heads, N, N) tensor each per layer, first layer first,
        and the (B,) classes explained.
    """
    model = loaded.model
    with torch.inference_mode(False), torch.enable_grad():
        # A leaf that requires grad starts the graph; the frozen parameters stay out of it.
        start = pixels.detach().requires_grad_(True)
        with AttentionCapture(model, detach=False, modules=modules) as capture:
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


class AttentionGradientMethod(AttentionKindMethod):
    """Base of the methods that combine each layer's attention with its gradient into (B, N, N) relevance.

    CaiT's self-attention and class-attention layers are placed over the output's tokens first
    (`vitviz.maths.rollout.embed_class_attention`).

    Subclasses implement `relevance`; the class row (or the mean patch row for average-pooled
    models) is read from `num_prefix_tokens` on and reshaped by the model's own grid size.
    """

    attention_kinds: ClassVar[tuple[str, ...]] = ("global", "class-attention")

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        facts = self.facts
        assert facts.grid_size is not None, f"{facts.name} has no token grid"
        if facts.attention == "class-attention":  # CaiT: self-attention layers, then class-attention rows
            self_layers, class_layers = class_attention_layers(self.model)
            attentions, gradients, classes = attention_with_gradients(
                self.loaded, pixels, class_indices, self_layers + class_layers
            )
            count, prefix = len(self_layers), facts.num_prefix_tokens
            attentions = embed_class_attention(attentions[:count], attentions[count:], prefix)
            gradients = embed_class_attention(gradients[:count], gradients[count:], prefix)
        else:
            attentions, gradients, classes = attention_with_gradients(self.loaded, pixels, class_indices)
        start = int(self.options.get("start_layer", 0))
        if not 0 <= start < len(attentions):
            raise ValueError(f"start layer {start} outside 0..{len(attentions) - 1}")
        relevance = self.relevance(attentions[start:], gradients[start:])  # (B, N, N)
        pooling = "token" if facts.num_prefix_tokens > 0 and facts.global_pool == "token" else "avg"
        if pooling == "avg":
            relevance = self.pooled_relevance(relevance)
        maps = rollout_map(relevance, facts.num_prefix_tokens, facts.grid_size, pooling)
        return maps, classes, f"layers {start}–{len(attentions) - 1}, {pooling} row"

    def pooled_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """The relevance a head that averages the patch tokens reads (GAP, BEiT); unchanged by default.

        Args:
            relevance: (B, N, N) from `relevance`.
        """
        return relevance

    def relevance(self, attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
        """Token-to-token relevance from per-layer attention and gradients, each (B, heads, N, N).

        Returns:
            (B, N, N).
        """
        raise NotImplementedError
