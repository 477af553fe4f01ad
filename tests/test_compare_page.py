"""The Compare page through Streamlit's AppTest: defaults, a third model, a chosen class, probes, errors."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _compare_page() -> AppTest:
    """The page on the coffee photo (espresso for EfficientNet: a clear object on a table)."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/compare.py")
    at.run()
    return at.selectbox(key="compare_photo").set_value("coffee").run()


def _chart_text(at: AppTest) -> str:
    """Every Plotly chart's figure JSON, for checking titles and labels."""
    return " ".join(chart.proto.spec for chart in at.get("plotly_chart"))


def _figure(at: AppTest, index: int) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _array(value) -> np.ndarray:
    """A Plotly array from figure JSON: a plain list, or base64 "bdata" with a dtype and shape."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(size) for size in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


@pytest.fixture(scope="module")
def default_page() -> AppTest:
    return _compare_page()


def test_default_page_compares_a_headless_vit_with_a_cnn(default_page):
    at = default_page
    assert not at.exception
    assert not at.error
    assert "no classifier head" in at.info[0].value and "rollout" in at.info[0].value
    methods = {box.label: box.options for box in at.selectbox if box.label.startswith("Method for")}
    assert methods["Method for vit_small_patch14_dinov2"] == ["Attention rollout", "Raw attention"]
    assert methods["Method for tf_efficientnet_lite0"] == [
        "Grad-CAM",
        "Grad-CAM++",
        "Integrated Gradients",
        "Occlusion",
    ]
    maps = _figure(at, 1)
    heatmaps = [trace for trace in maps["data"] if trace["type"] == "heatmap"]
    assert len(heatmaps) == 2 and {trace["coloraxis"] for trace in heatmaps} == {"coloraxis"}
    assert maps["layout"]["coloraxis"]["cmin"] == 0 and maps["layout"]["coloraxis"]["cmax"] == 1
    # DINOv2's 16×16 tokens and EfficientNet's 7×7 features, both scaled into [0, 1].
    assert _array(heatmaps[0]["z"]).shape == (16, 16) and _array(heatmaps[1]["z"]).shape == (7, 7)
    assert all(_array(trace["z"]).min() >= 0.0 and _array(trace["z"]).max() == 1.0 for trace in heatmaps)
    titles = " ".join(annotation["text"] for annotation in maps["layout"]["annotations"])
    assert "Attention rollout" in titles and "Grad-CAM · espresso (967)" in titles


def test_third_model_chosen_class_and_chefer(default_page):
    at = default_page
    at.toggle(key="compare_third_model").set_value(True).run()
    assert not at.exception
    assert any("deit_small_distilled_patch16_224: random, untrained" in w.value for w in at.warning)
    at.selectbox(key="compare_3_method").set_value("chefer").run()
    at.selectbox(key="compare_class").set_value(968).run()  # cup, in EfficientNet's top-5
    assert not at.exception and not at.error
    titles = " ".join(a["text"] for a in _figure(at, 1)["layout"]["annotations"])
    assert "Grad-CAM · cup (968)" in titles
    assert "deit_small_distilled_patch16_224 (untrained)<br>Chefer et al. relevance · cup (968)" in titles
    predictions = _figure(at, 0)
    assert len([trace for trace in predictions["data"] if trace["type"] == "bar"]) == 2


def test_probes_and_faithfulness_for_the_models_with_a_head(default_page):
    at = default_page
    at.toggle(key="compare_run_probes").set_value(True)
    at.selectbox(key="compare_probe_kind").set_value("drop-random")
    at.slider(key="compare_probe_steps").set_value(5)
    at.toggle(key="compare_run_faithfulness").set_value(True).run()
    assert not at.exception and not at.error
    probe = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert len(probe["data"]) == 2  # EfficientNet and the untrained DeiT; DINOv2 has no head
    np.testing.assert_allclose(_array(probe["data"][0]["x"]), [0.0, 0.25, 0.5, 0.75, 1.0])
    table = at.dataframe[0].value
    assert list(table["model"]) == ["tf_efficientnet_lite0", "deit_small_distilled_patch16_224 (untrained)"]
    assert (table["deletion AUC ↓"] >= 0).all()


def test_a_model_that_cannot_load_is_reported_and_the_rest_still_shows():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/compare.py")
    at.session_state["compare_1_weights"] = "hub"  # no model hub in tests: the download fails
    at.run()
    assert not at.exception
    assert "Model 1 (vit_small_patch14_dinov2)" in at.error[0].value
    assert "tf_efficientnet_lite0" in _chart_text(at)
