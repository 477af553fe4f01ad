"""The one colour-scale rule: clip at the 99th percentile by default, say so in the title, raw range one option away."""

import numpy as np
import pytest

from vitviz.figures.scales import CLIP_PERCENTILE, colour_scale, ordinal


def map_with_one_outlier() -> np.ndarray:
    values = np.linspace(1.0, 2.0, 256).reshape(16, 16)
    values[3, 9] = 60.0  # an attention sink
    return values


def test_default_clips_at_the_99th_percentile_and_says_so():
    values = map_with_one_outlier()
    scale = colour_scale(values, "relevance")
    assert CLIP_PERCENTILE == 99.0
    assert scale.zmin == 1.0
    assert scale.zmax == pytest.approx(np.percentile(values, 99))
    assert scale.zmax < 2.0, "the outlier does not set the top colour"
    assert scale.clipped and scale.title == "relevance (clipped at the 99th percentile)"


def test_raw_range_is_one_option_away():
    scale = colour_scale(map_with_one_outlier(), "relevance", clip_percentile=None)
    assert (scale.zmin, scale.zmax, scale.clipped, scale.title) == (1.0, 60.0, False, "relevance")
    assert colour_scale(map_with_one_outlier(), "relevance", clip_percentile=100).title == "relevance"


def test_a_map_without_outliers_is_not_called_clipped():
    values = np.zeros((16, 16))
    values[:8] = 1.0  # half the cells at the top value: the 99th percentile is the maximum
    scale = colour_scale(values, "attention")
    assert (scale.zmin, scale.zmax, scale.clipped, scale.title) == (0.0, 1.0, False, "attention")


def test_a_map_of_mostly_one_value_keeps_its_few_cells_visible():
    values = np.zeros((16, 16))
    values[0, :2] = [0.5, 1.0]  # the 99th percentile is 0: clipping there would leave one colour
    scale = colour_scale(values, "relevance")
    assert (scale.zmin, scale.zmax, scale.clipped) == (0.0, 1.0, False)


def test_a_constant_map_gets_the_middle_colour():
    scale = colour_scale(np.full((4, 4), 0.25), "relevance")
    assert (scale.zmin, scale.zmax) == (-0.25, 0.75) and not scale.clipped
    assert (scale.zmin + scale.zmax) / 2 == 0.25


def test_symmetric_scales_clip_the_magnitude_around_zero():
    values = np.linspace(-1.0, 1.0, 200)
    values[0] = -30.0
    scale = colour_scale(values, "cosine similarity", symmetric=True)
    limit = np.percentile(np.abs(values), 99)
    assert (scale.zmin, scale.zmax) == (pytest.approx(-limit), pytest.approx(limit)) and scale.clipped
    assert colour_scale(np.zeros(5), "value", symmetric=True).zmin == -0.5


def test_nan_and_infinite_values_are_ignored_and_an_empty_map_is_refused():
    values = map_with_one_outlier()
    with_gaps = values.copy()
    with_gaps[0, 0], with_gaps[0, 1] = np.nan, np.inf
    assert colour_scale(with_gaps, "relevance").zmax == pytest.approx(
        np.percentile(with_gaps[np.isfinite(with_gaps)], 99)
    )
    with pytest.raises(ValueError, match="no finite values"):
        colour_scale(np.array([np.nan]), "relevance")
    with pytest.raises(ValueError, match="percentile"):
        colour_scale(values, "relevance", clip_percentile=0)


def test_the_scale_fits_a_plotly_heatmap():
    import plotly.graph_objects as go

    scale = colour_scale(map_with_one_outlier(), "relevance", clip_percentile=95)
    trace = go.Heatmap(z=map_with_one_outlier(), **scale.heatmap_arguments())
    assert (
        trace.zmax == scale.zmax and trace.colorbar.title.text == "relevance (clipped at the 95th percentile)"
    )


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 90, 99, 99.5, 100)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "90th",
        "99th",
        "99.5th",
        "100th",
    ]
