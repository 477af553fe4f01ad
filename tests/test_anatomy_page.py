"""AppTest of the Anatomy page's views 1–4 on every model family, with and without the untrained twin."""

import pytest
import safetensors.torch
import timm
import torch
from streamlit.testing.v1 import AppTest

from tests.support.anatomy_apptest import figure_titles, open_anatomy, open_tab, page_texts

TABS_A = ("Patches as words", "Filters", "Position embeddings", "Attention distance")
TIMEOUT_S = 180


def _anatomy(model: str | None = None, weights: str | None = None, path: str | None = None) -> AppTest:
    return open_anatomy(model, weights, path, timeout_s=TIMEOUT_S)


def _few_photos(at: AppTest) -> None:
    """Two photos instead of eight keep the attention-distance runs short."""
    at.multiselect(key="anatomy_distance_photos").set_value(["cat (chelsea)", "coffee"]).run()
    assert not at.exception, at.exception


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Seeded tiny models saved as checkpoint files: "trained" weights, so the twin has something to differ from."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    torch.manual_seed(1)
    for name in ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_tiny_r_s16_p8_224"):
        path = folder / f"{name}.safetensors"
        safetensors.torch.save_file(timm.create_model(name, pretrained=False).state_dict(), str(path))
        paths[name] = str(path)
    return paths


def test_bundled_dinov2_every_view_alone():
    at = _anatomy()
    assert [tab.label for tab in at.tabs][:4] == list(TABS_A)
    assert len(at.tabs) == 9
    text = page_texts(at)
    assert "`(3, 224, 224)`" in text and "`(256, 588)`" in text and "`(256, 384)`" in text
    assert "`(257, 384)`" in text and "14×14×3 = 588 values" in text
    assert any("1 prefix + 256 patches" in title for title in figure_titles(at))

    open_tab(at, "Filters")
    titles = figure_titles(at)
    assert titles[0] == "First 28 PCs of the filters · bundled (offline)"
    assert titles[1].startswith("Explained variance: ") and "in all · bundled (offline)" in titles[1]

    open_tab(at, "Position embeddings")
    assert "Position (8, 8) · bundled (offline)" in figure_titles(at)
    assert "direct neighbour for 51% of positions and within 2 steps for 100%" in page_texts(at)

    open_tab(at, "Attention distance")
    _few_photos(at)
    assert figure_titles(at) == ["Mean attention distance, 2 images · bundled (offline)"]
    assert "uniform attention: 117 px" in page_texts(at)


def test_bundled_dinov2_every_view_beside_its_untrained_twin():
    at = _anatomy()
    at.toggle(key="anatomy_compare_random").set_value(True).run()
    assert not at.exception
    titles = figure_titles(at)
    assert "Encoder input (257, 384) · bundled (offline)" in titles
    assert "Encoder input (257, 384) · random (untrained twin)" in titles

    open_tab(at, "Filters")
    titles = figure_titles(at)
    assert "First 28 PCs of the filters · random (untrained twin)" in titles
    assert sum("Explained variance" in title for title in titles) == 2

    open_tab(at, "Position embeddings")
    titles = figure_titles(at)
    assert {"Position (8, 8) · bundled (offline)", "Position (8, 8) · random (untrained twin)"} <= set(titles)

    open_tab(at, "Attention distance")
    _few_photos(at)
    assert figure_titles(at) == [
        "Mean attention distance, 2 images · bundled (offline)",
        "Mean attention distance, 2 images · random (untrained twin)",
    ]


@pytest.mark.parametrize(
    ("model", "grid", "prefix"),
    [
        ("vit_tiny_patch16_224", "14×14", "class"),
        ("deit_tiny_distilled_patch16_224", "14×14", "class, distillation"),
        ("vit_tiny_r_s16_p8_224", "7×7", "class"),
    ],
)
def test_tiny_models_every_view_with_the_twin(checkpoints, model, grid, prefix):
    at = _anatomy(model, path=checkpoints[model])
    at.toggle(key="anatomy_compare_random").set_value(True).run()
    assert not at.exception
    text = page_texts(at)
    assert f"{grid} grid" in text
    assert f"in front: {prefix}." in text
    hybrid = model.startswith("vit_tiny_r")
    if hybrid:
        assert "**CNN feature map**" in text and "cells of the CNN feature map" in text

    open_tab(at, "Filters")
    if hybrid:
        assert page_texts(at).count("is a hybrid: its tokens come from a CNN feature map") == 1
        assert len(at.get("plotly_chart")) == 0
    else:
        assert sum("PCs of the filters" in title for title in figure_titles(at)) == 2

    open_tab(at, "Position embeddings")
    assert sum(title.startswith("Position (") for title in figure_titles(at)) == 2

    open_tab(at, "Attention distance")
    _few_photos(at)
    assert len(figure_titles(at)) == 2


def test_register_model_without_class_embedding_rows():
    at = _anatomy("vit_little_patch16_reg4_gap_256", weights="random")
    text = page_texts(at)
    assert "4 learned tokens that come from no patch go in front: register 1, register 2" in text
    assert "the 256 patches only; prefix tokens get none" in text
    open_tab(at, "Position embeddings")
    assert "no rows for its prefix tokens" in page_texts(at)
    open_tab(at, "Attention distance")
    at.multiselect(key="anatomy_distance_photos").set_value(["coffee"]).run()
    assert not at.exception
    assert figure_titles(at) == ["Mean attention distance, 1 image · random (untrained)"]


def test_cnn_gets_a_message_in_every_view_not_an_exception():
    at = _anatomy("tf_efficientnet_lite0")  # the bundled CNN, through the "other model" box
    at.toggle(key="anatomy_compare_random").set_value(True).run()
    assert not at.exception
    for tab in TABS_A:
        open_tab(at, tab)
        assert "Does not apply:" in page_texts(at), tab
        assert len(at.get("plotly_chart")) == 0, tab


def test_rotary_model_says_it_has_no_position_table():
    at = _anatomy("vit_medium_patch16_rope_reg1_gap_256", weights="random")
    open_tab(at, "Position embeddings")
    assert "has no absolute position embedding" in page_texts(at)


def test_no_photos_gives_a_message():
    at = _anatomy()
    open_tab(at, "Attention distance")
    at.multiselect(key="anatomy_distance_photos").set_value([]).run()
    assert not at.exception
    assert "Pick at least one built-in photo" in page_texts(at)
