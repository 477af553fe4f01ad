"""The Arena page through Streamlit's AppTest: it opens on a photo and the bundled CNN, scores a small arena
in the page for random weights (no worker could load them again), and shows the table and the verdict."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _arena_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/arena.py")
    return at.run()


def test_the_page_opens_on_a_photo_and_offers_the_fast_methods_of_the_bundled_cnn():
    at = _arena_page()
    assert not at.exception, [element.value for element in at.exception]
    assert at.multiselect(key="arena_photos").value == ["cat (chelsea)"]
    offered = at.multiselect(key="arena_methods_False").value
    assert "gradcam" in offered and "scorecam" not in offered
    assert at.button(key="arena_start").label.startswith(f"Run the arena: {len(offered)} methods on 1 image")


def test_a_small_arena_shows_the_ranked_table_and_the_verdict_computed_from_it():
    at = _arena_page()
    at.selectbox(key="arena_weights").set_value("random").run()
    at.multiselect(key="arena_methods_False").set_value(["gradcam", "eigencam"])
    at.slider(key="arena_steps").set_value(3)
    at.slider(key="arena_random_orders").set_value(2)
    at.checkbox(key="arena_sanity").uncheck().run()
    at.button(key="arena_start").click().run()
    assert not at.exception, [element.value for element in at.exception]
    verdict = next(element.value for element in at.markdown if element.value.startswith("**Verdict.**"))
    assert verdict.startswith("**Verdict.** On this image, ") and "the sanity check was not run" in verdict
    (frame,) = at.dataframe
    table = frame.value
    assert list(table["rank"]) == [1, 2] and set(table["method"]) == {"Grad-CAM", "EigenCAM"}
    assert all(str(uri).startswith("data:image/png;base64,") for uri in table["map"])
    assert any("untrained" in element.value for element in at.warning)
