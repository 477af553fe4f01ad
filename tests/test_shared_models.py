"""The app's model cache: shared by every session, bounded by bytes, and refusing a visitor's oversized model."""

import base64
import threading

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pages.views import ui
from pages.views.ui import caches
from tests.support.browser import REPO
from tests.support.sent_charts import sent_spec
from vitviz.memory import MEMORY_BUDGET_ENV, VISITOR_MODEL_ENV
from vitviz.models import ModelError, estimate_model

DINOV2 = ("vit_small_patch14_dinov2", "bundled", "cpu")
LITE0 = ("tf_efficientnet_lite0", "bundled", "cpu")
VIT_B = ("vit_base_patch16_224", "random", "cpu")


@pytest.fixture
def counted_loads(monkeypatch):
    """Every load_model call the cache makes, with an empty cache to start from."""
    ui.shared_models().clear()
    loads = []
    real_load = caches.load_model
    monkeypatch.setattr(caches, "load_model", lambda *args: loads.append(args) or real_load(*args))
    yield loads
    ui.shared_models().clear()


def test_a_link_to_a_model_past_the_visitor_limit_gets_a_message_and_loads_nothing(
    monkeypatch, counted_loads
):
    monkeypatch.setenv(VISITOR_MODEL_ENV, "500M")
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.query_params.update({"model": "vit_large_patch16_224", "weights": "random"})
    app.run()
    assert not app.exception, app.exception
    errors = " ".join(error.value for error in app.error)
    assert "vit_large_patch16_224 at 224 × 224 px (width × height) needs about 1.2 GiB" in errors, errors
    assert f"more than the 500.0 MiB a visitor's model may take ({VISITOR_MODEL_ENV})" in errors, errors
    assert counted_loads == [] and ui.shared_models().keys() == []


def test_the_cache_keeps_models_by_bytes_and_lets_the_least_recently_used_go(monkeypatch, counted_loads):
    dinov2_bytes = estimate_model(*DINOV2[:2]).weights_bytes
    lite0_bytes = estimate_model(*LITE0[:2]).weights_bytes
    vit_b_needs = estimate_model(*VIT_B[:2]).total
    # Room for DINOv2 and ViT-B's estimate, not for EfficientNet beside them as well.
    budget = dinov2_bytes + vit_b_needs + lite0_bytes // 2
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(budget))
    ui.cached_model(*DINOV2)
    ui.cached_model(*LITE0)
    ui.cached_model(*DINOV2)  # used again: EfficientNet is now the least recently used
    vit_b = ui.cached_model(*VIT_B)
    cache = ui.shared_models()
    assert cache.keys() == [("model", *DINOV2), ("model", *VIT_B)]
    assert cache.total_bytes <= budget
    assert ui.cached_model(*VIT_B) is vit_b and len(counted_loads) == 3  # a hit loads nothing
    ui.cached_model(*LITE0)  # evicted, so loaded again
    assert len(counted_loads) == 4


def test_a_model_past_the_servers_budget_is_refused_in_the_page_cache_too(monkeypatch, counted_loads):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "100M")
    with pytest.raises(ModelError, match=MEMORY_BUDGET_ENV):
        ui.cached_model(*VIT_B)
    assert ui.shared_models().keys() == []


def _layer_map(app: AppTest) -> np.ndarray:
    """The z of the page's attention heatmap (Plotly writes it as base64 bytes with a dtype and shape)."""
    for chart in app.get("plotly_chart"):
        figure = sent_spec(chart)
        if "Layer" in figure["layout"]["title"]["text"]:
            z = next(trace for trace in figure["data"] if trace["type"] == "heatmap")["z"]
            flat = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
            return flat.reshape([int(n) for n in str(z["shape"]).split(",")])
    raise AssertionError("no attention figure")


def test_two_sessions_use_the_same_cached_model_at_once_and_see_their_own_maps(counted_loads):
    """Two visitors open Explore together: one load, one model object, and each page's map is the
    one a session alone gets (the capture on the shared model holds its lock)."""
    apps = [AppTest.from_file(str(REPO / "app.py"), default_timeout=180) for _ in range(3)]
    for app in apps:
        app.run()
    alone, together = apps[0], apps[1:]
    alone.slider(key="explore_layer").set_value(3).run()  # a capture of its own on the cached model
    assert not alone.exception, alone.exception
    start = threading.Barrier(2)

    def move_layer(app: AppTest) -> None:
        start.wait(timeout=60)
        app.slider(key="explore_layer").set_value(3).run()

    threads = [threading.Thread(target=move_layer, args=(app,)) for app in together]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for app in together:
        assert not app.exception, app.exception
    assert len(counted_loads) == 1  # the same model served every session
    assert ui.shared_models().keys() == [("model", *DINOV2)]
    expected = _layer_map(alone)
    for app in together:  # the same kernel on the same model: equal up to float noise
        np.testing.assert_allclose(_layer_map(app), expected, rtol=0, atol=1e-6)


def test_a_run_trained_again_under_the_same_name_is_not_served_from_the_cache(
    tmp_path, monkeypatch, counted_loads
):
    """Runs travel by name, and a name can come back (deleted, then `finetune --out NAME` again)."""
    import shutil

    from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run
    from vitviz.models import RUN_WEIGHTS

    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    hand_made_run(tmp_path, "shapes")
    first = ui.cached_model("shapes", RUN_WEIGHTS, "cpu")
    assert ui.cached_model("shapes", RUN_WEIGHTS, "cpu") is first and len(counted_loads) == 1
    shutil.rmtree(tmp_path / "shapes")
    labels = ["yes", "no"]  # another run: other class names
    hand_made_run(tmp_path, "shapes", config={**TINY_RUN_CONFIG, "labels": labels})
    again = ui.cached_model("shapes", RUN_WEIGHTS, "cpu")
    assert again is not first and len(counted_loads) == 2
    assert again.labels == tuple(labels) and first.labels != again.labels
