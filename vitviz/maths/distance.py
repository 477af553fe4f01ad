"""Mean attention distance (ViT paper, appendix D.7): how far in pixels each head looks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from vitviz.capture import AttentionCapture
from vitviz.models import LoadedModel, ModelError, no_token_attention_reason
from vitviz.preprocess import ViewMode, explanation_tensor

__all__ = [
    "AttentionDistances",
    "ProgressCallback",
    "attention_distances_over_images",
    "mean_attention_distance",
    "patch_distances",
    "uniform_attention_distance",
]

# Called as progress(done, total) after each layer of each batch: done of total layer passes.
ProgressCallback = Callable[[int, int], None]

# Attention bytes one layer may hold for a whole batch; bounds the batch size of large models.
_ATTENTION_BYTES_PER_BATCH = 256 * 1024 * 1024


def patch_distances(grid_size: tuple[int, int], stride_px: tuple[int, int]) -> np.ndarray:
    """Euclidean distance in input pixels between the centres of every pair of patches.

    Returns:
        (rows * cols, rows * cols) distances, patches in row-major order.
    """
    rows, cols = grid_size
    row_index, col_index = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    centres = np.stack([row_index.ravel() * stride_px[0], col_index.ravel() * stride_px[1]], axis=1)
    return np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)


def mean_attention_distance(
    attentions: np.ndarray, grid_size: tuple[int, int], stride_px: tuple[int, int], num_prefix_tokens: int
) -> np.ndarray:
    """Per layer and head, the attention-weighted pixel distance averaged over query patches.

    Prefix tokens are dropped as queries and as keys, and the remaining weights are not
    renormalised, as in the paper.

    Args:
        attentions: (..., N, N) attention probabilities, e.g. (layers, heads, N, N).
        grid_size: (rows, cols) of the patch grid.
        stride_px: input pixels between neighbouring tokens.
        num_prefix_tokens: leading non-patch tokens.

    Returns:
        (...) mean distance in input pixels, e.g. (layers, heads).
    """
    patch_attention = attentions[..., num_prefix_tokens:, num_prefix_tokens:]  # (..., P, P)
    distances = patch_distances(grid_size, stride_px)  # (P, P)
    assert patch_attention.shape[-1] == distances.shape[0], "grid does not match the attention"
    return (patch_attention * distances).sum(axis=-1).mean(axis=-1)


def uniform_attention_distance(grid_size: tuple[int, int], stride_px: tuple[int, int]) -> float:
    """The mean attention distance of a head that spreads its attention evenly over all patches.

    A reference line for the scatter: untrained heads sit close to it.
    """
    return float(patch_distances(grid_size, stride_px).mean())


@dataclass(frozen=True)
class AttentionDistances:
    """Mean attention distance of every head of every layer, for each image of a set."""

    per_image: np.ndarray  # (images, layers, heads) mean distance in input pixels
    grid_size: tuple[int, int]  # (rows, cols) of the patch grid
    stride_px: tuple[int, int]  # input pixels between neighbouring tokens
    input_size: tuple[int, int]  # (height, width) of the model's input in pixels

    @property
    def mean(self) -> np.ndarray:
        """(layers, heads) distance averaged over the images."""
        return self.per_image.mean(axis=0)

    @property
    def num_images(self) -> int:
        return self.per_image.shape[0]

    @property
    def uniform_reference(self) -> float:
        """What a head with uniform attention over the patches would score, in pixels."""
        return uniform_attention_distance(self.grid_size, self.stride_px)


class _DistanceCapture(AttentionCapture):
    """Reduces each layer's attention to (B, heads) distances as it is computed.

    Only one layer's attention is alive at a time, so a batch of images costs the memory of one
    layer rather than of all of them.
    """

    def __init__(
        self,
        model: nn.Module,
        distances: torch.Tensor,
        num_prefix_tokens: int,
        on_layer: Callable[[], None],
    ) -> None:
        super().__init__(model)
        self.distances = distances  # (P, P) pixels, on the model's device
        self.num_prefix_tokens = num_prefix_tokens
        self.on_layer = on_layer
        self.layer_distances: list[torch.Tensor] = []

    def __enter__(self) -> _DistanceCapture:
        super().__enter__()
        self.layer_distances = []
        return self

    def _record(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        prefix = self.num_prefix_tokens
        patch_attention = inputs[0][..., prefix:, prefix:].float()  # (B, heads, P, P)
        assert patch_attention.shape[-1] == self.distances.shape[0], "grid does not match the attention"
        per_query = (patch_attention * self.distances).sum(dim=-1)  # (B, heads, P)
        self.layer_distances.append(per_query.mean(dim=-1).cpu())  # (B, heads)
        self.on_layer()


def _batch_size(num_heads: int, num_tokens: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"batch size must be at least 1, got {requested}")
        return requested
    per_image = num_heads * num_tokens * num_tokens * 4  # one layer's float32 attention
    return max(1, _ATTENTION_BYTES_PER_BATCH // per_image)


@torch.inference_mode()
def attention_distances_over_images(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    view: ViewMode = "crop",
) -> AttentionDistances:
    """Mean attention distance per image, layer and head, images run through the model in batches.

    Each image is seen in `view` ("crop": the model's eval transform; "whole": resized whole to
    the model's input), as for the attention maps, so distances are in pixels of that input.

    Args:
        loaded: a ViT or hybrid.
        images: RGB images; at least one.
        batch_size: images per forward pass; by default as many as fit a memory budget for one
            layer's attention (all ten images of a ViT-S at 224 px in one pass).
        progress: called as progress(done, total) after every layer of every batch.
        view: "crop" or "whole", as `preprocess.image_view` makes it.

    Raises:
        ModelError: the model has no self-attention (a CNN).
        ValueError: no images.
    """
    facts = loaded.facts
    if not facts.global_attention or facts.grid_size is None or facts.stride_px is None:
        raise ModelError(no_token_attention_reason(facts, "attention distances"))
    if not images:
        raise ValueError("mean attention distance needs at least one image")
    size = _batch_size(facts.num_heads, facts.num_tokens, batch_size)
    batches = [images[start : start + size] for start in range(0, len(images), size)]
    total = len(batches) * facts.num_layers
    done = 0

    def on_layer() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    distances = torch.from_numpy(patch_distances(facts.grid_size, facts.stride_px)).float()
    distances = distances.to(loaded.device)
    per_batch: list[torch.Tensor] = []
    for batch in batches:
        pixels = torch.cat([explanation_tensor(image, facts, view) for image in batch]).to(loaded.device)
        with _DistanceCapture(loaded.model, distances, facts.num_prefix_tokens, on_layer) as capture:
            loaded.model(pixels)
        per_batch.append(torch.stack(capture.layer_distances, dim=1))  # (B, layers, heads)
    return AttentionDistances(
        per_image=torch.cat(per_batch).numpy().astype(np.float64),
        grid_size=facts.grid_size,
        stride_px=facts.stride_px,
        input_size=facts.input_size,
    )
