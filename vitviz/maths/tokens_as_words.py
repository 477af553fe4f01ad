"""Patches as words: the steps from image to token sequence, and an image cut into its token grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "EmbeddingStep",
    "TokenTrace",
    "cut_into_patches",
    "flatten_patches",
]


@dataclass(frozen=True)
class EmbeddingStep:
    """One step from image to encoder input, with the shape of what it produces (batch left out)."""

    name: str  # what the data is after this step, e.g. "patch tokens"
    shape: tuple[int, ...]  # e.g. (256, 384)
    explanation: str  # one sentence with the loaded model's numbers


@dataclass(frozen=True)
class TokenTrace:
    """The steps of one image through the embedding of a ViT or hybrid, and the sequence it makes."""

    steps: tuple[EmbeddingStep, ...]  # image → patches → tokens → + prefix → + position → encoder
    prefix_names: tuple[str, ...]  # "class", "distillation", "register 1", ... in sequence order
    encoder_input: np.ndarray | None  # (N, D) the sequence the first block reads; None if unreadable
    patch_tokens: np.ndarray  # (rows * cols, D) the projected patches, before prefix and positions


def cut_into_patches(
    pixels: np.ndarray, grid_size: tuple[int, int], stride_px: tuple[int, int]
) -> np.ndarray:
    """Cuts an image into its token grid's cells, in reading order.

    Args:
        pixels: (H, W, C) image at the model's input size.
        grid_size: (rows, cols) of the token grid.
        stride_px: (height, width) in pixels of one cell: the patch size of a plain ViT.

    Returns:
        (rows, cols, stride_h, stride_w, C) cells; pixels beyond the last full cell are dropped.
    """
    rows, cols = grid_size
    step_h, step_w = stride_px
    assert pixels.shape[0] >= rows * step_h and pixels.shape[1] >= cols * step_w, "image smaller than grid"
    cropped = pixels[: rows * step_h, : cols * step_w]
    cells = cropped.reshape(rows, step_h, cols, step_w, pixels.shape[2])
    return cells.transpose(0, 2, 1, 3, 4)


def flatten_patches(patches: torch.Tensor) -> torch.Tensor:
    """Flattens each patch channel-first, the order of a Conv2d weight (D, C, P, P).

    Args:
        patches: (rows, cols, C, P, P).

    Returns:
        (rows * cols, C * P * P), patches in reading order.
    """
    rows, cols = patches.shape[:2]
    return patches.reshape(rows * cols, -1)
