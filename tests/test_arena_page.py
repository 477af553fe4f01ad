"""The Arena page through Streamlit's AppTest: it opens on a photo and the bundled CNN, scores a small arena
in the page for random weights (no worker could load them again), and shows the table and the verdict."""

import subprocess
import sys
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


def test_every_image_source_without_images_says_what_to_do_instead_of_failing(tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("VITVIZ_DATA_ROOT", str(tmp_path))
    at = _arena_page()
    expected = {
        "Upload images or a zip": "Upload images or a zip of images.",
        "A run's held-out images": "No finished fine-tuned run yet",
        "Server folder": "Name a folder of images",
    }
    for source, words in expected.items():
        at.radio(key="arena_source").set_value(source).run()
        assert not at.exception, [element.value for element in at.exception]
        assert any(words in element.value for element in at.info), source
    at.text_input(key="arena_folder").set_value("../../etc").run()
    assert not at.exception and at.error and "/etc" not in at.error[0].value


def test_an_arena_refused_at_the_servers_cap_says_so_then_runs_in_the_background_and_cancels(
    tmp_path, monkeypatch
):
    from tests.support.polling import wait_for
    from vitviz.runs import background_job_count, background_job_slot

    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("VITVIZ_MAX_JOBS", "1")
    (tmp_path / "runs").mkdir()
    at = _arena_page()
    at.multiselect(key="arena_methods_False").set_value(["gradcam"]).run()
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # another job's worker
    try:
        with background_job_slot() as hold_slot:
            hold_slot(busy.pid)
        at.button(key="arena_start").click().run()
        assert not at.exception, [element.value for element in at.exception]
        assert "already running 1 background job" in at.error[0].value  # the server's cap, said on the page
        assert not at.session_state["background_jobs"] and not at.button(key="arena_start").disabled
    finally:
        busy.kill()
        busy.wait()
    at.button(key="arena_start").click().run()
    assert not at.exception, [element.value for element in at.exception]
    ((key, (folder, what)),) = at.session_state["background_jobs"].items()
    assert key[0] == "arena" and what == "Arena of 1 method on 1 image"
    assert background_job_count() == 1
    assert at.button(key="arena_start").disabled  # one arena at a time
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith("Arena of 1 method on 1 image: ")
    at.button(key="arena_start_job_0").click().run()  # Cancel
    assert not at.exception, [element.value for element in at.exception]

    def cancelled() -> bool:
        return "Arena of 1 method on 1 image — cancelled." in [element.value for element in at.run().caption]

    wait_for(cancelled, 240, "the arena to stop")
    assert not folder.exists() and not at.session_state["background_jobs"]
    wait_for(lambda: background_job_count() == 0, 60, "the worker to exit")
    at.button(key="arena_start_job_again_0").click().run()  # Run again: the start button is free once more
    assert not at.button(key="arena_start").disabled
