"""Attention computed inside partitions of a feature map (windows, dilated grids, unfolded patches), put back on the map."""

from __future__ import annotations

import torch

__all__ = [
    "fold_dilated_grids",
    "fold_unfolded_patches",
    "fold_windows",
    "received_attention",
]


def received_attention(attention: torch.Tensor) -> torch.Tensor:
    """The attention each key receives, averaged over the heads and the queries.

    Args:
        attention: (groups, heads, queries, keys) probabilities, each row summing to 1.

    Returns:
        (groups, keys) float; each group's values sum to 1.
    """
    return attention.float().mean(dim=1).mean(dim=-2)


def fold_windows(
    received: torch.Tensor, batch: int, grid_size: tuple[int, int], window: tuple[int, int]
) -> torch.Tensor:
    """Non-overlapping windows' values put back where their tokens lie.

    Args:
        received: (B · windows, window rows · window cols), windows row-major over the map padded
            up to whole windows (image after image), tokens row-major inside each window.
        batch: B.
        grid_size: (H, W) of the map before padding.
        window: (rows, cols) of a window.

    Returns:
        (B, H, W): the padding's cells dropped.
    """
    height, width = grid_size
    window_h, window_w = window
    down, across = -(-height // window_h), -(-width // window_w)  # windows per column and per row
    tiles = received.reshape(batch, down, across, window_h, window_w).permute(0, 1, 3, 2, 4)
    return tiles.reshape(batch, down * window_h, across * window_w)[:, :height, :width]


def fold_dilated_grids(
    received: torch.Tensor, batch: int, grid_size: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Dilated grids' values (MaxViT's grid attention) put back where their tokens lie.

    A grid of (G_h, G_w) tokens takes every (H / G_h)-th row and (W / G_w)-th column from one
    offset (i, j): its token (a, b) lies at (a · H / G_h + i, b · W / G_w + j).

    Args:
        received: (B · H / G_h · W / G_w, G_h · G_w), offsets row-major (image after image), tokens
            row-major inside each grid.
        batch: B.
        grid_size: (H, W) of the map; G_h must divide H and G_w divide W.
        grid: (G_h, G_w).

    Returns:
        (B, H, W).
    """
    height, width = grid_size
    grid_h, grid_w = grid
    if height % grid_h or width % grid_w:
        raise ValueError(f"a {grid_h}×{grid_w} grid does not tile a {height}×{width} map")
    step_h, step_w = height // grid_h, width // grid_w
    offsets = received.reshape(batch, step_h, step_w, grid_h, grid_w)  # (B, i, j, a, b)
    return offsets.permute(0, 3, 1, 4, 2).reshape(
        batch, height, width
    )  # row a · step_h + i, column b · step_w + j


def fold_unfolded_patches(
    received: torch.Tensor, patch: tuple[int, int], patches: tuple[int, int]
) -> torch.Tensor:
    """MobileViT's unfolded attention put back: one value per (pixel position in a patch, patch).

    MobileViT cuts its map into (p_h, p_w)-pixel patches and lets the patches attend to each other
    once per pixel position inside a patch. Patch (r, c)'s pixel (u, v) lies at (r · p_h + u, c · p_w + v).

    Args:
        received: (B, p_h · p_w, n_h · n_w): positions row-major inside a patch, patches row-major.
        patch: (p_h, p_w).
        patches: (n_h, n_w) patches per column and per row.

    Returns:
        (B, n_h · p_h, n_w · p_w).
    """
    patch_h, patch_w = patch
    rows, cols = patches
    batch = received.shape[0]
    cells = received.reshape(batch, patch_h, patch_w, rows, cols)  # (B, u, v, r, c)
    return cells.permute(0, 3, 1, 4, 2).reshape(batch, rows * patch_h, cols * patch_w)
