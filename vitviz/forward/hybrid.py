"""The CNN stem of a hybrid ViT: its feature map and how that map becomes the token grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vitviz.models import LoadedModel, ModelError
from vitviz.preprocess import ImageView, check_view

__all__ = ["HybridStem", "hybrid_stem"]


@dataclass(frozen=True)
class HybridStem:
    """One image through a hybrid's CNN stem, with the numbers that turn its feature map into tokens."""

    backbone: str  # class name of the CNN stem, e.g. "ResNetV2"
    input_size: tuple[int, int]  # (H, W) pixels into the stem
    feature_shape: tuple[int, int, int]  # (channels, h, w) of the stem's output
    feature_ratio: tuple[int, int]  # input pixels per feature-map cell
    patch_size: tuple[int, int]  # feature-map cells per token (the projection's kernel and stride)
    embed_dim: int  # token width after the projection
    grid_size: tuple[int, int]  # (rows, cols) of the token grid
    stride_px: tuple[int, int]  # input pixels per token = feature_ratio × patch_size
    channels: tuple[int, ...]  # indices of the channels shown, most varying over the image first
    channel_maps: np.ndarray  # (len(channels), h, w) responses of those channels
    mean_map: np.ndarray  # (h, w) mean response over all channels
    projection: str  # the layer that turns feature cells into tokens, as read from the model


@torch.inference_mode()
def hybrid_stem(loaded: LoadedModel, view: ImageView, num_channels: int = 6) -> HybridStem:
    """Runs only `model.patch_embed.backbone` and reads the stem's numbers from the model.

    Args:
        loaded: a hybrid (CNN stem + ViT).
        view: the picture's view (`vitviz.preprocess.image_view`), as for attention maps.
        num_channels: how many single channels to keep; those whose response varies most over
            the image are kept, as they carry the most spatial structure.

    Raises:
        ModelError: the model is not a hybrid.
    """
    facts = loaded.facts
    if facts.family != "hybrid":
        kind = (
            "a plain ViT (its patch embedding works on pixels)"
            if facts.family == "vit"
            else f"a {facts.family_words}"
        )
        raise ModelError(f"{facts.name} is {kind}: it has no CNN stem.")
    check_view(loaded, view)
    patch_embed = loaded.model.patch_embed
    features = patch_embed.backbone(view.tensor.to(loaded.device))
    if isinstance(features, list | tuple):  # timm takes the last map of a multi-output stem
        features = features[-1]
    feature_map = features[0].float().cpu().numpy()  # (C, h, w)
    channels, height, width = feature_map.shape
    patch_size = (int(patch_embed.patch_size[0]), int(patch_embed.patch_size[1]))
    grid_size = (height // patch_size[0], width // patch_size[1])
    assert grid_size == facts.grid_size, f"stem map {height}×{width} / {patch_size} ≠ grid {facts.grid_size}"
    spread = feature_map.reshape(channels, -1).std(axis=1)  # (C,)
    shown = tuple(int(index) for index in np.argsort(-spread, kind="stable")[: max(0, num_channels)])
    feature_ratio = (facts.input_size[0] // height, facts.input_size[1] // width)
    proj = patch_embed.proj
    if isinstance(proj, nn.Conv2d):
        kernel = "×".join(str(k) for k in proj.kernel_size)
        stride = "×".join(str(s) for s in proj.stride)
        projection = f"Conv2d({proj.in_channels} → {proj.out_channels}, kernel {kernel}, stride {stride})"
    else:
        projection = f"{type(proj).__name__} (feature channels are the tokens)"
    return HybridStem(
        backbone=type(patch_embed.backbone).__name__,
        input_size=facts.input_size,
        feature_shape=(channels, height, width),
        feature_ratio=feature_ratio,
        patch_size=patch_size,
        embed_dim=facts.embed_dim,
        grid_size=grid_size,
        stride_px=(feature_ratio[0] * patch_size[0], feature_ratio[1] * patch_size[1]),
        channels=shown,
        channel_maps=feature_map[list(shown)],
        mean_map=feature_map.mean(axis=0),
        projection=projection,
    )
