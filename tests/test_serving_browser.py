"""In a real browser: a link names a run by its name and reopens it; a path typed in the model box
gets the box's one answer and changes nothing on disk."""

from urllib.parse import parse_qs, urlparse

import pytest

from tests.support.browser import open_and_wait, save_screenshot, streamlit_app, wait_until_idle
from tests.support.run_folders import dead_looking_run, folder_snapshot, hand_made_run

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000
NO_MODEL = "There is no timm model or finished run of that name."


@pytest.fixture
def served_runs(tmp_path, monkeypatch):
    """A server whose runs folder holds one finished run; a dead-looking run folder lies elsewhere."""
    runs = tmp_path / "runs"
    run = hand_made_run(runs)
    outside = dead_looking_run(tmp_path / "elsewhere")
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(runs))  # the app below inherits it
    monkeypatch.delenv("VITVIZ_DATA_ROOT", raising=False)
    with streamlit_app() as url:
        yield url, run, outside


def test_a_run_link_reopens_the_run_and_a_typed_path_gets_one_answer(served_runs, page):
    url, run, outside = served_runs
    weights = page.get_by_text(
        "Weights: fine-tuned run test_vit · probe · shapes (probe"
    )  # the picker's caption
    open_and_wait(page, f"{url}/?model={run.name}", weights, TIMEOUT_MS)
    # Chart titles name the run by its name.
    page.get_by_text(
        "fine-tuned run test_vit · probe · shapes (probe from random weights) · cat (chelsea)"
    ).first.wait_for(timeout=TIMEOUT_MS)
    assert parse_qs(urlparse(page.url).query)["model"] == [run.name]
    body = page.inner_text("body")
    assert str(run.parent) not in body and "defaults used instead" not in body

    before = folder_snapshot(outside)
    page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Model", exact=True)).click()
    page.get_by_role("option", name="other timm model…").click()
    wait_until_idle(page)
    box = page.get_by_label("timm model or run name")
    box.fill(str(outside))
    box.press("Enter")
    page.get_by_text(NO_MODEL).wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    assert folder_snapshot(outside) == before, "a run folder outside the runs folder was changed"
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "serving_typed_path_refused")
