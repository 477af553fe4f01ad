"""The Arena in a real browser: a small arena on the cat with the bundled CNN, run as a background job
(its progress bar and Cancel drawn meanwhile), ends in the ranked table with map thumbnails and the verdict."""

import pytest

from tests.support.browser import open_and_wait, save_screenshot, wait_until_idle

pytestmark = pytest.mark.browser
TIMEOUT_MS = 300_000


def test_a_small_arena_on_the_cat_shows_the_table_and_the_verdict(app_url, page):
    start = page.get_by_role("button", name="Run the arena")
    open_and_wait(page, f"{app_url}/arena", start, TIMEOUT_MS)
    sidebar = page.locator('[data-testid="stSidebar"]')
    methods = sidebar.locator('[data-testid="stMultiSelect"]').nth(1)
    methods.get_by_role("button", name="Clear all").click()
    wait_until_idle(page)
    methods.locator("input").click()
    methods.locator("input").fill("EigenCAM")
    page.get_by_role("option", name="EigenCAM", exact=True).click()
    page.keyboard.press("Escape")
    wait_until_idle(page)
    sidebar.get_by_text("Cascading-randomisation sanity check").click()
    wait_until_idle(page)
    assert start.first.inner_text().startswith("Run the arena: 1 method on 1 image")
    start.first.click()
    # The worker loads the model, then scores: seconds, while the bar with its Cancel is drawn.
    page.get_by_text("Arena of 1 method on 1 image: ").first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".st-key-arena_start_job_0").get_by_role("button", name="Cancel").count() == 1
    save_screenshot(page, "arena_cat_cnn_running")
    verdict = page.get_by_text("On this image,")
    verdict.first.wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page, timeout_s=TIMEOUT_MS / 1000)
    assert "the sanity check was not run" in verdict.first.inner_text()
    table = page.locator('[data-testid="stDataFrame"]')
    table.first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "arena_cat_cnn")
    save_screenshot(page, "arena_cat_cnn_table", table.first)
