"""The Explore page driven by Streamlit's AppTest: every widget by key, no exception anywhere."""

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from vitviz.images import builtin_photo
from vitviz.maths.attention import class_attention_map, record_attention, rollout_relevance
from vitviz.models import load_model


@pytest.fixture
def explore() -> AppTest:
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    assert not app.exception
    return app


def _titles(app: AppTest) -> list[str]:
    return [chart.proto.spec for chart in app.get("plotly_chart")]


def _decode_array(value) -> np.ndarray:
    """Plotly writes numpy arrays as {"dtype", "bdata" (base64), "shape"}; lists stay lists."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = tuple(int(n) for n in str(value["shape"]).split(","))
        return flat.reshape(shape).astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def _heatmap_values(app: AppTest, title_part: str) -> np.ndarray:
    """The z of the heatmap in the figure whose title contains `title_part`."""
    for spec in _titles(app):
        figure = json.loads(spec)
        if title_part in figure["layout"]["title"]["text"]:
            heatmap = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
            return _decode_array(heatmap["z"])
    raise AssertionError(f"no figure titled {title_part!r}")


@pytest.fixture(scope="module")
def cat_record():
    return record_attention(load_model("vit_small_patch14_dinov2", "bundled"), builtin_photo("cat (chelsea)"))


def test_opens_with_bundled_dinov2_and_its_facts(explore):
    caption = explore.caption[0].value
    assert "vit_small_patch14_dinov2" in caption and "bundled" in caption
    assert "16×16 grid" in caption and "256 patches + 1 prefix = 257 tokens" in caption
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
    shown = _heatmap_values(explore, "Rollout: max of heads, discard 90%, layers 4–11")
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
    assert any("hub" in error.value for error in explore.error)


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
    assert "hybrid" in caption and "7×7 grid, one token per 32×32 px" in caption


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
