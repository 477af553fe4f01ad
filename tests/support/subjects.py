"""Boxes drawn by hand around the subject of four built-in photos, and how much of a map lies in them.

The boxes are in pixels of the photo as shipped, (left, top, right, bottom); `box_in_view` moves one
into the pixels of the image a map is computed on (`ImageView.pixels`: the centre crop or the whole
photo resized). They were drawn on the whole photos resized to 224×224 with a 14-pixel grid over
them, before any map was compared with them, and scaled back to the photo's size.
"""

from __future__ import annotations

import numpy as np

from vitviz.preprocess import ImageView

__all__ = [
    "SUBJECT_BOXES",
    "box_coverage",
    "box_in_view",
    "largest_outside_share",
    "relevance_above_median",
    "subject_concentration",
]

SUBJECT_BOXES: dict[str, tuple[int, int, int, int]] = {
    "cat (chelsea)": (113, 75, 366, 281),  # eyes, nose and muzzle, on the 451×300 photo
    "coffee": (161, 14, 442, 307),  # the cup and its handle, not the saucer (600×400)
    "astronaut": (151, 11, 304, 183),  # her head (512×512)
    "rocket": (297, 122, 354, 427),  # the rocket, nose cone to launch pad (640×427)
}


def box_in_view(box: tuple[int, int, int, int], view: ImageView) -> tuple[float, float, float, float]:
    """A box on the photo in the pixels of the view's image, clipped to it.

    Args:
        box: (left, top, right, bottom) in photo pixels.
        view: what the model saw (`vitviz.preprocess.image_view`, or `record.view`).

    Returns:
        (left, top, right, bottom) in pixels of `view.pixels`.
    """
    view_left, view_top, view_right, view_bottom = view.box
    height, width = view.pixels.shape[:2]
    scale_x, scale_y = width / (view_right - view_left), height / (view_bottom - view_top)
    left, top, right, bottom = box
    return (
        float(np.clip((left - view_left) * scale_x, 0, width)),
        float(np.clip((top - view_top) * scale_y, 0, height)),
        float(np.clip((right - view_left) * scale_x, 0, width)),
        float(np.clip((bottom - view_top) * scale_y, 0, height)),
    )


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
