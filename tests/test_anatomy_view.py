"""AppTest of the Anatomy page's one view: every per-image tab computes on the picked view, links keep it,
and the all-heads mosaic marks the heads an ablation switches off."""

import base64
import re

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.anatomy_apptest import open_anatomy, open_tab, page_texts
from tests.support.browser import REPO
from tests.support.sent_charts import sent_text
from vitviz.figures.common import SINK_MARKS_NAME
from vitviz.forward.attention import record_attention
from vitviz.forward.token_features import output_tokens
from vitviz.images import builtin_photo
from vitviz.maths.model_view import model_view_maps
from vitviz.maths.sinks import detect_sinks, sink_sentence
from vitviz.maths.token_features import token_norms
from vitviz.models import load_model
from vitviz.preprocess import image_view

TIMEOUT_S = 240


def _figures(at: AppTest) -> dict[str, go.Figure]:
    """Every Plotly figure of the page by its first title line."""
    figures = {}
    for chart in at.get("plotly_chart"):
        figure = pio.from_json(sent_text(chart), skip_invalid=True)
        figures[(figure.layout.title.text or "").split("<br>")[0]] = figure
    return figures


def _array(value) -> np.ndarray:
    """A figure's array as the browser gets it: a list, or Plotly's {"dtype", "bdata", "shape"} encoding."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(side) for side in str(value.get("shape", flat.size)).split(",")]).astype(
            float
        )
    return np.asarray(value, dtype=float)


def _norm_line(text: str) -> tuple[float, float]:
    found = re.search(r"Patch norms: median ([\d.]+), largest ([\d.]+)", text)
    assert found, text
    return float(found.group(1)), float(found.group(2))


def test_every_per_image_tab_computes_on_the_picked_view():
    at = open_anatomy(timeout_s=TIMEOUT_S)
    at.radio(key="anatomy_view").set_value("whole").run()
    assert not at.exception, at.exception
    assert "computed on one view of the photo: whole image — the whole photo" in page_texts(at)
    assert (
        "The picture as the model sees it (whole image): 224 × 224 px (width × height), normalised."
        in page_texts(at)
    )  # Patches as words
    assert at.query_params["view"] in ("whole", ["whole"])

    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    photo = builtin_photo(at.selectbox(key="anatomy_photo").value)
    open_tab(at, "Token norms")
    shown = _norm_line(page_texts(at))
    for view, should_match in (("whole", True), ("crop", False)):
        norms = token_norms(
            output_tokens(loaded, image_view(photo, loaded.facts, view)), "before_norm"
        ).patch_norms
        expected = (round(float(np.median(norms)), 1), round(float(norms.max()), 1))
        assert (shown == pytest.approx(expected, abs=0.051)) is should_match, (view, shown, expected)

    open_tab(at, "All heads")
    large = _figures(at)["Layer 11, head 0: attention from class token"]
    shown_map = _array(next(trace for trace in large.data if trace.type == "heatmap").z)
    for view, should_match in (("whole", True), ("crop", False)):
        expected_map = model_view_maps(record_attention(loaded, image_view(photo, loaded.facts, view)), None)[
            11, 0
        ]
        assert np.allclose(shown_map, expected_map, atol=1e-6) is should_match, view


def _open_link(params: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT_S)
    at.switch_page("pages/anatomy.py")
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_link_opens_the_view_it_names():
    at = _open_link({"view": "whole", "tab": "Token norms"})
    assert at.radio(key="anatomy_view").value == "whole"
    assert "computed on one view of the photo: whole image" in page_texts(at)


def test_a_link_made_from_an_upload_applies_no_view_to_another_photo():
    at = _open_link({"view": "whole", "source": "upload"})
    assert at.radio(key="anatomy_view").value == "crop"
    assert "uploaded picture it was made from" in " ".join(element.value for element in at.info)


def test_all_heads_mosaic_marks_the_heads_the_ablation_switches_off():
    at = open_anatomy("vit_tiny_patch16_224", "random", timeout_s=TIMEOUT_S)
    at.session_state["anatomy_ablation_heads"] = ["0:1", "2:2"]
    open_tab(at, "All heads")
    mosaic = _figures(at)["All heads: attention from class token with 2 heads off"]
    names = {shape.name for shape in mosaic.layout.shapes}
    assert {"off 0:1", "off 2:2", "off 0:1 cross", "off 2:2 cross"} <= names
    assert not any(name.startswith("off") and name[4:7] not in ("0:1", "2:2") for name in names if name)
    assert "Dotted red outlines and crosses mark the 2 heads zeroed: 0:1, 2:2." in page_texts(at)


def test_sanity_check_reports_a_constant_map_as_having_no_rank_correlation():
    from vitviz.images import image_digest
    from vitviz.methods import default_method
    from vitviz.methods.sanity import SanityResult, rank_correlation

    at = open_anatomy(timeout_s=TIMEOUT_S)
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    photo = builtin_photo(at.selectbox(key="anatomy_photo").value)
    method = default_method(loaded.facts)
    # A map with structure, then stages whose maps are constant, as a fully random head can leave them.
    maps = np.zeros((4, 16, 16), dtype=np.float32)
    maps[0] = np.arange(256, dtype=np.float32).reshape(16, 16)
    maps[1] = maps[0].ravel()[::-1].reshape(16, 16)  # every cell's rank reversed
    result = SanityResult(
        method=method,
        stages=("original", "head", "blocks.11", "embedding"),
        maps=maps,
        rank_correlation=tuple(rank_correlation(maps[0], stage) for stage in maps),
        checkpoint=2,
        target_index=None,
    )
    assert result.rank_correlation[2:] == (None, None)
    key = (
        ("vit_small_patch14_dinov2", loaded.weights, str(loaded.device)),
        image_digest(photo),
        "crop",
        method,
    )
    at.session_state["anatomy_sanity_requests"] = {key}  # asked for, and its background job's result arrived
    at.session_state["background_results"] = {key: result}
    open_tab(at, "Sanity check")
    stage_titles = [
        annotation.text
        for annotation in _figures(at)["Sanity check of " + _method_title(method)].layout.annotations
    ]
    assert stage_titles == ["original · ρ 1.00", "head · ρ -1.00", "blocks.11 · ρ n/a", "embedding · ρ n/a"]
    texts = page_texts(at)
    assert "The map is constant at: blocks.11, embedding" in texts
    assert "At stage “blocks.11” the map is constant, so no rank correlation can be computed." in texts
    assert "nan" not in texts.lower()


def _method_title(name: str) -> str:
    from vitviz.methods import METHODS

    return METHODS[name].title


def test_the_large_attention_map_marks_the_sink_and_names_it():
    at = open_anatomy(timeout_s=TIMEOUT_S)
    open_tab(at, "All heads")
    large = _figures(at)["Layer 11, head 0: attention from class token"]
    marks = [trace for trace in large.data if trace.name == SINK_MARKS_NAME]
    loaded = load_model("vit_small_patch14_dinov2", "bundled")
    photo = builtin_photo(at.selectbox(key="anatomy_photo").value)
    report = detect_sinks(record_attention(loaded, image_view(photo, loaded.facts, "crop")))
    expected = [sink.position for sink in report.patch_sinks if sink.position is not None]
    assert expected, "the bundled DINOv2 has a layer-0 sink on the default photo"
    assert len(marks) == 1 and len(_array(marks[0].x)) == len(expected)
    assert sink_sentence(report) in page_texts(at)
