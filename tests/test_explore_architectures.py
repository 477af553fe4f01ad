"""Explore on models without one grid of global attention: the registry's attention maps they allow, and why not the others."""

import functools

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.plotly_arrays import plotly_array
from tests.support.sent_charts import sent_spec
from vitviz.images import builtin_photo
from vitviz.methods import METHODS, ExplanationResult, explanation_map
from vitviz.models import LoadedModel, load_model
from vitviz.preprocess import image_view

SWIN, CAIT = "swin_tiny_patch4_window7_224", "cait_xxs24_224"
MAXVIT, MOBILEVIT = "maxvit_rmlp_pico_rw_256", "mobilevit_xxs"


def _explore_by_link(model: str, **params: str) -> AppTest:
    """Explore opened by a link naming a timm model with (seeded) random weights, and `params`."""
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.query_params.update({"model": model, "weights": "random", **params})
    app.run()
    assert not app.exception
    return app


def _figures(app: AppTest) -> list[dict]:
    return [sent_spec(chart) for chart in app.get("plotly_chart")]


def _map_shown(app: AppTest, title_start: str) -> tuple[str, np.ndarray]:
    """The title and heatmap values of the one figure whose title starts with `title_start`."""
    (figure,) = [
        figure for figure in _figures(app) if figure["layout"]["title"]["text"].startswith(title_start)
    ]
    heatmap = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
    return figure["layout"]["title"]["text"], plotly_array(heatmap["z"])


@functools.cache
def _random_model(model: str) -> LoadedModel:
    """The seeded random model the page loads from the same link, loaded once per test run."""
    return load_model(model, "random")


def _library_map(model: str, method: str, **options: object) -> ExplanationResult:
    loaded = _random_model(model)
    return explanation_map(
        loaded, image_view(builtin_photo("cat (chelsea)"), loaded.facts), method, **options
    )


@pytest.fixture(scope="module")
def swin_page() -> AppTest:
    return _explore_by_link(SWIN)


@pytest.fixture(scope="module")
def cait_page() -> AppTest:
    return _explore_by_link(CAIT)


def test_swin_shows_its_window_attention_and_says_why_not_rollout(swin_page):
    expected = _library_map(SWIN, "attention")
    title, shown = _map_shown(swin_page, "Raw attention")
    assert "inside 7×7 windows on its 56×56 grid" in title and expected.source in title
    assert shown.shape == (56, 56)
    np.testing.assert_allclose(shown, expected.values, rtol=1e-4, atol=1e-6)
    # Each window's cells sum to 1 (mean over its 49 queries of rows that sum to 1).
    windows = shown.reshape(8, 7, 8, 7).sum(axis=(1, 3))
    np.testing.assert_allclose(windows, 1.0, atol=1e-4)
    refusal = METHODS["rollout"].unavailable_reason(_random_model(SWIN).facts)
    assert refusal is not None and "window by window" in refusal
    assert any(info.value == f"Not shown: {refusal}" for info in swin_page.info)
    # The map's own note (nearly flat at random weights) is printed with it.
    assert expected.note is not None and any(caption.value == expected.note for caption in swin_page.caption)
    # The predictions stay, and the page never offers the global-attention sliders.
    assert any(
        "Top-5 predictions (untrained)" in figure["layout"]["title"]["text"] for figure in _figures(swin_page)
    )
    assert not [slider for slider in swin_page.slider if slider.key == "explore_layer"]


def test_cait_shows_class_attention_and_rollout_through_both_kinds_of_layer(cait_page):
    for method, title_start in (("attention", "Raw attention"), ("rollout", "Attention rollout")):
        expected = _library_map(CAIT, method)
        title, shown = _map_shown(cait_page, title_start)
        assert expected.source in title
        np.testing.assert_allclose(shown, expected.values, rtol=1e-4, atol=1e-6)
    assert "class-attention layer 1" in _map_shown(cait_page, "Raw attention")[0]
    # The model's line counts both kinds of layer, as cait_xxs24_224 is built: 24 + 2, 4 heads each.
    assert "24 self-attention layers + 2 class-attention layers × 4 heads" in cait_page.caption[0].value
    assert (
        "24 self-attention layers, then 2 class-attention rows"
        in _map_shown(cait_page, "Attention rollout")[0]
    )
    assert not [info for info in cait_page.info if info.value.startswith("Not shown")]


@pytest.mark.parametrize(
    ("model", "heading", "layers"),
    [
        (MAXVIT, "Raw attention, window by window and grid by grid", (0, 1)),
        (MOBILEVIT, "Raw attention, folded back onto each block's map", (0, 2)),
    ],
)
def test_maxvit_and_mobilevit_show_each_attention_layer_on_its_own_map(model, heading, layers):
    app = _explore_by_link(model)
    assert any(subheader.value == heading for subheader in app.subheader)
    refusal = METHODS["rollout"].unavailable_reason(_random_model(model).facts)
    assert any(info.value == f"Not shown: {refusal}" for info in app.info)
    for layer in layers:
        if layer:
            app.selectbox(key="explore_partitioned_layer").set_value(layer).run()
            assert not app.exception
        expected = _library_map(model, "attention", layer=layer)
        title, shown = _map_shown(app, "Raw attention")
        assert expected.source in title and f"attention layer {layer} (" in title
        assert shown.shape == expected.grid_size
        np.testing.assert_allclose(shown, expected.values, rtol=1e-4, atol=1e-6)
        assert any(caption.value == f"Read from {expected.source}." for caption in app.caption)
    first, last = (_library_map(model, "attention", layer=layer) for layer in layers)
    if model == MAXVIT:  # the first block's window attention, then its grid attention, on one map
        assert first.grid_size == last.grid_size and "dilated" in last.source
    else:  # the first MobileViT block's map, then the second block's, half as fine
        assert last.grid_size == (first.grid_size[0] // 2, first.grid_size[1] // 2)


def test_a_link_keeps_the_attention_layer_of_a_model_read_layer_by_layer():
    """MobileViT's layer picker writes its layer into the link, and a link with a layer opens on it
    (the map of that layer, drawn); a layer the model does not have is refused with a note."""
    app = _explore_by_link(MOBILEVIT)
    app.selectbox(key="explore_partitioned_layer").set_value(2).run()
    assert not app.exception
    assert app.query_params["layer"] in ("2", ["2"])
    opened = _explore_by_link(MOBILEVIT, layer="2")
    assert opened.selectbox(key="explore_partitioned_layer").value == 2
    title, shown = _map_shown(opened, "Raw attention")
    assert "attention layer 2 (" in title
    assert shown.shape == _library_map(MOBILEVIT, "attention", layer=2).grid_size
    layers = _random_model(MOBILEVIT).facts.partitioned_layers
    too_far = _explore_by_link(MOBILEVIT, layer=str(layers))
    assert too_far.selectbox(key="explore_partitioned_layer").value == 0
    assert any(
        f"layer='{layers}' (this model has layers 0–{layers - 1})" in info.value for info in too_far.info
    ), [info.value for info in too_far.info]


def test_maps_follow_the_opacity_and_the_link_keeps_the_model(swin_page):
    swin_page.slider(key="explore_opacity").set_value(0.3).run()
    assert not swin_page.exception
    figure = next(
        figure for figure in _figures(swin_page) if figure["layout"]["title"]["text"].startswith("Raw")
    )
    heatmap = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
    assert heatmap["opacity"] == pytest.approx(0.3)
    assert SWIN in str(swin_page.query_params["model"]) and "random" in str(swin_page.query_params["weights"])


def test_a_cnn_keeps_its_one_line_and_no_attention_maps():
    app = _explore_by_link("resnet18")
    assert any("is a CNN" in info.value for info in app.info)
    titles = [figure["layout"]["title"]["text"] for figure in _figures(app)]
    assert not [title for title in titles if "attention" in title.lower() or "rollout" in title.lower()]
