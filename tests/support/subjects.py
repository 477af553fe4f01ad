"""Boxes drawn by hand around the subject of four built-in photos, and how much of a map lies in them.

The boxes are in pixels of the image a map is computed on: the whole photo resized to 224×224
(`vitviz.preprocess.explanation_image` for the bundled DINOv2), as (left, top, right, bottom).
They were drawn on that image with a 14-pixel grid over it, before any map was compared with them.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SUBJECT_BOXES",
    "box_coverage",
    "largest_outside_share",
    "relevance_above_median",
    "subject_concentration",
]

SUBJECT_BOXES: dict[str, tuple[int, int, int, int]] = {
    "cat (chelsea)": (56, 56, 182, 210),  # eyes, nose and muzzle
    "coffee": (60, 8, 165, 172),  # the cup and its handle, not the saucer
    "astronaut": (66, 5, 133, 80),  # her head
    "rocket": (104, 64, 124, 224),  # the rocket, nose cone to launch pad
}


def box_coverage(
    box: tuple[int, int, int, int], grid_size: tuple[int, int], image_size: tuple[int, int]
) -> np.ndarray:
    """The fraction of each grid cell's area that lies inside the box.

    Args:
        box: (left, top, right, bottom) in pixels.
        grid_size: (rows, cols) of the map.
        image_size: (height, width) in pixels of the image the map covers.

    Returns:
        (rows, cols) fractions in [0, 1].
    """
    rows, cols = grid_size
    height, width = image_size
    left, top, right, bottom = box
    cell_top, cell_left = np.arange(rows) * height / rows, np.arange(cols) * width / cols
    overlap_y = np.clip(np.minimum(bottom, cell_top + height / rows) - np.maximum(top, cell_top), 0, None)
    overlap_x = np.clip(np.minimum(right, cell_left + width / cols) - np.maximum(left, cell_left), 0, None)
    return np.outer(overlap_y / (height / rows), overlap_x / (width / cols))


def relevance_above_median(relevance: np.ndarray) -> np.ndarray:
    """The part of a map that stands out: each cell's excess over the map's median, as shares of the total.

    Rollout adds the identity at every layer, so every cell keeps a floor of relevance; what a
    colour scale shows is what lies above it.
    """
    excess = np.clip(relevance - np.median(relevance), 0.0, None)
    total = excess.sum()
    assert total > 0, "a constant map has nothing above its median"
    return excess / total


def subject_concentration(relevance: np.ndarray, coverage: np.ndarray) -> float:
    """The box's share of the relevance above the median, over the box's share of the image's area.

    1 means the box holds what its size alone would give it; 2 means twice that.
    """
    return float((relevance_above_median(relevance) * coverage).sum() / coverage.mean())


def largest_outside_share(relevance: np.ndarray, coverage: np.ndarray) -> float:
    """The largest share of the relevance above the median that one cell holds outside the box."""
    return float((relevance_above_median(relevance) * (1.0 - coverage)).max())
