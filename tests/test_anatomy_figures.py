"""The Anatomy figures' geometry and marks: filter tiles of one size, switched-off heads outlined, clipped mosaics."""

import numpy as np
import plotly.graph_objects as go
import pytest

from vitviz.figures.anatomy import filter_components_figure, model_view_figure
from vitviz.maths.filters import component_tiles, filter_components, patch_embedding_filters
from vitviz.models import load_model, untrained_twin


def _tile_sizes_px(figure: go.Figure) -> list[tuple[float, float]]:
    """(width, height) on screen of every subplot of a fixed-size figure, from its axes' domains."""
    layout = figure.layout
    plot_width = layout.width - layout.margin.l - layout.margin.r
    plot_height = layout.height - layout.margin.t - layout.margin.b
    sizes = []
    for trace in figure.data:
        x_axis = layout[trace.xaxis.replace("x", "xaxis")]
        y_axis = layout[trace.yaxis.replace("y", "yaxis")]
        width = (x_axis.domain[1] - x_axis.domain[0]) * plot_width
        height = (y_axis.domain[1] - y_axis.domain[0]) * plot_height
        sizes.append((width, height))
    return sizes


def test_trained_and_untrained_filter_tiles_are_drawn_the_same_size():
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    figures = []
    for model in (loaded, untrained_twin(loaded)):
        components = filter_components(patch_embedding_filters(model.model, model.facts))
        figures.append(
            filter_components_figure(
                component_tiles(components.components),
                components.explained_variance_ratio,
                "filters",
                tile_px=50,
            )
        )
    trained, untrained = (_tile_sizes_px(figure) for figure in figures)
    assert len(trained) == len(untrained) == 28
    assert (figures[0].layout.width, figures[0].layout.height) == (
        figures[1].layout.width,
        figures[1].layout.height,
    )
    for width, height in trained + untrained:
        assert width == pytest.approx(50, abs=0.01) and height == pytest.approx(50, abs=0.01)


def test_all_heads_mosaic_outlines_and_names_each_switched_off_head():
    maps = np.random.default_rng(0).random((3, 4, 5, 5))
    figure = model_view_figure(maps, "all heads", selected=(2, 0), switched_off=[(0, 1), (2, 3)])
    outlines = {shape.name: shape for shape in figure.layout.shapes if shape.type == "rect"}
    assert set(outlines) == {"off 0:1", "off 2:3", "selected 2:0"}
    # Small maps are 5 cells and a 1-cell gap apart: head 3 of layer 2 spans columns 18–22, rows 12–16.
    off = outlines["off 2:3"]
    assert (off.x0, off.x1, off.y0, off.y1) == pytest.approx((17.2, 22.8, 11.2, 16.8))
    assert off.line.dash == "dot"
    assert {shape.name for shape in figure.layout.shapes if shape.type == "line"} == {
        "off 0:1 cross",
        "off 2:3 cross",
    }
    assert not [
        shape for shape in model_view_figure(maps, "all heads").layout.shapes if shape.name.startswith("off")
    ]


def test_mosaic_divides_each_map_by_its_99th_percentile_unless_raw():
    maps = np.full((1, 1, 16, 16), 0.01)
    maps[0, 0, 3, 9] = 1.0  # one sink cell in 256
    clipped = model_view_figure(maps, "all heads")
    raw = model_view_figure(maps, "all heads", clip_percentile=None)
    clipped_z, raw_z = (np.asarray(figure.data[0].z, dtype=float) for figure in (clipped, raw))
    assert clipped_z[0, 0] == pytest.approx(1.0) and clipped_z[3, 9] == pytest.approx(1.0)
    assert raw_z[0, 0] == pytest.approx(0.01) and raw_z[3, 9] == pytest.approx(1.0)
    assert "99th" in clipped.data[0].colorbar.title.text and "clipped" in clipped.data[0].colorbar.title.text
    assert raw.data[0].colorbar.title.text == "÷ map max"
