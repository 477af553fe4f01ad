"""LeGrad (Bousselham et al., 2024): how sensitive each layer's class score is to that layer's attention.

For every block l the tokens it outputs are averaged and read by the model's own final norm and
head, a class score sᶩ per layer. LeGrad takes ∂sᶩ/∂Aᶩ, the gradient of that score with respect to
the block's own attention probabilities, keeps its positive part, averages it over heads and
query tokens, drops the prefix keys, and averages the patch maps over layers. (The attention
values themselves are not multiplied in; that is what sets it apart from Chefer et al.) The score
reads the mean of all tokens whatever the model's own pooling (class token, average, or an attention
pool, which it skips), as the paper and TorchCAM do.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vitviz.capture import AttentionCapture, ModelHooks, model_lock
from vitviz.methods.base import AttentionKindMethod, ExplanationMethod, MethodUnavailableError

__all__ = ["BlockOutputs", "LeGrad", "layer_logits"]


class BlockOutputs(ModelHooks):
    """Keeps each block's output and cuts the graph between blocks, during this thread's forwards.

    Each block's input is a detached copy that requires grad, so a gradient taken from one block's
    output reaches only that block's own computation: the sum of every layer's score then gives each
    layer's ∂sᶩ/∂Aᶩ in one backward pass. Forward values are unchanged.
    """

    def __init__(self, model: nn.Module, blocks: list[nn.Module]) -> None:
        super().__init__(model)
        self.blocks = blocks
        self.outputs: list[torch.Tensor] = []  # one (B, N, dim) per block, in forward order

    def _attach(self) -> None:
        self.outputs = []
        for block in self.blocks:
            self._pre_hook(block, _cut)
            self._hook(block, self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        self.outputs.append(output)


def _cut(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return (inputs[0].detach().requires_grad_(True), *inputs[1:])


def layer_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The model's head read on the mean of one layer's tokens: final norm, head norm, head(s).

    Args:
        model: a timm ViT or DeiT (whose two heads are averaged, as in its eval forward).
        tokens: (B, N, dim) one block's output, prefix tokens included.

    Returns:
        (B, classes).
    """
    features = tokens.mean(dim=1)
    for part in ("norm", "fc_norm", "head_drop"):
        layer = getattr(model, part, None)
        if isinstance(layer, nn.Module):
            features = layer(features)
    logits = model.head(features)
    head_dist = getattr(model, "head_dist", None)
    if isinstance(head_dist, nn.Module):
        logits = (logits + head_dist(features)) / 2
    return logits


class LeGrad(AttentionKindMethod):
    """LeGrad for any chosen class, batched: one forward and one backward for every layer at once.

    Options:
        start_layer: first layer that takes part (default 0: every layer, as TorchCAM's reference
            does when given every block).
    """

    name: ClassVar[str] = "legrad"
    title: ClassVar[str] = "LeGrad"

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        facts, model = self.facts, self.model
        assert facts.grid_size is not None, f"{facts.name} has no token grid"
        blocks = list(getattr(model, "blocks", []))
        attention_layers = [getattr(block, "attn", None) for block in blocks]
        if not blocks or not isinstance(getattr(model, "head", None), nn.Module):
            raise MethodUnavailableError(
                f"{self.title} needs a sequence of blocks and a head; {facts.name} has not."
            )
        start = int(self.options.get("start_layer", 0))
        if not 0 <= start < len(blocks):
            raise ValueError(f"start layer {start} outside 0..{len(blocks) - 1}")
        # The lock spans the backward too, which runs the head again on every layer's tokens.
        with torch.inference_mode(False), torch.enable_grad(), model_lock(model):
            with (
                BlockOutputs(model, blocks[start:]) as outputs,
                AttentionCapture(model, detach=False, modules=attention_layers[start:]) as capture,
            ):
                logits = model(pixels.detach())
            classes = ExplanationMethod.chosen_classes(logits, class_indices)
            scores = sum(
                ExplanationMethod.class_score(layer_logits(model, tokens), classes)
                for tokens in outputs.outputs
            )
            gradients = torch.autograd.grad(scores, capture.attentions)
        prefix = facts.num_prefix_tokens
        per_layer = [
            gradient.clamp(min=0).mean(dim=(1, 2))[:, prefix:] for gradient in gradients
        ]  # (B, patches)
        maps = torch.stack(per_layer).mean(dim=0).reshape(pixels.shape[0], *facts.grid_size)
        return maps, classes, f"layers {start}–{len(blocks) - 1}, ∂(layer score)/∂attention"
