"""Grad-CAM and Grad-CAM++: gradient-weighted feature maps, on forward_features or any named stage."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vitviz.capture import ActivationLeaf
from vitviz.methods.base import ExplanationMethod
from vitviz.models import ModelFacts

__all__ = [
    "FEATURES",
    "STEM",
    "TOKENS",
    "GradCAM",
    "GradCAMPlusPlus",
    "as_feature_map",
    "default_layer",
    "feature_map_reason",
    "layer_module",
]

# Named targets besides module names: the feature extractor's output, a hybrid's CNN stem, and the
# token grid entering the last block (a class-token head gives the final tokens no patch gradient).
FEATURES = "features"
STEM = "stem"
TOKENS = "tokens"


def default_layer(facts: ModelFacts) -> str:
    """Where Grad-CAM looks by default: a hybrid's CNN stem, a ViT's last token grid, else the last stage's features."""
    return {"hybrid": STEM, "vit": TOKENS}.get(facts.family, FEATURES)


def layer_module(model: nn.Module, facts: ModelFacts, layer: str) -> tuple[nn.Module, str]:
    """The module a CAM reads for a named target ("stem", "tokens" or a module name), and its description.

    ("features" has no module: it is the output of `forward_features`; callers handle it.)
    """
    if layer == STEM:
        backbone = getattr(getattr(model, "patch_embed", None), "backbone", None)
        if backbone is None:
            raise ValueError(f"{facts.name} has no CNN stem; the stem layer is for hybrids")
        return backbone, "patch_embed.backbone (CNN stem)"
    if layer == TOKENS:
        blocks = getattr(model, "blocks", None)
        if facts.grid_size is None or blocks is None or not hasattr(blocks[-1], "norm1"):
            raise ValueError(f"{facts.name} has no token grid for Grad-CAM")
        name = f"blocks.{len(blocks) - 1}.norm1"
        return blocks[-1].norm1, f"{name} (token grid)"
    try:
        return model.get_submodule(layer), layer
    except AttributeError as error:
        raise ValueError(
            f"{facts.name} has no module named {layer!r}; use features, stem, tokens or a "
            "name from model.named_modules()"
        ) from error


def feature_map_reason(title: str, facts: ModelFacts) -> str | None:
    """Why a CAM has no spatial map to weigh on this model by default, or None when it has one.

    A hierarchical model whose head reads a class token kept beside its grid (PiT) returns that token
    alone from `forward_features`: there is no grid there to weigh.
    """
    if facts.family in ("hierarchical", "conv-attention") and facts.head_pool == "token":
        return (
            f"{title} weighs a spatial feature map, and {facts.name}'s features are its class token "
            "alone (its head reads a class token kept beside the grid)."
        )
    return None


def as_feature_map(tensor: torch.Tensor, facts: ModelFacts, source: str) -> torch.Tensor:
    """(B, C, h, w) from a conv map, a channels-last map or tokens, on the model's own grid.

    Args:
        tensor: (B, C, h, w); (B, h, w, C) channels last (Swin's stages), told apart by the model's
            feature width; or (B, N, C) tokens with or without the prefix tokens, on the token grid
            of a ViT or on the last stage's grid of a hierarchical model (LeViT).
        facts: the model's facts: `grid_size`, `num_prefix_tokens` and `stage_grids` come from the
            model itself.
        source: what the tensor was read from, for the error message.
    """
    if tensor.ndim == 4:
        channels = facts.embed_dim
        if tensor.shape[1] != channels and tensor.shape[-1] == channels:
            return tensor.permute(0, 3, 1, 2)
        return tensor
    grid = facts.grid_size or (facts.stage_grids[-1] if facts.stage_grids else None)
    if tensor.ndim != 3 or grid is None:
        raise ValueError(f"{source} outputs shape {tuple(tensor.shape)}, not a feature map or tokens")
    rows, cols = grid
    tokens = tensor.shape[1]
    if facts.grid_size is not None and tokens == facts.num_tokens:
        tensor = tensor[:, facts.num_prefix_tokens :]
    elif tokens != rows * cols:
        raise ValueError(f"{source} outputs {tokens} tokens, which do not fit the {rows}×{cols} grid")
    return tensor.reshape(tensor.shape[0], rows, cols, tensor.shape[-1]).permute(0, 3, 1, 2)


class GradCAM(ExplanationMethod):
    """Grad-CAM (Selvaraju et al., 2017): ReLU(Σ_k α_k A_k), α_k the spatial mean of ∂score/∂A_k.

    Options:
        layer: "features" (the output of `forward_features`: after the last conv, norm and
            activation), "stem" (a hybrid's CNN stem), "tokens" (the token grid entering the last
            block, reshaped by the model's own grid size) or any module name of the model.
            Default: features for CNNs, stem for hybrids, tokens for ViTs.
    """

    takes_layer: ClassVar[bool] = True

    name: ClassVar[str] = "gradcam"
    title: ClassVar[str] = "Grad-CAM"

    @classmethod
    def unavailable_reason(cls, facts: ModelFacts) -> str | None:
        return super().unavailable_reason(facts) or feature_map_reason(cls.title, facts)

    def attribute(
        self, pixels: torch.Tensor, class_indices: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        layer = self.options.get("layer") or default_layer(self.facts)
        with torch.inference_mode(False), torch.enable_grad():
            activation, logits, source = self._activation_and_logits(pixels, layer)
            classes = self.chosen_classes(logits, class_indices)
            (gradient,) = torch.autograd.grad(self.class_score(logits, classes), activation)
        prefix = self.facts.num_prefix_tokens
        if layer == FEATURES and activation.ndim == 3 and not gradient[:, prefix:].any():
            raise ValueError(
                f"the patch tokens of {self.facts.name}'s forward_features output get no gradient "
                "(its head reads the class token only); use the layer 'tokens'"
            )
        activation = self._as_feature_map(activation.detach(), source)  # (B, C, h, w)
        gradient = self._as_feature_map(gradient, source)
        weights = self.channel_weights(activation, gradient)  # (B, C)
        cam = torch.relu((weights[:, :, None, None] * activation).sum(dim=1))  # (B, h, w)
        return cam, classes, source

    def channel_weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """α_k: the mean gradient of each channel.

        Args:
            activation: (B, C, h, w).
            gradient: (B, C, h, w) of the class score.

        Returns:
            (B, C).
        """
        return gradient.mean(dim=(2, 3))

    def _activation_and_logits(
        self, pixels: torch.Tensor, layer: str
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        model = self.model
        if layer == FEATURES:
            # The model's own split: only the head is recorded for the backward.
            with torch.no_grad():
                features = model.forward_features(pixels)
            activation = features.detach().requires_grad_(True)
            return activation, model.forward_head(activation), "forward_features"
        module, source = self._module(layer)
        with ActivationLeaf(model, module) as leaf:
            logits = model(pixels)
        assert leaf.activation is not None, f"{source} was not run by the forward"
        return leaf.activation, logits, source

    def _module(self, layer: str) -> tuple[nn.Module, str]:
        return layer_module(self.model, self.facts, layer)

    def _as_feature_map(self, tensor: torch.Tensor, source: str) -> torch.Tensor:
        return as_feature_map(tensor, self.facts, source)


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhyay et al., 2018): channel weights from positive gradients, reweighted per pixel."""

    name: ClassVar[str] = "gradcam++"
    title: ClassVar[str] = "Grad-CAM++"

    def channel_weights(self, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """α_k = Σ_ij ReLU(g_kij) · g²/(2g² + Σ_ab A_kab · g³), the closed form for an exponential score."""
        squared = gradient.pow(2)
        cubed = squared * gradient
        activation_sums = activation.sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        alpha = squared / (2 * squared + activation_sums * cubed + 1e-6)
        alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(gradient) * alpha).sum(dim=(2, 3))
