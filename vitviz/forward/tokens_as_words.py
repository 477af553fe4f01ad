"""Patches as words: runs a ViT's own embedding modules on an image and records every shape on the way."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vitviz.maths.tokens_as_words import EmbeddingStep, TokenTrace, flatten_patches
from vitviz.models import LoadedModel, ModelError, ModelFacts, no_token_grid_reason, prefix_token_names
from vitviz.preprocess import ImageView, check_view

__all__ = ["linear_patch_embedding", "trace_tokens"]


def _plain_patch_projection(model: nn.Module, facts: ModelFacts) -> nn.Conv2d:
    patch_embed = getattr(model, "patch_embed", None)
    projection = getattr(patch_embed, "proj", None)
    if facts.family != "vit" or not isinstance(projection, nn.Conv2d):
        raise ModelError(f"{facts.name} does not embed pixel patches with one linear projection.")
    if tuple(projection.kernel_size) != tuple(projection.stride):
        raise ModelError(f"{facts.name}'s patch embedding overlaps its patches; it is not a plain ViT.")
    return projection


@torch.inference_mode()
def linear_patch_embedding(loaded: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    """Embeds patches the way the paper writes it: flatten each patch, multiply by one matrix, add a bias.

    The result equals the model's own strided convolution (up to float rounding): a ViT's patch
    embedding is a linear map applied to every patch alike.

    Args:
        loaded: a plain ViT.
        pixels: (3, H, W) normalised input at the model's input size.

    Returns:
        (rows * cols, D) patch tokens.
    """
    facts = loaded.facts
    projection = _plain_patch_projection(loaded.model, facts)
    rows, cols = facts.grid_size
    patch_h, patch_w = facts.patch_size
    channels = pixels.shape[0]
    image = pixels[:, : rows * patch_h, : cols * patch_w].to(projection.weight.device)
    patches = image.reshape(channels, rows, patch_h, cols, patch_w).permute(1, 3, 0, 2, 4)  # (r, c, C, P, P)
    flat = flatten_patches(patches)  # (rows * cols, C * P * P)
    matrix = projection.weight.reshape(projection.weight.shape[0], -1)  # (D, C * P * P)
    tokens = flat @ matrix.T  # (rows * cols, D)
    if projection.bias is not None:
        tokens = tokens + projection.bias
    return tokens


def _feature_map(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The hybrid's CNN stem output, (1, C, Hf, Wf), as its HybridEmbed computes it."""
    features = model.patch_embed.backbone(pixels)
    return features[-1] if isinstance(features, list | tuple) else features


def _encoder_input(
    model: nn.Module, patch_tokens: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor | None:
    """Prefix tokens and position embedding added by the model's own code, when it has that step.

    `patch_tokens` is (1, rows * cols, D); a model built with timm's `dynamic_img_size` takes its
    patches as a (1, rows, cols, D) grid there (it resamples its position embedding to that grid).
    """
    add_positions = getattr(model, "_pos_embed", None)
    if add_positions is None:
        return None
    if getattr(model, "dynamic_img_size", False):
        patch_tokens = patch_tokens.reshape(1, grid[0], grid[1], -1)
    sequence = add_positions(patch_tokens)
    return sequence[0] if isinstance(sequence, tuple) else sequence


def _position_step(model: nn.Module, facts: ModelFacts, num_tokens: int) -> str:
    position_embedding = getattr(model, "pos_embed", None)
    if not isinstance(position_embedding, torch.Tensor):
        return "No absolute position embedding is added: this model encodes positions inside attention."
    rows = int(np.prod(position_embedding.shape[:-1]))
    if getattr(model, "no_embed_class", False) or rows == facts.num_patches:
        covered = f"the {facts.num_patches} patches only; prefix tokens get none"
    else:
        covered = f"all {rows} positions, prefix tokens included"
    return f"A learned vector per position is added ({covered}); the shape stays ({num_tokens}, {facts.embed_dim})."


@torch.inference_mode()
def trace_tokens(loaded: LoadedModel, view: ImageView) -> TokenTrace:
    """Follows one image through the patch embedding of a ViT or hybrid and records every shape.

    Shapes come from running the model's own modules on the image, not from its name.

    Raises:
        ModelError: the model is a CNN (no tokens).
    """
    facts = loaded.facts
    model = loaded.model
    if facts.family == "cnn" or facts.grid_size is None:
        raise ModelError(no_token_grid_reason(facts, "patch tokens"))
    rows, cols = facts.grid_size
    patch_h, patch_w = facts.patch_size
    height, width = facts.input_size
    dim = facts.embed_dim
    check_view(loaded, view)
    pixels = view.tensor.to(loaded.device)  # (1, 3, H, W)
    patch_tokens = model.patch_embed(pixels).reshape(-1, dim)  # (rows * cols, D): NLC or NHWC alike
    num_patches = patch_tokens.shape[0]
    assert num_patches == rows * cols, f"patch embedding made {num_patches} tokens for a {rows}×{cols} grid"
    prefix_names = prefix_token_names(model)
    encoder_input = _encoder_input(model, patch_tokens[None], (rows, cols))
    num_tokens = num_patches + len(prefix_names)

    steps = [
        EmbeddingStep(
            "image",
            (3, height, width),
            f"The picture as the model sees it ({view.label}): {height}×{width} px, normalised.",
        )
    ]
    if facts.family == "hybrid":
        feature_map = _feature_map(model, pixels)[0]  # (C, Hf, Wf)
        channels, feature_h, feature_w = feature_map.shape
        cell_px = (height // feature_h, width // feature_w)
        steps.append(
            EmbeddingStep(
                "CNN feature map",
                (channels, feature_h, feature_w),
                f"The CNN stem turns the image into {channels} channels on a {feature_h}×{feature_w} map, "
                f"one cell per {cell_px[0]}×{cell_px[1]} px.",
            )
        )
        values = channels * patch_h * patch_w
        steps.append(
            EmbeddingStep(
                "patches of the feature map",
                (num_patches, values),
                f"The map is cut into {rows}×{cols} = {num_patches} patches of {patch_h}×{patch_w} cells "
                f"× {channels} channels = {values} values (patch size {patch_h} on the feature map, "
                f"one token per {facts.stride_px[0]} px of the image).",
            )
        )
    else:
        values = 3 * patch_h * patch_w
        steps.append(
            EmbeddingStep(
                "patches",
                (num_patches, values),
                f"The image is cut into {rows}×{cols} = {num_patches} patches of {patch_h}×{patch_w} px, "
                f"each flattened to {patch_h}×{patch_w}×3 = {values} values: the words.",
            )
        )
    steps.append(
        EmbeddingStep(
            "patch tokens",
            (num_patches, dim),
            f"One learned linear map ({values} → {dim}, the patch embedding) turns every patch into a "
            f"{dim}-dim token.",
        )
    )
    if prefix_names:
        listed = ", ".join(prefix_names)
        if len(prefix_names) == 1:
            sentence = f"1 learned token that comes from no patch goes in front: {listed}."
        else:
            sentence = f"{len(prefix_names)} learned tokens that come from no patch go in front: {listed}."
        steps.append(EmbeddingStep("+ prefix tokens", (num_tokens, dim), sentence))
    steps.append(
        EmbeddingStep("+ position embedding", (num_tokens, dim), _position_step(model, facts, num_tokens))
    )
    steps.append(
        EmbeddingStep(
            "encoder",
            (num_tokens, dim),
            f"{facts.num_layers} blocks of self-attention ({facts.num_heads} heads) and MLP; each keeps "
            f"the shape ({num_tokens}, {dim}).",
        )
    )
    sequence = None
    if encoder_input is not None:
        sequence = encoder_input.reshape(-1, dim).float().cpu().numpy()
        assert sequence.shape[0] == num_tokens, (
            f"encoder input has {sequence.shape[0]} tokens, expected {num_tokens}"
        )
    return TokenTrace(
        steps=tuple(steps),
        prefix_names=prefix_names,
        encoder_input=sequence,
        patch_tokens=patch_tokens.float().cpu().numpy(),
    )
