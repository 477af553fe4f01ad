"""Position-embedding similarity (ViT paper, Fig. 7 centre): which grid positions look alike to the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vitviz.text import grid_size_text

if TYPE_CHECKING:  # facts are only read here; loading models is vitviz.models'
    from vitviz.models import ModelFacts

__all__ = [
    "MAX_SMALL_MAPS",
    "NoPositionEmbeddingError",
    "grid_position_embedding",
    "local_fraction",
    "mosaic_step",
    "position_embedding_similarity",
    "position_similarity",
    "similarity_mosaic",
]

# Small maps drawn across the mosaic at most; larger grids show every k-th position.
MAX_SMALL_MAPS = 16


class NoPositionEmbeddingError(ValueError):
    """The model has no learned absolute position embedding; the message is meant for a user."""


def grid_position_embedding(model: nn.Module, facts: ModelFacts) -> np.ndarray:
    """The learned position embedding of each grid position, prefix rows left out.

    Models that embed their class (and distillation) tokens carry those rows first; models built
    with `no_embed_class` (DINOv2 with registers, for example) carry grid rows only.

    Returns:
        (rows * cols, D) embeddings, grid positions in row-major order.

    Raises:
        NoPositionEmbeddingError: a CNN, or a model without a learned absolute embedding (rotary or
            relative positions), or one whose embedding does not match its grid.
    """
    if facts.family == "cnn" or facts.grid_size is None:
        raise NoPositionEmbeddingError(
            f"{facts.name} is a CNN: it has no tokens and no position embedding; "
            "its convolutions know where they are from their sliding windows."
        )
    position_embedding = getattr(model, "pos_embed", None)
    if not isinstance(position_embedding, torch.Tensor):
        raise NoPositionEmbeddingError(
            f"{facts.name} has no absolute position embedding (it encodes positions another way, "
            "e.g. rotary or relative), so there is no table of positions to compare."
        )
    table = position_embedding.detach().float().cpu().numpy().reshape(-1, position_embedding.shape[-1])
    num_patches = facts.num_patches
    if table.shape[0] < num_patches:
        raise NoPositionEmbeddingError(
            f"{facts.name}'s position embedding has {table.shape[0]} rows for a "
            f"{grid_size_text(rows=facts.grid_size[0], columns=facts.grid_size[1])} of {num_patches} patches; "
            "it is resized at run time, so it cannot be read per grid position."
        )
    return table[table.shape[0] - num_patches :]  # prefix rows come first when present


def position_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every position's embedding with every other's.

    Args:
        embeddings: (P, D) one embedding per grid position.

    Returns:
        (P, P) similarities in [-1, 1], ones on the diagonal (for non-zero embeddings).
    """
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)  # (P, 1)
    unit = embeddings / np.maximum(norms, np.finfo(np.float64).tiny)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def position_embedding_similarity(model: nn.Module, facts: ModelFacts) -> np.ndarray:
    """Cosine similarity of every grid position's learned embedding with every other's.

    Returns:
        (P, P) similarities, grid positions in row-major order.

    Raises:
        NoPositionEmbeddingError: as `grid_position_embedding`.
    """
    return position_similarity(grid_position_embedding(model, facts))


def mosaic_step(grid_size: tuple[int, int], max_maps: int = MAX_SMALL_MAPS) -> int:
    """Every how many positions a small map is drawn, so at most `max_maps` fit across the mosaic.

    A 37×37 grid drawn whole is 1369 small maps of 1369 cells each; every third position keeps
    the picture readable and the figure small.
    """
    return max(1, -(-max(grid_size) // max_maps))


def similarity_mosaic(
    similarity: np.ndarray, grid_size: tuple[int, int], gap: int = 1, step: int = 1
) -> np.ndarray:
    """Lays the similarity out as the paper does: a grid of small grids, one per position.

    The small map in slot (i, j) of the mosaic is position (i·step, j·step)'s similarity with
    every position; cells between small maps are NaN so that a heatmap leaves them blank.

    Args:
        similarity: (rows * cols, rows * cols) from `position_similarity`.
        grid_size: (rows, cols).
        gap: blank cells between neighbouring small maps.
        step: draw the small maps of every `step`-th row and column of positions.

    Returns:
        (slots_r * (rows + gap) - gap, slots_c * (cols + gap) - gap) float32 array, where
        slots_r = ceil(rows / step) and slots_c = ceil(cols / step).
    """
    rows, cols = grid_size
    assert similarity.shape == (rows * cols, rows * cols), "similarity does not match the grid"
    small_maps = similarity.reshape(rows, cols, rows, cols)[::step, ::step]  # (slots_r, slots_c, rows, cols)
    slots_r, slots_c = small_maps.shape[:2]
    mosaic = np.full((slots_r * (rows + gap) - gap, slots_c * (cols + gap) - gap), np.nan, np.float32)
    for slot_r in range(slots_r):
        for slot_c in range(slots_c):
            top, left = slot_r * (rows + gap), slot_c * (cols + gap)
            mosaic[top : top + rows, left : left + cols] = small_maps[slot_r, slot_c]
    return mosaic


def local_fraction(similarity: np.ndarray, grid_size: tuple[int, int], radius: int = 1) -> float:
    """The fraction of positions whose most similar other position lies within `radius` grid steps.

    Steps are counted as a king moves (diagonal neighbours are 1 step away). Close to 1 for an
    embedding that has learned the 2-D layout; by chance about ((2r + 1)² − 1) / (rows · cols − 1).

    Args:
        similarity: (rows * cols, rows * cols) from `position_similarity`.
        grid_size: (rows, cols).
        radius: how many grid steps away still counts as near.
    """
    rows, cols = grid_size
    assert similarity.shape == (rows * cols, rows * cols), "similarity does not match the grid"
    others = similarity.copy()
    np.fill_diagonal(others, -np.inf)
    nearest = others.argmax(axis=1)  # (P,) most similar other position
    positions = np.arange(rows * cols)
    row_steps = np.abs(nearest // cols - positions // cols)
    col_steps = np.abs(nearest % cols - positions % cols)
    return float(np.mean(np.maximum(row_steps, col_steps) <= radius))
