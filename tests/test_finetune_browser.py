"""Fine-tune in a real browser: start a probe, watch it progress, reload mid-run, see the results."""

import os
import re
import time

import pytest

from tests.support.browser import (
    open_and_wait,
    page_pause,
    reload_and_wait,
    save_screenshot,
    streamlit_app,
    wait_until_idle,
)
from tests.support.polling import wait_for
from vitviz.runs import run_folder_by_name, run_summary

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def finetune_url(runs_dir):
    """An app of its own, so its runs (and its workers) use this module's runs folder."""
    previous = os.environ.get("VITVIZ_RUNS_DIR")
    os.environ["VITVIZ_RUNS_DIR"] = str(runs_dir)
    try:
        with streamlit_app() as url:
            yield f"{url}/finetune"
    finally:
        if previous is None:
            os.environ.pop("VITVIZ_RUNS_DIR", None)
        else:
            os.environ["VITVIZ_RUNS_DIR"] = previous


def progress_text(page) -> str:
    bars = page.locator('[data-testid="stProgress"]')
    return bars.first.inner_text() if bars.count() else ""


def test_start_watch_reload_and_see_results(finetune_url, page, runs_dir):
    open_and_wait(page, finetune_url, page.get_by_text("5 classes · 300 images", exact=False))
    assert page.get_by_text("5 classes · 300 images", exact=False).count() >= 1

    max_images = page.get_by_label("Max images (0 = all)")
    max_images.fill("40")
    max_images.press("Enter")
    page.get_by_text("30 train / 10 validation images", exact=False).wait_for(timeout=60_000)
    wait_until_idle(page)
    assert page.get_by_text("30 train / 10 validation images", exact=False).count() == 1

    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_url(re.compile(r"\?run="), timeout=60_000)
    run_name = re.search(r"run=([\w.-]+)", page.url).group(1)
    assert (runs_dir / run_name).is_dir()

    # The live panel redraws itself every second: collect what the progress bar says.
    seen = set()
    deadline = time.monotonic() + 120
    while len(seen) < 3 and time.monotonic() < deadline:
        text = progress_text(page)
        if text:
            seen.add(text)
        if page.get_by_text("Validation results", exact=False).count():
            break
        page.wait_for_timeout(300)
    assert len(seen) >= 2, seen
    save_screenshot(page, "finetune_running")

    # A refresh (or a second tab) finds the run again from the URL; the worker never noticed.
    # Right after a reload the page can be quiet before its first run has drawn anything: wait for
    # the run's heading with a deadline, then check it is there once.
    title = run_summary(run_folder_by_name(run_name)).title  # what it is: model · mode · data
    heading = page.get_by_role("heading", name=f"Run {title}")
    reload_and_wait(page, heading, timeout_ms=60_000, quiet_s=0.3)
    assert heading.count() == 1

    wait_for(
        lambda: page.get_by_text("Validation results", exact=False).count(),
        300,
        "the run to finish",
        interval_s=0.5,
        pause=page_pause(page),
    )
    # Named elements of the finished results, each waited for with a deadline.
    page.get_by_text("Attention before and after fine-tuning").wait_for(timeout=180_000)
    page.get_by_text("as they must be: a probe freezes the backbone", exact=False).first.wait_for(
        timeout=180_000
    )
    page.locator(".st-key-finetune_confusion_downloads").wait_for(timeout=60_000)
    wait_until_idle(page)
    assert page.get_by_text("Attention before and after fine-tuning").count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    # Streamlit scrolls inside its own container: a tall window shows the whole page at once.
    page.set_viewport_size({"width": 1400, "height": 3600})
    wait_until_idle(page)
    save_screenshot(page, "finetune_results")

    second = page.context.new_page()
    # The runs table draws its cells on a canvas (their text sits in hidden cells): wait for the table.
    open_and_wait(second, finetune_url, second.locator('[data-testid="stDataFrame"]'))
    assert second.get_by_text(title).count() >= 1  # listed among the runs in another tab
    assert second.get_by_text("finished", exact=False).count() >= 1
    second.close()


def test_a_hostile_run_link_shows_one_line_and_no_server_path(finetune_url, page, runs_dir):
    message = page.get_by_text("'..' is not the name of a run. Pick a run from the list.")
    open_and_wait(page, f"{finetune_url}?run=..", message)
    assert message.count() == 1
    assert page.get_by_text(str(runs_dir), exact=False).count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "finetune_hostile_link")
