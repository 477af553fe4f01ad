"""The Explore page driven by Streamlit's AppTest: every widget by key, no exception anywhere."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.plotly_arrays import plotly_array
from tests.support.sent_charts import sent_text
from vitviz.forward.attention import record_attention
from vitviz.images import builtin_photo
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.models import load_model
from vitviz.preprocess import image_view
from vitviz.text import grid_size_text, picture_size_text


@pytest.fixture
def explore() -> AppTest:
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    assert not app.exception
    return app


def _titles(app: AppTest) -> list[str]:
    return [sent_text(chart) for chart in app.get("plotly_chart")]


def _heatmap_values(app: AppTest, title_part: str) -> np.ndarray:
    """The z of the heatmap in the figure whose title contains `title_part`."""
    for spec in _titles(app):
        figure = json.loads(spec)
        if title_part in figure["layout"]["title"]["text"]:
            heatmap = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
            return plotly_array(heatmap["z"])
    raise AssertionError(f"no figure titled {title_part!r}")


@pytest.fixture(scope="module")
def cat_record():
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    return record_attention(loaded, image_view(builtin_photo("cat (chelsea)"), loaded.facts))


def test_opens_with_bundled_dinov2_and_its_facts(explore):
    caption = explore.caption[0].value
    assert "vit_small_patch14_dinov2" in caption and "bundled" in caption
    assert "16 × 16 grid (rows × columns)" in caption and "256 patches + 1 prefix = 257 tokens" in caption
    assert "12 layers × 6 heads" in caption
    assert any("no classifier head" in info.value for info in explore.info)


def test_layer_and_head_change_the_map_without_errors(explore):
    explore.slider(key="explore_layer").set_value(2).run()
    explore.selectbox(key="explore_head").set_value(4).run()
    assert not explore.exception
    assert any("Layer 2, head 4: attention from class token" in spec for spec in _titles(explore))


def test_attention_map_on_the_page_is_the_library_map(explore, cat_record):
    explore.slider(key="explore_layer").set_value(5).run()
    shown = _heatmap_values(explore, "Layer 5, mean of heads")
    np.testing.assert_allclose(shown, class_attention_map(cat_record, 5, None), rtol=1e-5)


def test_rollout_options_change_the_rollout_shown(explore, cat_record):
    explore.selectbox(key="explore_fusion").set_value("max").run()
    explore.slider(key="explore_discard").set_value(0.9).run()
    explore.slider(key="explore_start_layer").set_value(4).run()
    assert not explore.exception
    shown = _heatmap_values(explore, "max of heads, discard 90%")
    np.testing.assert_allclose(shown, rollout_relevance(cat_record, "max", 0.9, 4), rtol=1e-5)


def test_cnn_shows_predictions_and_says_it_has_no_attention(explore):
    explore.selectbox(key="explore_model").set_value("tf_efficientnet_lite0").run()
    assert not explore.exception
    assert any("is a CNN" in info.value for info in explore.info)
    bars = _titles(explore)
    assert any("tabby" in spec or "tiger cat" in spec for spec in bars)


def test_random_weights_are_labelled_untrained(explore):
    explore.selectbox(key="explore_weights").set_value("random").run()
    assert not explore.exception
    assert any("untrained" in warning.value for warning in explore.warning)


def test_hub_weights_offline_give_a_message_not_a_traceback(explore):
    explore.selectbox(key="explore_weights").set_value("hub").run()
    assert not explore.exception
    (error,) = [error.value for error in explore.error if "hub" in error.value]
    # The page says what to pick in its own menu, never a command-line flag.
    assert '"bundled (offline)" or "random (untrained' in error and "Weights menu" in error
    assert "--" not in error


def test_a_model_with_no_bundled_weights_names_the_menu_choices_not_flags(explore):
    explore.selectbox(key="explore_model").set_value("other timm model…").run()
    explore.text_input(key="explore_model_name").set_value("vit_tiny_r_s16_p8_224").run()
    explore.selectbox(key="explore_weights").set_value("bundled").run()
    assert not explore.exception
    (error,) = [error.value for error in explore.error if "No bundled weights" in error.value]
    assert "Weights menu" in error and "--" not in error


def test_unknown_model_name_gives_a_message(explore):
    explore.selectbox(key="explore_model").set_value("other timm model…").run()
    explore.text_input(key="explore_model_name").set_value("vit_tiny_patch16_999").run()
    assert not explore.exception
    assert any("no model named" in error.value for error in explore.error)


def test_a_hybrid_with_random_weights_shows_its_grid(explore):
    explore.selectbox(key="explore_model").set_value("vit_small_r26_s32_224").run()
    explore.selectbox(key="explore_weights").set_value("random").run()
    assert not explore.exception
    caption = explore.caption[0].value
    assert (
        "hybrid" in caption
        and "7 × 7 grid (rows × columns), one token per 32 × 32 px (width × height)" in caption
    )


def test_clicked_patch_map_is_that_tokens_attention(explore, cat_record):
    # A click arrives as a Plotly selection event in session state (Streamlit sends customdata
    # as a mapping); AppTest sets it directly.
    explore.session_state["explore_grid_chart"] = {
        "selection": {"points": [{"customdata": {"0": 3, "1": 7}}]}
    }
    explore.run()
    assert not explore.exception
    assert explore.radio(key="explore_query_kind").value == "clicked patch"
    shown = _heatmap_values(explore, "Layer 11, mean of heads: attention from patch (3, 7)")
    token = 1 + 3 * 16 + 7  # after the class token, row-major
    expected = cat_record.attentions[11].mean(0)[token, 1:].reshape(16, 16)
    np.testing.assert_allclose(shown, expected, rtol=1e-5)


def _figure(app: AppTest, title_part: str) -> dict:
    for spec in _titles(app):
        figure = json.loads(spec)
        if title_part in figure["layout"]["title"]["text"]:
            return figure
    raise AssertionError(f"no figure titled {title_part!r}")


def test_photo_shows_the_views_box_and_the_view_picker_changes_record_and_link(explore):
    photo = _figure(explore, "centre crop (the model's eval transform)")
    assert photo["layout"]["shapes"][0]["type"] == "rect"
    assert explore.query_params["view"] == ["crop"] or explore.query_params["view"] == "crop"
    explore.radio(key="explore_view").set_value("whole").run()
    assert not explore.exception
    whole = _figure(explore, "whole image")
    shape = whole["layout"]["shapes"][0]
    assert shape["x0"] == pytest.approx(-0.5) and shape["y0"] == pytest.approx(-0.5)
    assert "whole" in str(explore.query_params["view"])
    image = builtin_photo("cat (chelsea)")
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    expected = rollout_relevance(record_attention(loaded, image_view(image, loaded.facts, "whole")))
    np.testing.assert_allclose(_heatmap_values(explore, "Rollout of layer"), expected, rtol=1e-5)


def test_predictions_come_from_the_records_own_logits(explore):
    import torch

    from vitviz.predict import top_predictions

    explore.selectbox(key="explore_model").set_value("vit_small_r26_s32_224").run()
    explore.selectbox(key="explore_weights").set_value("random").run()
    assert not explore.exception
    from pages.views import ui

    # Random weights differ per load: the page's own record, from the cache the page shares.
    loaded = ui.cached_model("vit_small_r26_s32_224", "random", "cpu")
    photo = ui.photo_choice("cat (chelsea)")
    record = ui.cached_attention(loaded.facts.name, "random", "cpu", photo.digest, photo.image, view="crop")
    expected = top_predictions(torch.from_numpy(record.logits)[None], 5, loaded.labels)[0]
    bars = next(t for t in _figure(explore, "Top-5 predictions")["data"] if t["type"] == "bar")
    assert list(bars["y"]) == [f"{p.label} ({p.index})" for p in reversed(expected)]


def test_sinks_are_marked_and_said_and_rollout_excludes_them_by_default(explore, cat_record):
    from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement, sink_sentence

    report = detect_sinks(cat_record)
    statement = rollout_statement(plan_rollout(report, 0, "exclude"))
    rollout = _figure(explore, statement)
    np.testing.assert_allclose(_heatmap_values(explore, statement), rollout_relevance(cat_record), rtol=1e-5)
    sentence = sink_sentence(report)
    if report.patch_sinks:
        assert sentence and any(sentence in caption.value for caption in explore.caption)
        assert any(trace.get("name") == "attention sinks" for trace in rollout["data"])
    explore.toggle(key="explore_raw_rollout").set_value(True).run()
    raw_statement = rollout_statement(plan_rollout(report, 0, "raw"))
    np.testing.assert_allclose(
        _heatmap_values(explore, raw_statement), rollout_relevance(cat_record, sinks="raw"), rtol=1e-5
    )


def test_colour_bars_are_clipped_at_the_99th_percentile_unless_raw(explore, cat_record):
    figure = _figure(explore, "Layer 11, mean of heads")
    heatmap = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
    values = class_attention_map(cat_record, 11, None)
    assert heatmap["zmax"] == pytest.approx(np.percentile(values, 99), rel=1e-5)
    assert "clipped at the 99th percentile" in heatmap["colorbar"]["title"]["text"]
    explore.toggle(key="explore_raw_colours").set_value(True).run()
    heatmap = next(t for t in _figure(explore, "Layer 11")["data"] if t["type"] == "heatmap")
    assert heatmap["zmax"] == pytest.approx(values.max(), rel=1e-5)
    assert "clipped" not in heatmap["colorbar"]["title"]["text"]


def test_exported_titles_name_model_and_weights_and_no_instruction(explore):
    for spec in _titles(explore):
        title = json.loads(spec)["layout"]["title"]["text"]
        assert "click" not in title.lower()
        if "Layer" in title or "Rollout" in title or "patches" in title:
            assert "vit_small_patch14_dinov2" in title and "bundled" in title


def test_a_link_from_an_upload_says_so_and_keeps_its_patch_and_view_off_the_default_photo():
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.query_params.update({"source": "upload", "view": "whole", "query": "patch", "patch": "3,7"})
    app.run()
    assert not app.exception
    assert any("uploaded picture" in info.value for info in app.info)
    assert app.radio(key="explore_view").value == "crop"
    assert app.session_state["explore_query_patch"] is None


def test_head_picker_keeps_mean_of_heads_after_a_cnn(explore):
    assert explore.selectbox(key="explore_head").value is None
    explore.selectbox(key="explore_model").set_value("tf_efficientnet_lite0").run()
    explore.selectbox(key="explore_model").set_value("vit_small_patch14_dinov2").run()
    assert not explore.exception
    assert explore.selectbox(key="explore_head").value is None
    assert explore.selectbox(key="explore_head").format_func(None) == "mean of heads"


def test_an_untrained_headless_model_is_never_said_to_have_real_attention(explore):
    explore.selectbox(key="explore_weights").set_value("random").run()
    assert not explore.exception
    assert any("Random, untrained weights" in warning.value for warning in explore.warning)
    infos = " ".join(info.value for info in explore.info)
    assert "no classifier head" in infos
    assert "trained backbone" not in infos and "real" not in infos
    explore.selectbox(key="explore_weights").set_value("bundled").run()
    assert "Its attention below is the trained backbone's own." in " ".join(i.value for i in explore.info)


ASPECT_LABEL = "whole image, aspect kept"


def test_the_aspect_kept_view_shows_the_photos_own_grid_and_its_rollout(explore):
    assert ASPECT_LABEL in explore.radio(key="explore_view").options
    explore.radio(key="explore_view").set_value("aspect").run()
    assert not explore.exception
    image = builtin_photo("cat (chelsea)")  # 451×300: a 13×20 grid of DINOv2's 14-px patches
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    record = record_attention(loaded, image_view(image, loaded.facts, "aspect"))
    assert record.grid_size == (13, 20)
    grid = _figure(explore, "13 × 20 grid (rows × columns) of 14-px patches")
    assert grid["layout"]["title"]["text"].count(ASPECT_LABEL) == 1
    shown = _heatmap_values(explore, "Rollout of layer")
    assert shown.shape == (13, 20)
    np.testing.assert_allclose(shown, rollout_relevance(record), rtol=1e-5)
    assert any(
        "its patches on the 13 × 20 grid (rows × columns)" in caption.value for caption in explore.caption
    )
    assert "aspect" in str(explore.query_params["view"])


def test_captions_and_titles_state_the_sizes_of_the_view_shown_not_the_models_own(explore):
    """The cat is 451 px wide and 300 tall; DINOv2's own grid is 16 × 16. In the whole-image view
    the photo's title and note give width × height; in the aspect-kept view the model line gives
    the view's 13 rows × 20 columns and its input, and no longer the model's 16 × 16."""
    explore.radio(key="explore_view").set_value("whole").run()
    assert not explore.exception
    photo_size = picture_size_text(width=451, height=300)
    assert photo_size == "451 × 300 px (width × height)"
    assert _figure(explore, f"cat (chelsea), {photo_size}")
    assert any(
        f"the whole photo, {photo_size}, is resized to 224 × 224 px" in c.value for c in explore.caption
    )
    assert grid_size_text(rows=16, columns=16) in explore.caption[0].value

    explore.radio(key="explore_view").set_value("aspect").run()
    assert not explore.exception
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    seen = image_view(builtin_photo("cat (chelsea)"), loaded.facts, "aspect")
    (rows, cols), (height, width) = seen.grid_size, seen.pixels.shape[:2]
    assert (rows, cols, height, width) == (13, 20, 13 * 14, 20 * 14)  # wider than tall: fewer rows
    model_line = explore.caption[0].value
    assert "13 × 20 grid (rows × columns)" in model_line and "16 × 16" not in model_line
    assert f"{picture_size_text(width=width, height=height)} input (whole image, aspect kept)" in model_line
    assert "260 patches + 1 prefix = 261 tokens" in model_line
    assert _figure(explore, f"cat (chelsea): {grid_size_text(rows=13, columns=20)} of")


def test_a_model_that_cannot_keep_the_aspect_falls_back_to_the_crop_with_a_note(explore):
    explore.radio(key="explore_view").set_value("aspect").run()
    explore.selectbox(key="explore_model").set_value("tf_efficientnet_lite0").run()
    assert not explore.exception
    view = explore.radio(key="explore_view")
    assert view.value == "crop" and view.options == [
        "centre crop (the model's eval transform)",
        "whole image",
    ]
    notes = [
        caption.value
        for caption in explore.sidebar.caption
        if "aspect kept is not available" in caption.value
    ]
    assert len(notes) == 1 and "not a plain ViT" in notes[0]
    explore.selectbox(key="explore_model").set_value("vit_small_r26_s32_224").run()
    assert ASPECT_LABEL not in explore.radio(key="explore_view").options


def test_a_link_with_the_aspect_view_and_a_patch_of_its_grid_opens_on_both():
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.query_params.update({"view": "aspect", "query": "patch", "patch": "12,19"})
    app.run()
    assert not app.exception
    assert app.radio(key="explore_view").value == "aspect"
    assert app.session_state["explore_query_patch"] == (12, 19)  # outside DINOv2's own 16×16 grid


def test_the_image_uploader_states_and_enforces_the_decoders_limit(explore):
    from pages.views.ui import UPLOAD_LIMIT_MB
    from vitviz.images import MAX_UPLOAD_BYTES

    explore.radio(key="explore_image_source").set_value("Upload").run()
    uploader = explore.get("file_uploader")[0]
    assert UPLOAD_LIMIT_MB * 1024 * 1024 == MAX_UPLOAD_BYTES == 25 * 1024 * 1024
    assert uploader.proto.max_upload_size_mb == 25 and "(up to 25 MB)" in uploader.proto.label
    assert any("Images up to 25 MB are taken" in info.value for info in explore.info)
