"""The Present page driven by AppTest: every slide forward and back, light and dark, links and uploads."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.sent_charts import sent_spec
from tests.support.slides import SLIDE_TITLES
from vitviz.figures.story import SLIDE_KEYS
from vitviz.preprocess import image_view


def _present(query: dict[str, str] | None = None) -> AppTest:
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for name, value in (query or {}).items():
        app.query_params[name] = value
    app.switch_page("pages/present.py")
    app.run()
    assert not app.exception
    return app


def _title(app: AppTest) -> str:
    heading = next(md.value for md in app.markdown if 'class="vv-title"' in md.value)
    return heading.split(">", 1)[1].split("<", 1)[0]


def _caption(app: AppTest) -> str:
    return next(md.value for md in app.markdown if 'class="vv-caption"' in md.value)


def _figures(app: AppTest) -> list[dict]:
    return [sent_spec(chart) for chart in app.get("plotly_chart")]


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_steps_through_every_slide_forward_and_back(dark):
    app = _present()
    app.toggle(key="present_dark").set_value(dark).run()
    template_background = "#0e1117" if dark else "#ffffff"
    seen = []
    for index in range(len(SLIDE_KEYS)):
        assert not app.exception, f"slide {index + 1}"
        seen.append(_title(app))
        figures = _figures(app)
        assert figures, f"slide {index + 1} shows no figure"
        assert all(figure["layout"]["paper_bgcolor"] == template_background for figure in figures)
        assert app.query_params["slide"] == str(index + 1)
        if index < len(SLIDE_KEYS) - 1:
            app.button(key="present_next").click().run()
    assert seen == SLIDE_TITLES
    assert app.button(key="present_next").disabled
    for index in reversed(range(len(SLIDE_KEYS) - 1)):
        app.button(key="present_previous").click().run()
        assert not app.exception
        assert _title(app) == SLIDE_TITLES[index]
    assert app.button(key="present_previous").disabled


def test_captions_are_the_models_facts():
    app = _present({"slide": "2"})
    assert (
        "224 × 224 px (width × height) image → 256 patches of 14 × 14 px (width × height), laid out on the 16 × 16 grid (rows × columns)."
        in _caption(app)
    )


def test_attention_slide_animates_every_layer():
    app = _present({"slide": "4"})
    (figure,) = _figures(app)
    assert [frame["name"] for frame in figure["frames"]] == [str(layer) for layer in range(12)]
    assert figure["layout"]["updatemenus"][0]["buttons"][0]["label"] == "▶ Play"


def test_compare_slide_shows_the_cnn_top5_and_says_dinov2_has_no_head():
    app = _present({"slide": "7", "image": "coffee"})
    titles = [figure["layout"]["title"]["text"] for figure in _figures(app)]
    assert titles[0].startswith("ViT · vit_small_patch14_dinov2: rollout<br><sup>Rollout of layers")
    assert titles[1].startswith("CNN · tf_efficientnet_lite0: top-5 predictions")
    assert (
        "vit_small_patch14_dinov2 · bundled" in titles[0] and "tf_efficientnet_lite0 · bundled" in titles[1]
    )
    bars = _figures(app)[1]["data"][0]
    assert bars["y"][-1] == "espresso (967)"  # most probable on top
    assert any("no classifier head" in info.value for info in app.info)


def test_a_link_opens_its_slide_theme_photo_and_presentation_mode():
    app = _present({"slide": "2", "theme": "dark", "image": "astronaut", "present": "1"})
    assert _title(app) == "Cut into patches"
    assert app.toggle(key="present_dark").value and app.toggle(key="present_fullscreen").value
    assert _figures(app)[0]["layout"]["title"]["text"].startswith(
        "astronaut: 16 × 16 grid (rows × columns) of 14-px patches"
    )
    assert not app.get("download_button")  # presentation mode hides the download controls


def test_bad_link_values_fall_back_with_a_note():
    app = _present({"slide": "99", "image": "dog", "model": "resnet50"})
    assert _title(app) == SLIDE_TITLES[0]
    (note,) = [info.value for info in app.info]
    assert "slide='99'" in note and "image='dog'" in note and "model='resnet50'" in note


def test_random_weights_are_labelled_untrained():
    app = _present()
    app.selectbox(key="present_weights_widget").set_value("random").run()
    assert not app.exception
    assert any("untrained" in warning.value for warning in app.warning)
    app.button(key="present_next").click().run()
    assert "random, untrained weights" in _caption(app)


def test_photo_choice_survives_leaving_the_first_slide():
    app = _present()
    app.selectbox(key="present_photo_widget").set_value("rocket").run()
    app.button(key="present_next").click().run()
    app.button(key="present_previous").click().run()
    assert app.selectbox(key="present_photo_widget").value == "rocket"
    assert "rocket: a" in _caption(app)


def test_unavailable_weights_fall_back_to_the_bundled_model_with_a_message():
    app = _present()
    app.selectbox(key="present_model_widget").set_value("vit_base_patch16_224.augreg2_in21k_ft_in1k").run()
    app.selectbox(key="present_weights_widget").set_value("hub").run()
    assert not app.exception
    assert any(
        "hub" in error.value and "Showing vit_small_patch14_dinov2" in error.value for error in app.error
    )
    assert app.selectbox(key="present_model_widget").value == "vit_small_patch14_dinov2"
    assert "vit_small_patch14_dinov2 reads every image" in _caption(app)


def _record_and_sinks():
    from vitviz.forward.attention import record_attention
    from vitviz.images import builtin_photo
    from vitviz.maths.sinks import detect_sinks
    from vitviz.models import load_model

    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    record = record_attention(loaded, image_view(builtin_photo("cat (chelsea)"), loaded.facts))
    return record, detect_sinks(record)


def test_attention_slide_opens_on_a_structured_layer_and_says_why():
    import numpy as np

    from vitviz.figures.story import opening_layer
    from vitviz.maths.attention import class_attention_map

    record, report = _record_and_sinks()
    maps = np.stack([class_attention_map(record, layer, None) for layer in range(12)])
    expected = opening_layer(maps, report.sink_layers)
    assert expected.layer not in report.sink_layers
    app = _present({"slide": "4"})
    (figure,) = _figures(app)
    assert figure["layout"]["sliders"][0]["active"] == expected.layer
    assert f"· layer {expected.layer}" in figure["layout"]["title"]["text"]
    assert any(expected.caption() == caption.value for caption in app.caption)


def test_rollout_slide_is_sink_aware_and_states_what_it_multiplied():
    from vitviz.maths.sinks import plan_rollout, rollout_statement, sink_sentence

    _, report = _record_and_sinks()
    app = _present({"slide": "5"})
    (figure,) = _figures(app)
    statement = rollout_statement(plan_rollout(report, 0, "exclude"))
    assert statement in figure["layout"]["title"]["text"]
    heatmap = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
    assert "clipped at the 99th percentile" in heatmap["colorbar"]["title"]["text"]
    if report.patch_sinks:
        assert any(trace.get("name") == "attention sinks" for trace in figure["data"])
        assert any(sink_sentence(report) in caption.value for caption in app.caption)
        marks = "✕ marks the sink." if len(report.patch_sinks) == 1 else "✕ marks the sinks."
        assert any(caption.value == f"{marks} {sink_sentence(report)}" for caption in app.caption)


def test_output_token_slide_shows_a_readable_few_numbers_and_the_norm():
    app = _present({"slide": "6"})
    (figure,) = _figures(app)
    bars = figure["data"][0]
    assert len(bars["y"]) == 12 and all(label.startswith("dimension ") for label in bars["y"])
    assert any("norm" in caption.value and "384 numbers" in caption.value for caption in app.caption)


def test_no_exported_slide_title_carries_a_ui_instruction():
    for slide in range(1, len(SLIDE_KEYS) + 1):
        app = _present({"slide": str(slide)})
        for figure in _figures(app):
            title = figure["layout"]["title"]["text"]
            assert "click" not in title.lower() and "bundled" in title


def _view_box(app: AppTest) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the view's box on the first slide's photo, in photo pixels."""
    (figure,) = _figures(app)
    (box,) = figure["layout"]["shapes"]
    return box["x0"] + 0.5, box["y0"] + 0.5, box["x1"] + 0.5, box["y1"] + 0.5


def test_the_view_picker_boxes_the_view_on_the_whole_photo_and_outlives_the_tokens_slide():
    from vitviz.images import builtin_photo
    from vitviz.models import load_model
    from vitviz.preprocess import image_view

    photo = builtin_photo("cat (chelsea)")
    facts = load_model("vit_small_patch14_dinov2", "bundled").facts
    app = _present()
    assert app.radio(key="present_view").value == "crop"
    assert _view_box(app) == pytest.approx(image_view(photo, facts, "crop").box)
    assert _view_box(app)[2] - _view_box(app)[0] < photo.width  # the crop leaves the sides out
    app.radio(key="present_view").set_value("whole").run()
    assert _view_box(app) == pytest.approx((0, 0, photo.width, photo.height))
    app.button(key="present_next").click().run()
    app.button(key="present_next").click().run()
    assert _title(app) == SLIDE_TITLES[2] and not app.get("radio")  # the tokens slide draws no image
    app.button(key="present_next").click().run()
    assert app.radio(key="present_view").value == "whole" and app.query_params["view"] == "whole"


def test_a_link_to_a_view_the_story_does_not_offer_opens_on_the_centre_crop():
    app = _present({"slide": "5", "view": "aspect"})
    assert app.radio(key="present_view").value == "crop" and app.query_params["view"] == "crop"
    assert app.radio(key="present_view").options == [
        "centre crop (the model's eval transform)",
        "whole image",
    ]
