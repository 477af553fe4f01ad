"""The Compare page through Streamlit's AppTest, with real weights: the models it opens on, one view for
every result, the class a map explains, the method menu, the colour scale, baselines, links."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.jobs import make_worker_silent
from tests.support.polling import wait_for
from tests.support.sent_charts import sent_spec
from vitviz.availability import Availability
from vitviz.methods import available_methods
from vitviz.models import load_model

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _compare_page(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page("pages/compare.py")
    return at.run()


def _figure(at: AppTest, key: str) -> dict:
    """The figure JSON of the chart with this key."""
    for chart in at.get("plotly_chart"):
        if chart.proto.id and key in chart.proto.id:
            return sent_spec(chart)
    raise AssertionError(f"no chart {key}")


def _array(value) -> np.ndarray:
    """A Plotly array from figure JSON: a plain list, or base64 "bdata" with a dtype and shape."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(size) for size in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


def _all_text(at: AppTest) -> str:
    parts = [
        element.value
        for kind in ("error", "warning", "info", "caption", "markdown")
        for element in at.get(kind)
    ]
    return " ".join(str(part) for part in parts)


@pytest.fixture(scope="module")
def default_page() -> AppTest:
    return _compare_page()


def test_offline_it_opens_on_the_bundled_pair_with_one_line_on_getting_a_pair(default_page):
    at = default_page
    assert not at.exception and not at.error
    assert at.selectbox(key="compare_1_model").value == "vit_small_patch14_dinov2"
    assert at.selectbox(key="compare_2_model").value == "tf_efficientnet_lite0"
    lines = [c.value for c in at.sidebar.caption if "Fine-tune page" in c.value]
    assert lines == ["Train a ViT/CNN pair on the Fine-tune page to compare two classifiers."]
    assert "--" not in _all_text(at)  # no command-line flags anywhere on the page


def test_the_map_explains_the_top_class_the_bars_show_on_the_bundled_efficientnet(default_page):
    at = default_page
    bars = _figure(at, "compare_predictions_chart")["data"][0]
    top_label = bars["y"][-1]  # bars run bottom-up: the most probable is last
    top_index = int(top_label.rsplit("(", 1)[1].rstrip(")"))
    loaded = load_model("tf_efficientnet_lite0", "bundled")
    assert top_index == 282  # tiger cat on the cat photo, in the centre crop the model is evaluated on
    titles = " ".join(a["text"] for a in _figure(at, "compare_maps_chart")["layout"]["annotations"])
    assert f"Grad-CAM · tiger cat ({top_index})" in titles
    assert loaded.labels[top_index].startswith("tiger cat")


def test_every_classifier_slot_explains_by_default_the_top_class_its_own_bars_show():
    """With the third model (a distilled DeiT with a head) on Grad-CAM, each classifier's map names the
    class on top of that model's own bars, not another model's."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/compare.py")
    at.session_state["compare_third_model"] = True
    at.session_state["compare_3_model"] = "deit_small_distilled_patch16_224"
    at.session_state["compare_3_weights"] = "random"
    at.session_state["compare_3_method"] = "gradcam"
    at.run()
    assert not at.exception and not at.error
    bars = _figure(at, "compare_predictions_chart")["data"]
    maps = _figure(at, "compare_maps_chart")["layout"]["annotations"]
    slots = {"2": "tf_efficientnet_lite0", "3": "deit_small_distilled_patch16_224"}
    assert len(bars) == len(slots)  # the headless DINOv2 has no bars
    for trace, (number, name) in zip(bars, slots.items(), strict=True):
        top = trace["y"][-1].removeprefix("✓ ")  # bars run bottom-up: the most probable is last
        label, index = top.rsplit(" (", 1)
        title = next(a["text"] for a in maps if a["text"].startswith(f"{number}. {name}"))
        assert title.endswith(f" · {label.split(',')[0]} ({index}"), (title, top)


def test_the_vit_rollout_skips_its_sink_layer_marks_the_sink_and_one_toggle_shows_the_raw_rollout(
    default_page,
):
    """The bundled DINOv2 on the cat: patch (2, 8) takes 17% of layer 0's attention; the default rollout
    starts after layer 0 and says so beside the map, the sink is marked, and the toggle multiplies it in."""
    at = default_page
    at.selectbox(key="compare_photo").set_value("cat (chelsea)").run()
    line = next(m.value for m in at.markdown if m.value.startswith("1. vit_small_patch14_dinov2:"))
    assert "**Rollout of layers 1–11 (layer 0 skipped: sink at patch (2, 8)).**" in line
    assert "Patch (2, 8) receives 17% of layer 0's attention: an attention sink." in line
    figure = _figure(at, "compare_maps_chart")
    (marks,) = [trace for trace in figure["data"] if trace.get("name") == "attention sinks"]
    assert marks["xaxis"] in (None, "x") and _array(marks["customdata"]).tolist() == [[2.0, 8.0]]
    # 224 px view, 16 × 16 grid: the cross sits in the middle of row 2, column 8.
    assert _array(marks["x"]).tolist() == [8.5 * 14 - 0.5] and _array(marks["y"]).tolist() == [2.5 * 14 - 0.5]
    sink_aware = _array(figure["data"][1]["z"])
    at.toggle(key="compare_raw_rollout").set_value(True).run()
    line = next(m.value for m in at.markdown if m.value.startswith("1. vit_small_patch14_dinov2:"))
    assert "**Raw rollout of layers 0–11, sinks included.**" in line
    raw = _array(_figure(at, "compare_maps_chart")["data"][1]["z"])
    assert raw[2, 8] == 1.0 and sink_aware[2, 8] < 1.0  # the raw map's brightest cell is the sink
    at.toggle(key="compare_raw_rollout").set_value(False).run()


def test_every_fitting_method_is_in_the_menu_and_slow_ones_say_so(default_page):
    at = default_page
    box = at.selectbox(key="compare_2_method")
    facts = load_model("tf_efficientnet_lite0", "bundled").facts
    assert len(box.options) == len(available_methods(facts))
    assert "Score-CAM (slow: runs in the background)" in box.options
    assert "Ablation-CAM (slow: runs in the background)" in box.options
    assert box.value == "gradcam"  # the default is never a slow one


def test_maps_lie_over_the_view_and_the_view_changes_every_result():
    at = _compare_page()
    maps = _figure(at, "compare_maps_chart")
    assert "clipped at the 99th percentile" in maps["layout"]["coloraxis"]["colorbar"]["title"]["text"]
    assert "centre crop" in maps["layout"]["title"]["text"]
    assert "centre crop: the model sees" in _all_text(at)
    crop_bars = _array(_figure(at, "compare_predictions_chart")["data"][0]["x"])
    at.radio(key="compare_view").set_value("whole").run()
    assert not at.exception
    whole_bars = _array(_figure(at, "compare_predictions_chart")["data"][0]["x"])
    assert not np.allclose(crop_bars, whole_bars)  # the view is in the prediction cache key
    assert "whole image" in _figure(at, "compare_maps_chart")["layout"]["title"]["text"]
    assert at.query_params["view"] in ("whole", ["whole"])  # the link follows the widgets
    at.toggle(key="compare_robust_scale").set_value(False).run()
    title = _figure(at, "compare_maps_chart")["layout"]["coloraxis"]["colorbar"]["title"]["text"]
    assert "raw" in title and "clipped at" not in title


def test_a_probe_whose_worker_died_names_its_model_and_can_run_again(tmp_path):
    """Each model's probe runs in its own worker: when one ends without a result, the line that says
    so names the model it belonged to, beside a Run again button."""
    from vitviz.jobs import cancel_job
    from vitviz.runs import background_job_count

    at = _compare_page()
    at.toggle(key="compare_run_probes").set_value(True)
    at.slider(key="compare_probe_steps").set_value(3).run()
    assert not at.exception and not at.error
    make_worker_silent(at, tmp_path / "dead")
    at.run()
    assert not at.exception and not at.error
    assert (
        "2. drop probe of tf_efficientnet_lite0 — could not compute it: the worker was silent for 600 s"
        in [caption.value for caption in at.caption]
    )
    at.button(key="compare_probe_job_again_0").click().run()
    assert not at.exception
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith("2. drop probe of tf_efficientnet_lite0")
    for folder, _ in at.session_state["background_jobs"].values():
        cancel_job(folder)
    # Cancelled workers hold the server's job slots until they exit: the other tests need them.
    wait_for(lambda: background_job_count() == 0, 120, "the cancelled workers to exit")


def test_drop_probe_faithfulness_and_road_show_the_random_order_beside_the_salient_ones(default_page):
    """On the coffee photo (espresso): the cat fills the cat photo, where salient and random orders are alike."""
    at = default_page
    at.selectbox(key="compare_photo").set_value("coffee")
    at.toggle(key="compare_run_probes").set_value(True)
    at.slider(key="compare_probe_steps").set_value(5)
    at.toggle(key="compare_run_faithfulness").set_value(True).run()
    assert not at.exception and not at.error
    # The probe and the scores come from background workers: the page shows their progress (a bar
    # with the time left and a Cancel) until they arrive.
    bars = [bar.proto.text for bar in at.get("progress")]
    assert any(text.startswith("2. drop probe of tf_efficientnet_lite0") for text in bars), bars
    wait_for(lambda: len(at.run().dataframe) >= 3, 300, "the faithfulness job's tables")
    assert not at.exception and not at.error
    probe = _figure(at, "compare_probe_chart")
    names = [trace["name"] for trace in probe["data"]]
    assert len(names) == 3 and any("drop-random" in name for name in names)  # EfficientNet only: a head
    assert all(" · area " in name for name in names)
    probe_table = at.dataframe[0].value
    areas = dict(zip(probe_table["order"], probe_table["area"], strict=True))
    assert areas["drop-salient"] < areas["drop-random"] < areas["drop-least-salient"]
    verdict = next(m.value for m in at.markdown if m.value.startswith("**tf_efficientnet_lite0**"))
    assert f"(area {areas['drop-salient']:.3f}) falls faster than the random order" in verdict
    scores = at.dataframe[1].value
    assert scores["deletion AUC ↓"][0] < scores["random-order deletion AUC"][0]
    deletion = next(
        m.value for m in at.markdown if "most salient first" in m.value and "· Grad-CAM**" in m.value
    )
    assert f"(area {scores['deletion AUC ↓'][0]:.3f}) falls faster than the random order" in deletion
    assert scores["insertion AUC ↑"][0] > scores["random-order insertion AUC"][0]
    # ROAD beside them: imputing Grad-CAM's most relevant pixels first lowers espresso below the random
    # order (measured 0.126 against 0.387), its least relevant first keeps it above (0.781).
    road = at.dataframe[2].value
    assert road["method"][0] == "Grad-CAM" and road["class"][0] == "espresso (967)"
    assert road["ROAD MoRF ↓"][0] < road["random-order ROAD"][0] < road["ROAD LeRF ↑"][0]
    line = next(
        m.value
        for m in at.markdown
        if m.value.startswith("**tf_efficientnet_lite0 · Grad-CAM**: most relevant")
    )
    assert f"(mean {road['ROAD MoRF ↓'][0]:.3f}) is below the random order" in line
    traces = [trace["name"] for trace in _figure(at, "compare_road_chart")["data"]]
    assert len(traces) == 3 and sum("random order" in name for name in traces) == 1


def test_the_headless_note_says_self_supervised_only_of_dino_weights_and_lists_what_fits(tiny_models):
    from pages.views import ui
    from pages.views.compare import ModelSlot, headless_note
    from tests.support.methods_helpers import frozen_loaded

    headless = frozen_loaded(tiny_models["vit"], "test_vit", num_classes=0)
    for name, kind in (("test_vit", ""), ("vit_small_patch14_dinov2", " (a self-supervised DINO backbone)")):
        slot = ModelSlot(1, ui.ModelChoice(name, "random", "cpu"), headless, None)
        assert headless_note(slot) == (
            f"1. {name} has no classifier head{kind}: it makes no predictions, so it has no class-specific "
            "maps, probes or faithfulness scores. Offered for it: Attention rollout, Raw attention, "
            "EigenCAM, KPCA-CAM, FEM."
        )


def test_paper_models_are_the_default_when_they_load_and_each_failure_stays_in_its_slot(monkeypatch):
    from pages.views.compare import slots as compare_slots
    from vitviz import availability

    real = availability.check_weights

    def hub_loads(model: str, weights: str) -> Availability:
        if weights == "hub":
            return Availability(model, weights, "loads", "hub: in the local cache")
        return real(model, weights)

    monkeypatch.setattr(availability, "check_weights", hub_loads)
    monkeypatch.setattr(compare_slots, "check_weights", hub_loads)
    compare_slots._opening_models.clear()
    try:
        at = _compare_page()
    finally:
        compare_slots._opening_models.clear()
    assert not at.exception
    picked = [at.selectbox(key=f"compare_{n}_model").value for n in (1, 2, 3)]
    assert picked == [
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "vit_base_r50_s16_384.orig_in21k_ft_in1k",
        "resnet50.a1_in1k",
    ]
    # No hub in tests: each load fails in its own slot, in words a browser user can act on.
    assert len(at.error) == 3
    assert all("--" not in error.value and "Weights menu" in error.value for error in at.error)


def test_a_model_that_cannot_load_is_reported_and_the_rest_still_shows():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/compare.py")
    at.session_state["compare_1_weights"] = "hub"  # no model hub in tests
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "Model 1 (vit_small_patch14_dinov2)" in at.error[0].value
    assert "--" not in at.error[0].value
    assert "tf_efficientnet_lite0" in json.dumps(_figure(at, "compare_maps_chart"))


def test_a_link_seeds_the_page_and_a_hostile_one_falls_back_with_a_note():
    at = _compare_page(image="coffee", view="whole", model2="tf_efficientnet_lite0", weights2="bundled")
    assert not at.exception
    assert (
        at.selectbox(key="compare_photo").value == "coffee" and at.radio(key="compare_view").value == "whole"
    )
    hostile = _compare_page(image="../etc/passwd", view="<script>", model1="nope", weights1="/etc/shadow")
    assert not hostile.exception
    note = " ".join(info.value for info in hostile.info)
    assert "defaults used instead of" in note and "view" in note and "weights1" in note
    assert hostile.radio(key="compare_view").value == "crop"


def test_the_raw_rollout_toggle_travels_in_the_link():
    at = _compare_page(sinks="raw")
    assert not at.exception and at.toggle(key="compare_raw_rollout").value is True
    assert at.query_params["sinks"] in ("raw", ["raw"])
    at.toggle(key="compare_raw_rollout").set_value(False).run()
    assert "sinks" not in at.query_params
    bad = _compare_page(sinks="sometimes")
    assert bad.toggle(key="compare_raw_rollout").value is False
    assert any("sinks 'sometimes' (use exclude or raw)" in info.value for info in bad.info)


def test_a_third_model_opens_on_a_trained_run_before_the_untrained_deit(tmp_path, monkeypatch):
    """Offline, beside the bundled DINOv2 and EfficientNet, "Add a third model" offers a finished run."""
    from tests.support.run_folders import hand_made_run

    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    run = hand_made_run(tmp_path, "20250101-000000-test_vit-probe-third0")
    at = _compare_page(third="1")
    assert not at.exception and not at.error
    picked = [at.selectbox(key=f"compare_{number}_model").value for number in (1, 2, 3)]
    assert picked == ["vit_small_patch14_dinov2", "tf_efficientnet_lite0", run.name]
    assert not [warning for warning in at.warning if "untrained" in warning.value]


def test_a_run_whose_config_asks_for_4096_pixels_is_refused_in_its_slot_at_once(tmp_path, monkeypatch):
    """It passes the run schema; built and run, it took Compare over 12 minutes and 3.6 GB."""
    from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run

    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    folder = hand_made_run(tmp_path, config={**TINY_RUN_CONFIG, "build_args": {"img_size": [4096, 4096]}})
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/compare.py")
    at.session_state["compare_1_model"] = folder.name
    at.run()
    assert not at.exception
    errors = [error.value for error in at.error]
    assert (
        len(errors) == 1 and "test_vit at 4096 × 4096 px (width × height) needs about 320.1 GiB" in errors[0]
    ), errors
    assert "tf_efficientnet_lite0" in json.dumps(_figure(at, "compare_maps_chart"))


def test_an_untrained_vits_nearly_uniform_rollout_is_drawn_with_a_line_saying_how_flat_it_is():
    at = _compare_page(model1="vit_tiny_patch16_224", weights1="random")
    assert not at.exception
    assert at.selectbox(key="compare_1_method").value == "rollout"
    notes = [note["text"] for note in _figure(at, "compare_maps_chart")["layout"]["annotations"]]
    flat = [note for note in notes if "nearly uniform" in note]
    assert len(flat) == 1 and "rollout: nearly uniform" in flat[0]
    percent = float(flat[0].split("at most ")[1].split("%")[0])
    assert 0.0 < percent < 10.0  # the note's number is the map's own spread, under the flat threshold


def test_attnlrp_and_legrad_draw_the_third_models_map_and_say_it_is_untrained():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/compare.py")
    at.session_state["compare_third_model"] = True
    for method, title in (("attnlrp", "AttnLRP"), ("legrad", "LeGrad")):
        at.session_state["compare_3_method"] = method
        at.run()
        assert not at.exception and not at.error
        maps = _figure(at, "compare_maps_chart")["layout"]["annotations"]
        third = next(a["text"] for a in maps if a["text"].startswith("3. deit_small_distilled_patch16_224"))
        assert "untrained" in third and f"{title} · " in third, third
