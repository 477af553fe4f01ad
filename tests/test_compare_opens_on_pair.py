"""Compare, offline, opens on the newest trained ViT/CNN pair: both slots are its runs, both predict."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO
from tests.support.pairs import trained_pair
from tests.support.sent_charts import sent_spec
from vitviz.finetune.pair import held_out_images
from vitviz.models import load_model
from vitviz.predict import predict
from vitviz.preprocess import image_view


@pytest.fixture
def pair_in_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    return trained_pair(tmp_path)


def test_offline_compare_opens_on_the_trained_pair_with_predictions_on_both_sides(pair_in_runs_folder):
    from pages.views.compare import slots as compare_slots

    pair = pair_in_runs_folder
    compare_slots._opening_models.clear()  # what the page opens on is cached for a minute, across tests too
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
        at.switch_page("pages/compare.py")
        at.run()
    finally:
        compare_slots._opening_models.clear()
    assert not at.exception and not at.error
    slots = [at.selectbox(key=f"compare_{number}_model").value for number in (1, 2)]
    assert slots == [pair.vit.name, pair.cnn.name]  # runs by their names, never their paths
    assert not [caption for caption in at.sidebar.caption if "Fine-tune page" in caption.value]
    (chart,) = [chart for chart in at.get("plotly_chart") if "compare_predictions_chart" in chart.proto.id]
    bars = sent_spec(chart)["data"]
    assert len(bars) == 2  # one column of bars per slot: both models predict
    # A digits pair opens on a digit held out of both trainings, not on a photo outside its classes.
    assert at.radio(key="compare_image_source").value == "Held out"
    held_out = held_out_images(pair)
    photo = held_out[0].image
    assert at.selectbox(key="compare_held_out").value == 0 and len(held_out) > 1
    for shown, run in zip(bars, (pair.vit, pair.cnn), strict=True):
        model = load_model(str(run))
        expected = predict(model, [image_view(photo, model.facts, "crop")], topk=len(shown["x"]))[0]
        assert shown["x"][::-1] == pytest.approx([p.probability for p in expected], abs=1e-5)
        labels = [label.removeprefix("✓ ") for label in shown["y"]]  # ✓: the other model lists it too
        assert labels[-1] == f"{expected[0].label} ({expected[0].index})"
        assert all(label.split(" (")[0] in pair.labels for label in labels), labels
