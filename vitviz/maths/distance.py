"""Mean attention distance (ViT paper, appendix D.7): how far in pixels each head looks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AttentionDistances",
    "mean_attention_distance",
    "patch_distances",
    "uniform_attention_distance",
]


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
