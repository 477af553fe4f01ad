"""Anatomy's kit caches each tab's computation on its own: a repeated call is served from the cache, the
options are part of the key, and two computations asked the same thing never hand out each other's
results."""

import numpy as np
import pytest
import streamlit as st
from PIL import Image

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, ViewComputation, WeightsComputation
from tests.support.tiny_models import tiny_loaded
from vitviz.preprocess import ImageView


def _side_and_picture(tiny_models) -> tuple[ModelSide, ui.ImageChoice]:
    loaded = tiny_loaded(tiny_models, "vit")
    side = ModelSide(loaded, ui.ModelChoice(loaded.facts.name, "random", "cpu"), twin=False)
    picture = Image.fromarray(np.full((80, 96, 3), 120, dtype=np.uint8))
    return side, ui.ImageChoice(picture, "grey", "digest-of-grey-kit-test")


calls: list[tuple[str, object]] = []


def view_height(loaded, view: ImageView, scale: int) -> int:
    calls.append(("height", scale))
    return int(view.tensor.shape[-2]) * scale


def view_width(loaded, view: ImageView, scale: int) -> int:
    calls.append(("width", scale))
    return int(view.tensor.shape[-1]) * scale


def weights_count(model, facts) -> int:
    calls.append(("weights", facts.name))
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.fixture(autouse=True)
def fresh_calls():
    """Every test starts from empty caches and an empty call list."""
    st.cache_data.clear()
    calls.clear()
    yield
    calls.clear()


def test_a_view_computation_is_served_from_its_cache_and_keyed_by_its_options(tiny_models):
    side, picked = _side_and_picture(tiny_models)
    heights = ViewComputation(view_height, "Measuring…")
    size = side.loaded.facts.input_size
    assert heights(side, picked, 2) == 2 * size[0]
    assert heights(side, picked, 2) == 2 * size[0]
    assert heights(side, picked, 3) == 3 * size[0]
    assert calls == [("height", 2), ("height", 3)]


def test_two_computations_with_the_same_key_keep_their_own_results(tiny_models):
    side, picked = _side_and_picture(tiny_models)
    heights, widths = ViewComputation(view_height, "Measuring…"), ViewComputation(view_width, "Measuring…")
    size = side.loaded.facts.input_size
    assert (heights(side, picked, 5), widths(side, picked, 5)) == (5 * size[0], 5 * size[1])
    assert calls == [("height", 5), ("width", 5)]


def test_a_weights_computation_runs_once_per_model(tiny_models):
    side, _ = _side_and_picture(tiny_models)
    counts = WeightsComputation(weights_count, "Counting…")
    expected = sum(parameter.numel() for parameter in side.loaded.model.parameters())
    assert counts(side) == counts(side) == expected
    assert calls == [("weights", side.loaded.facts.name)]
