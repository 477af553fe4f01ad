"""Exports: PNG through kaleido and Debian Chromium, offline HTML, .npy/CSV arrays and file names."""

import io
import re

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from vitviz.export import (
    EXPORT_MARGIN_PX,
    array_csv,
    array_npy,
    export_filename,
    figure_html,
    figure_png,
    slug,
)
from vitviz.figures.common import attention_overlay_figure


def test_file_name_says_model_weights_image_and_view():
    name = export_filename(
        "vit_small_patch14_dinov2", "bundled", "cat (chelsea)", "layer11 mean attention", "png"
    )
    assert name == "vit_small_patch14_dinov2__bundled__cat-chelsea__layer11-mean-attention.png"


def test_file_name_labels_random_weights_untrained_and_drops_upload_extensions():
    name = export_filename("resnet18", "random", "Holiday Photo.JPG", "top5 predictions", ".csv")
    assert name == "resnet18__random-untrained__holiday-photo__top5-predictions.csv"


def test_file_name_of_a_checkpoint_names_the_file_not_its_folder():
    name = export_filename(
        "vit_tiny_patch16_224", "/srv/ckpt/../My Run.safetensors", "coffee", "grid", "html"
    )
    assert name == "vit_tiny_patch16_224__file-my-run__coffee__grid.html"
    assert "/" not in name and ".." not in name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat (chelsea)", "cat-chelsea"),
        ("Layer 11 · mean", "layer-11-mean"),
        ("Café", "cafe"),
        ("///", "untitled"),
    ],
)
def test_slug_keeps_only_safe_characters(text, expected):
    assert slug(text) == expected


def test_npy_round_trips_the_array_exactly():
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    loaded = np.load(io.BytesIO(array_npy(array)), allow_pickle=False)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)


def test_csv_has_one_line_per_grid_row():
    text = array_csv(np.array([[0.5, 0.25], [1.0, 0.125]]))
    assert text.splitlines() == ["0.5,0.25", "1,0.125"]
    np.testing.assert_allclose(np.loadtxt(io.StringIO(text), delimiter=","), [[0.5, 0.25], [1.0, 0.125]])


def test_csv_refuses_three_dimensional_arrays():
    with pytest.raises(ValueError, match="1-D or 2-D"):
        array_csv(np.zeros((2, 2, 2)))


def test_html_is_standalone_and_offline():
    figure = go.Figure(go.Bar(x=[1, 2], y=[3, 4]))
    html = figure_html(figure, title="bars <b>")
    assert html.lower().startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<title>bars &lt;b&gt;</title>" in html
    assert not re.search(r"<script[^>]+src=", html)  # plotly.js is inline, not fetched
    assert len(html) > 3_000_000  # the whole plotly.js bundle


@pytest.mark.slow
def test_png_is_a_real_image_at_twice_the_figure_size():
    pixels = np.full((32, 32, 3), 200, dtype=np.uint8)
    figure = attention_overlay_figure(pixels, np.eye(4), (8, 8), "map")
    figure.update_layout(width=400, height=300)
    png = figure_png(figure, scale=2)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (800 + 4 * EXPORT_MARGIN_PX, 600 + 4 * EXPORT_MARGIN_PX)  # framed, at scale 2
        colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 10  # drawn, not blank


@pytest.mark.slow
def test_png_keeps_a_white_border_where_the_page_figure_has_none():
    pixels = np.full((32, 32, 3), 30, dtype=np.uint8)  # a dark photo: its edge is easy to find
    figure = attention_overlay_figure(pixels, np.eye(4), (8, 8), "map")
    figure.update_layout(width=400, height=300, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    assert figure.layout.margin.l == 0  # the page's figure is not changed by exporting it
    with Image.open(io.BytesIO(figure_png(figure, scale=1))) as image:
        drawn = np.asarray(image.convert("L")) < 250
    height, width = 300 + 2 * EXPORT_MARGIN_PX, 400 + 2 * EXPORT_MARGIN_PX
    assert drawn.shape == (height, width)
    rows, cols = np.nonzero(drawn)
    assert rows.min() >= EXPORT_MARGIN_PX and cols.min() >= EXPORT_MARGIN_PX  # the photo at the paper's edge
    assert rows.max() < height - EXPORT_MARGIN_PX and cols.max() < width - EXPORT_MARGIN_PX
    assert cols.min() <= EXPORT_MARGIN_PX + 2  # the figure itself had (almost) no margin on the left
