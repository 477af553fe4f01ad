"""Patch-embedding filters (ViT paper, Fig. 7 left): principal components of the linear patch projection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from torch import nn

from vitviz.models import ModelFacts

__all__ = [
    "PAPER_COMPONENTS",
    "FilterComponents",
    "FiltersNotApplicableError",
    "component_tiles",
    "filter_components",
    "patch_embedding_filters",
    "tile_mosaic",
]

# The paper shows the first 28 principal components.
PAPER_COMPONENTS = 28


class FiltersNotApplicableError(ValueError):
    """The model has no linear projection of RGB patches; the message is meant for a user."""


@dataclass(frozen=True)
class FilterComponents:
    """Principal components of the patch-embedding filters, each shaped like a filter."""

    components: np.ndarray  # (k, 3, P, P) unit-norm directions in filter space
    explained_variance_ratio: np.ndarray  # (k,) share of the filters' variance each component explains
    num_filters: int  # D, the number of filters (the token width)

    @property
    def num_components(self) -> int:
        return self.components.shape[0]


def patch_embedding_filters(model: nn.Module, facts: ModelFacts) -> np.ndarray:
    """The linear patch-embedding filters of a ViT, one RGB P×P filter per token dimension.

    Returns:
        (D, 3, P, P) weights of `patch_embed.proj`.

    Raises:
        FiltersNotApplicableError: a CNN, a hybrid (its projection reads CNN feature channels, not
            pixels) or a patch embedding that is not one convolution over RGB.
    """
    if facts.family == "cnn":
        raise FiltersNotApplicableError(
            f"{facts.name} is a CNN: it has no patch embedding. Its first convolution's filters "
            "are a different thing (small, overlapping windows)."
        )
    projection = getattr(getattr(model, "patch_embed", None), "proj", None)
    if facts.family == "hybrid":
        detail = ""
        if isinstance(projection, nn.Conv2d):
            height, width = projection.kernel_size
            detail = (
                f" Its projection is {height}×{width} over the {projection.in_channels} channels of the CNN "
                "stem's feature map, so its filters cannot be shown as RGB pictures."
            )
        raise FiltersNotApplicableError(
            f"{facts.name} is a hybrid: its tokens come from a CNN feature map, not from pixel patches.{detail}"
        )
    if not isinstance(projection, nn.Conv2d) or projection.in_channels != 3:
        raise FiltersNotApplicableError(
            f"{facts.name}'s patch embedding is not one linear projection of RGB patches."
        )
    return projection.weight.detach().float().cpu().numpy()


def filter_components(filters: np.ndarray, num_components: int = PAPER_COMPONENTS) -> FilterComponents:
    """PCA (scikit-learn) of the filters, each filter one sample of C·P·P values.

    Args:
        filters: (D, C, P, P) filters.
        num_components: how many components to keep; fewer when D or C·P·P is smaller.

    Returns:
        The first components, most variance first.
    """
    num_filters = filters.shape[0]
    samples = filters.reshape(num_filters, -1).astype(np.float64)  # (D, C·P·P)
    keep = min(num_components, num_filters, samples.shape[1])
    pca = PCA(n_components=keep, svd_solver="full").fit(samples)
    return FilterComponents(
        components=pca.components_.reshape(keep, *filters.shape[1:]),
        explained_variance_ratio=pca.explained_variance_ratio_,
        num_filters=num_filters,
    )


def component_tiles(components: np.ndarray) -> np.ndarray:
    """Each component as an RGB picture, stretched to [0, 1] on its own (a component's sign is arbitrary).

    Args:
        components: (k, 3, P, P).

    Returns:
        (k, P, P, 3) floats in [0, 1]; a constant component comes out mid-grey.
    """
    tiles = components.transpose(0, 2, 3, 1)  # (k, P, P, 3)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    span = high - low
    return np.where(span > 0, (tiles - low) / np.where(span > 0, span, 1.0), 0.5)


def tile_mosaic(tiles: np.ndarray, columns: int = 7, scale: int = 4, gap: int = 2) -> np.ndarray:
    """Tiles in rows of `columns`, each enlarged `scale` times without smoothing, on white.

    Args:
        tiles: (k, P, P, 3) floats in [0, 1].
        columns: tiles per row (7 gives the paper's 4 × 7 for 28 components).
        scale: pixels per filter value.
        gap: white pixels between tiles.

    Returns:
        (H, W, 3) uint8 picture.
    """
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    cell_h, cell_w = height * scale, width * scale
    mosaic = np.full((rows * (cell_h + gap) + gap, columns * (cell_w + gap) + gap, 3), 255, np.uint8)
    enlarged = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)  # (k, P·s, P·s, 3)
    as_bytes = np.round(enlarged * 255).astype(np.uint8)
    for index in range(count):
        row, col = divmod(index, columns)
        top, left = gap + row * (cell_h + gap), gap + col * (cell_w + gap)
        mosaic[top : top + cell_h, left : left + cell_w] = as_bytes[index]
    return mosaic
