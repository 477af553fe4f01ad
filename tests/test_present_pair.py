"""Present's "ViT vs CNN" slide on a trained ViT/CNN pair: two classifiers of the same classes, side by side."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.pairs import trained_pair
from tests.support.sent_charts import sent_spec
from vitviz.finetune.pair import held_out_images
from vitviz.models import load_model
from vitviz.predict import predict
from vitviz.preprocess import image_view
from vitviz.runs import read_val_predictions, short_run_title

DIGITS = [str(digit) for digit in range(10)]


@pytest.fixture(scope="module")
def pair_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, trained_pair(root)


def _compare_slide(root, monkeypatch, **query: str) -> AppTest:
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(root))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    for name, value in {"slide": "7", "image": "coffee", **query}.items():
        app.query_params[name] = value
    app.switch_page("pages/present.py")
    app.run()
    assert not app.exception
    return app


def _figures(app: AppTest) -> dict[str, dict]:
    return {chart.proto.id: sent_spec(chart) for chart in app.get("plotly_chart")}


def _figure(app: AppTest, key: str) -> dict:
    return next(figure for element_id, figure in _figures(app).items() if key in element_id)


def _bars(figure: dict) -> list[tuple[str, float]]:
    """(label, probability) of a top-5 chart, most probable first."""
    bars = figure["data"][0]
    return list(zip(reversed(bars["y"]), reversed(bars["x"]), strict=True))


def assert_same_top5(shown: list[tuple[str, float]], expected) -> None:
    """The chart's bars are the model's top 5: the same top class and the same probabilities (classes
    tied at ~0% may come in another order)."""
    assert shown[0][0] == f"{expected[0].label} ({expected[0].index})"
    assert [probability for _, probability in shown] == pytest.approx(
        [p.probability for p in expected], abs=1e-5
    )


def test_the_slide_shows_both_runs_predictions_and_their_maps_of_one_class(pair_runs, monkeypatch):
    root, pair = pair_runs
    app = _compare_slide(root, monkeypatch)  # the story's picture is the coffee photo
    assert not app.error
    held_out = held_out_images(pair)
    photo = held_out[0].image  # a digits pair is shown a digit held out of its training, not a photo
    (source,) = [c.value for c in app.caption if "held-out" in c.value]
    assert held_out[0].name in source and "coffee" not in source
    explained = None
    for side, run in (("ViT", pair.vit), ("CNN", pair.cnn)):
        model = load_model(str(run))
        expected = predict(model, [image_view(photo, model.facts, "crop")], topk=5)[0]
        predictions = _figure(app, f"present_compare_{side.lower()}_predictions_chart")
        title = predictions["layout"]["title"]["text"]
        # A run is named by the name its user gave it (here the automatic one), never by its folder or path.
        assert title.startswith(f"{side}: top 5") and short_run_title(run) in title, title
        assert str(root) not in title and run.name not in title
        assert_same_top5(_bars(predictions), expected)
        assert all(label.split(" ")[0] in DIGITS for label, _ in _bars(predictions))
        if explained is None:
            explained = expected[0].label  # the ViT's top class: both maps explain it
        map_title = _figure(app, f"present_compare_{side.lower()}_chart")["layout"]["title"]["text"]
        assert f"for “{explained}”" in map_title and short_run_title(run) in map_title
    caption = next(md.value for md in app.markdown if 'class="vv-caption"' in md.value)
    assert "builtin:digits (10 classes)" in caption
    assert (
        f"Left: {short_run_title(pair.vit)}, a ViT" in caption
        and f"right: {short_run_title(pair.cnn)}, a CNN" in caption
    )
    assert pair.vit.name not in caption and pair.cnn.name not in caption
    assert any(f"Both maps explain “{explained}”, the ViT's top class" in c.value for c in app.caption)
    assert not [info for info in app.info if "Train a ViT/CNN pair" in info.value]


def test_the_whole_image_view_changes_both_sides_predictions(pair_runs, monkeypatch):
    root, pair = pair_runs
    app = _compare_slide(root, monkeypatch, view="whole")
    assert app.radio(key="present_view").value == "whole"
    photo = held_out_images(pair)[0].image
    for side, run in (("vit", pair.vit), ("cnn", pair.cnn)):
        model = load_model(str(run))
        expected = predict(model, [image_view(photo, model.facts, "whole")], topk=5)[0]
        assert_same_top5(_bars(_figure(app, f"present_compare_{side}_predictions_chart")), expected)
    assert app.query_params["view"] == "whole"


def test_without_a_pair_the_slide_says_what_it_compares_and_how_to_get_a_pair(tmp_path, monkeypatch):
    app = _compare_slide(tmp_path, monkeypatch)
    caption = next(md.value for md in app.markdown if 'class="vv-caption"' in md.value)
    assert "only the CNN predicts a class" in caption
    (line,) = [info.value for info in app.info if "Train a ViT/CNN pair" in info.value]
    assert line.count(".") == 1 and "Fine-tune" in line


def test_another_held_out_image_is_one_pick_away(pair_runs, monkeypatch):
    root, pair = pair_runs
    app = _compare_slide(root, monkeypatch)
    held_out = held_out_images(pair)
    picker = app.selectbox(key="present_pair_image")
    classes = {row["label"] for row in read_val_predictions(pair.vit)}
    assert len(picker.options) == len(held_out) == len(classes) > 3  # one per class held out
    picker.set_value(3).run()
    assert not app.exception
    cnn = load_model(str(pair.cnn))
    expected = predict(cnn, [image_view(held_out[3].image, cnn.facts, "crop")], topk=5)[0]
    assert_same_top5(_bars(_figure(app, "present_compare_cnn_predictions_chart")), expected)
    assert any(held_out[3].name in c.value for c in app.caption)
