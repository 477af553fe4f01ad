"""The photo under Explore's maps: sent as a JPEG far smaller than its PNG, and still the view's pixels."""

import base64
import io

import numpy as np
from PIL import Image

from tests.support.tiny_models import tiny_loaded
from vitviz.figures.common import attention_overlay_figure, patch_grid_figure, png_data_uri
from vitviz.preprocess import image_view


def _decoded(source: str) -> np.ndarray:
    header, data = source.split(",", 1)
    assert header == "data:image/jpeg;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)


def test_maps_carry_the_view_as_a_jpeg_a_fifth_of_its_png(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "registers")
    pixels = image_view(cat, loaded.facts, "crop").pixels
    values = np.random.default_rng(0).random(loaded.facts.grid_size)
    figures = [
        attention_overlay_figure(pixels, values, loaded.facts.stride_px, "map"),
        patch_grid_figure(pixels, loaded.facts.grid_size, loaded.facts.stride_px, "grid"),
    ]
    for figure in figures:
        source = figure.data[0].source
        assert len(source) < len(png_data_uri(pixels)) / 3
        photo = _decoded(source)
        assert photo.shape == pixels.shape
        assert np.abs(photo - pixels.astype(int)).mean() < 4  # of 255: invisible under a map
