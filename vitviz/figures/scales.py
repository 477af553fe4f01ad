"""One colour-scale rule for every map: clip at a high percentile, so that one outlier cannot wash out the rest.

An attention sink makes one cell of a raw rollout map 21–54× the median cell (bundled DINOv2, the
eight built-in photos, centre crop or whole photo); scaled to its maximum, the median cell then sits
at 2–5% of the colour range and the map reads as one bright square. Clipped at the 99th percentile,
the top colour starts at 3–13× the median, and only the top 1% of cells (2–3 of a 16×16 grid) share
it. 99 is also the percentile the Compare page and the token colours already use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CLIP_PERCENTILE", "ColourScale", "colour_scale", "ordinal"]

CLIP_PERCENTILE = 99.0


@dataclass(frozen=True)
class ColourScale:
    """The value range a colour bar spans and the title that says how it was chosen."""

    zmin: float  # value shown with the lowest colour
    zmax: float  # value shown with the highest colour; larger values share it when `clipped`
    title: str  # colour-bar title, naming the clip when there is one
    clipped: bool  # some values lie beyond [zmin, zmax]

    def heatmap_arguments(self) -> dict[str, Any]:
        """Keyword arguments for a Plotly heatmap trace: zmin, zmax and the colour-bar title."""
        return {"zmin": self.zmin, "zmax": self.zmax, "colorbar": {"title": {"text": self.title}}}


def ordinal(number: float) -> str:
    """99 → "99th", 1 → "1st", 99.5 → "99.5th"."""
    if number != int(number):
        return f"{number:g}th"
    whole = int(number)
    suffix = "th" if 10 <= whole % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(whole % 10, "th")
    return f"{whole}{suffix}"


def colour_scale(
    values: np.ndarray,
    label: str,
    clip_percentile: float | None = CLIP_PERCENTILE,
    symmetric: bool = False,
) -> ColourScale:
    """The colour range of a map: from its minimum to its `clip_percentile`-th percentile.

    Args:
        values: the map's values, any shape; NaN and infinities are ignored.
        label: what the values are ("relevance", "cosine similarity"); the start of the title.
        clip_percentile: in (0, 100]; None (or 100) for the raw range, minimum to maximum.
        symmetric: for signed values: the range is ±(percentile of |values|), centred on 0.

    Returns:
        The range and a title such as "relevance (clipped at the 99th percentile)". When the
        percentile equals the minimum (a map of mostly one value) the maximum is used instead, as
        clipping would leave no colours; a constant map spans its value ±0.5 (0 ± 0.5 when symmetric).

    Raises:
        ValueError: no finite value, or a percentile outside (0, 100].
    """
    if clip_percentile is not None and not 0.0 < clip_percentile <= 100.0:
        raise ValueError(f"clip percentile must lie in (0, 100], got {clip_percentile}")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("the map has no finite values to colour")
    if symmetric:
        finite = np.abs(finite)
    low = 0.0 if symmetric else float(finite.min())
    high = float(finite.max())
    top = high if clip_percentile is None else float(np.percentile(finite, clip_percentile))
    if top <= low:  # clipping would leave one colour for everything
        top = high
    clipped = top < high
    if top <= low:  # a constant map: its value gets the middle colour
        low, top = low - 0.5, low + 0.5
    title = f"{label} (clipped at the {ordinal(clip_percentile)} percentile)" if clipped else label
    if symmetric:
        return ColourScale(-top, top, title, clipped)
    return ColourScale(low, top, title, clipped)
