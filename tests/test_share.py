"""Shareable links: URL query parameters to a view state and back, with notes for what is ignored."""

from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.sent_charts import sent_spec, sent_text
from vitviz.share import TimmModelNames, ViewLimits, ViewState, parse_view_state, view_state_params

PHOTOS = ("cat (chelsea)", "coffee", "astronaut")
LIMITS = ViewLimits(
    models={"vit_small_patch14_dinov2", "tf_efficientnet_lite0", "vit_base_patch16_224"},
    weights=("bundled", "hub", "random"),
    images=PHOTOS,
    default_model="vit_small_patch14_dinov2",
)
DINO_LIMITS = replace(LIMITS, num_layers=12, num_heads=6, grid_size=(16, 16))


def test_no_parameters_give_the_defaults_and_no_notes():
    state, notes = parse_view_state({}, DINO_LIMITS)
    assert state == ViewState(model="vit_small_patch14_dinov2", weights="bundled")
    assert notes == []


def test_every_parameter_is_read():
    params = {
        "model": "vit_base_patch16_224",
        "weights": "random",
        "image": "coffee",
        "layer": "3",
        "head": "2",
        "query": "patch",
        "patch": "5,9",
        "fusion": "max",
        "discard": "0.9",
        "start": "4",
        "opacity": "0.35",
        "sinks": "raw",
    }
    state, notes = parse_view_state(params, DINO_LIMITS)
    assert notes == []
    assert state == ViewState(
        model="vit_base_patch16_224",
        weights="random",
        image="coffee",
        layer=3,
        head=2,
        query="patch",
        patch=(5, 9),
        fusion="max",
        discard=0.9,
        start_layer=4,
        opacity=0.35,
        sinks="raw",
    )


def test_params_round_trip_through_the_url():
    state = ViewState(
        "vit_small_patch14_dinov2", "hub", "astronaut", 7, None, "class", (0, 15), "min", 0.3, 2, 0.6
    )
    params = view_state_params(state)
    assert params["head"] == "mean" and params["discard"] == "0.3" and params["patch"] == "0,15"
    assert all(isinstance(value, str) for value in params.values())
    assert parse_view_state(params, DINO_LIMITS) == (state, [])


def test_the_raw_rollout_toggle_is_in_the_link_only_when_on():
    raw = ViewState("vit_small_patch14_dinov2", "bundled", sinks="raw")
    assert view_state_params(raw)["sinks"] == "raw"
    assert parse_view_state(view_state_params(raw), DINO_LIMITS) == (raw, [])
    assert "sinks" not in view_state_params(replace(raw, sinks="exclude"))
    assert "sinks" not in view_state_params(raw, attention=False)  # a CNN has no rollout


def test_slider_float_noise_does_not_reach_the_url():
    params = view_state_params(ViewState("m", "bundled", opacity=0.1 + 0.2, discard=0.30000000000000004))
    assert params["opacity"] == "0.3" and params["discard"] == "0.3"


def test_unknown_model_weights_and_photo_fall_back_with_one_note_each():
    params = {"model": "vit_gigantic", "weights": "/etc/passwd", "image": "dog", "layer": "2"}
    state, notes = parse_view_state(params, DINO_LIMITS)
    assert (state.model, state.weights, state.image, state.layer) == (
        "vit_small_patch14_dinov2",
        "bundled",
        None,
        2,
    )
    assert len(notes) == 3
    assert notes[0].startswith("model='vit_gigantic'") and "no such model" in notes[0]
    assert notes[1].startswith("weights='/etc/passwd'")
    assert notes[2].startswith("image='dog'")


def test_out_of_range_layer_head_and_patch_fall_back_once_the_model_is_known():
    params = {"layer": "12", "head": "6", "patch": "16,0", "start": "99"}
    state, notes = parse_view_state(params, DINO_LIMITS)
    assert (state.layer, state.head, state.patch, state.start_layer) == (None, None, None, 0)
    assert notes == [
        "layer='12' (this model has layers 0–11)",
        "head='6' (this model has heads 0–5)",
        "patch='16,0' (outside the 16 × 16 grid (rows × columns))",
        "start='99' (this model has layers 0–11)",
    ]


def test_before_the_model_is_known_only_the_form_is_checked():
    state, notes = parse_view_state({"layer": "40", "head": "x", "patch": "3;4"}, LIMITS)
    assert state.layer == 40 and state.head is None and state.patch is None
    assert [note.split("=")[0] for note in notes] == ["head", "patch"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("opacity", "2"),
        ("opacity", "nan"),
        ("discard", "0.99"),
        ("fusion", "median"),
        ("query", "cls"),
        ("layer", "-1"),
        ("sinks", "none"),
    ],
)
def test_bad_values_fall_back_to_the_default(name, value):
    state, notes = parse_view_state({name: value}, DINO_LIMITS)
    assert state == ViewState(model="vit_small_patch14_dinov2", weights="bundled")
    assert len(notes) == 1 and notes[0].startswith(f"{name}={value!r}")


def test_a_note_quotes_at_most_a_line_of_a_long_value():
    """A 5,000-character value is quoted by its first 39 characters: eleven of them made a 55 kB note."""
    params = dict.fromkeys(
        (
            "model",
            "weights",
            "image",
            "layer",
            "head",
            "query",
            "patch",
            "fusion",
            "discard",
            "start",
            "opacity",
        ),
        "x" * 5000,
    )
    notes = parse_view_state(params, DINO_LIMITS)[1]
    assert len(notes) == 11
    assert notes[0] == "model=" + repr("x" * 39) + "… (no such model)"
    assert max(len(note) for note in notes) < 100


def test_photos_can_be_named_by_their_slug():
    state, notes = parse_view_state({"image": "cat-chelsea"}, LIMITS)
    assert state.image == "cat (chelsea)" and notes == []


def test_a_checkpoint_path_and_a_cnn_leave_their_parameters_out():
    state = ViewState("tf_efficientnet_lite0", "/models/run.safetensors", "coffee", layer=3, opacity=0.5)
    assert view_state_params(state, attention=False) == {
        "model": "tf_efficientnet_lite0",
        "image": "coffee",
        "opacity": "0.5",
    }


def test_other_parameters_are_left_to_their_pages():
    assert parse_view_state({"present": "1", "slide": "3"}, LIMITS)[1] == []


def test_timm_model_names_are_known_without_building_a_model():
    names = TimmModelNames()
    assert "vit_base_patch16_224" in names and "resnet50" in names
    assert "vit_gigantic" not in names and "" not in names


def _explore(query: dict[str, str]) -> AppTest:
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for name, value in query.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception
    return app


def _chart_titles(app) -> list[str]:
    """Each chart's title, first line only (a second line names model, weights, photo and view)."""
    return [sent_spec(chart)["layout"]["title"]["text"].split("<br>")[0] for chart in app.get("plotly_chart")]


def test_explore_opens_the_view_a_link_names():
    app = _explore(
        {"image": "coffee", "layer": "3", "head": "2", "query": "patch", "patch": "4,5", "start": "2"}
    )
    titles = _chart_titles(app)  # the photo with the view's box first, then the three maps
    assert titles[0] == "coffee, 600 × 400 px (width × height)"
    assert titles[1] == "coffee: 16 × 16 grid (rows × columns) of 14-px patches"
    assert titles[2] == "Layer 3, head 2: attention from patch (4, 5)"
    assert (
        titles[3] == "Rollout of layers 2–11; no attention sinks in these layers; mean of heads, discard 0%"
    )
    assert not [info for info in app.info if "link asked" in info.value]


def test_explore_writes_its_state_into_the_url_as_widgets_change():
    app = _explore({})
    assert app.query_params["layer"] == "11" and app.query_params["image"] == "cat (chelsea)"
    app.slider(key="explore_layer").set_value(6).run()
    app.selectbox(key="explore_fusion").set_value("min").run()
    assert app.query_params["layer"] == "6" and app.query_params["fusion"] == "min"
    app.selectbox(key="explore_model").set_value("tf_efficientnet_lite0").run()
    assert app.query_params["model"] == "tf_efficientnet_lite0"
    assert "layer" not in app.query_params  # a CNN has no layers to share


def test_explore_ignores_a_bad_link_with_one_note():
    app = _explore({"layer": "12", "head": "9", "weights": "/etc/passwd"})
    (note,) = [info.value for info in app.info if "link asked" in info.value]
    assert "layer='12'" in note and "head='9'" in note and "weights='/etc/passwd'" in note
    assert _chart_titles(app)[2] == "Layer 11, mean of heads: attention from class token"


def test_explore_link_carries_the_raw_rollout_toggle():
    app = _explore({"sinks": "raw"})
    assert app.toggle(key="explore_raw_rollout").value is True
    assert _chart_titles(app)[3].startswith("Raw rollout of layers 0–11, sinks included")
    assert app.query_params["sinks"] in ("raw", ["raw"])
    app.toggle(key="explore_raw_rollout").set_value(False).run()
    assert _chart_titles(app)[3].startswith("Rollout of layers 1–11 (layer 0 skipped")
    assert "sinks" not in app.query_params


def test_explore_quotes_a_5000_character_link_in_a_short_note():
    app = _explore(dict.fromkeys(("model", "weights", "layer", "head", "patch", "fusion"), "9" * 5000))
    (note,) = [info.value for info in app.info if "link asked" in info.value]
    assert len(note) < 1000, len(note)  # it was 30 kB: every value quoted whole


def test_explore_link_carries_the_raw_colour_values_toggle():
    def clipped_bars(app) -> int:
        return sum("clipped at the 99th percentile" in sent_text(chart) for chart in app.get("plotly_chart"))

    app = _explore({"colours": "raw"})
    assert app.toggle(key="explore_raw_colours").value is True
    assert app.query_params["colours"] in ("raw", ["raw"]) and clipped_bars(app) == 0
    app.toggle(key="explore_raw_colours").set_value(False).run()
    assert "colours" not in app.query_params and clipped_bars(app) > 0
    bad = _explore({"colours": "loud"})
    assert bad.toggle(key="explore_raw_colours").value is False
    assert any("colours='loud' (use clipped or raw)" in info.value for info in bad.info)


def test_the_colour_range_survives_a_round_trip_and_a_bad_value_is_noted():
    limits = ViewLimits(
        models=TimmModelNames(), weights=("bundled",), images=(), default_model="vit_tiny_patch16_224"
    )
    state, notes = parse_view_state({"colours": "raw"}, limits)
    assert state.colours == "raw" and not notes
    assert parse_view_state(view_state_params(state), limits)[0] == state
    assert "colours" not in view_state_params(parse_view_state({}, limits)[0])
