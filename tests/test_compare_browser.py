"""Compare in a real browser: pick a photo, add a third model, run the probes and faithfulness."""

import pytest

from tests.support.browser import ARTIFACTS, open_and_wait, save_screenshot, shows_once, wait_until_idle

pytestmark = pytest.mark.browser
TIMEOUT_MS = 240_000


def _pick(page, label: str, option: str) -> None:
    """Chooses an option of the Streamlit selectbox with this label."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


def _save_element(locator, name: str) -> None:
    """A screenshot of one element: the page scrolls inside Streamlit, so a full-page shot stops short."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_compare_three_models_probes_and_faithfulness(app_url, page):
    headless = "has no classifier head (a self-supervised backbone)"
    open_and_wait(page, f"{app_url}/compare", page.get_by_text(headless), TIMEOUT_MS)
    assert page.get_by_text(headless).count() == 1
    _pick(page, "Built-in photo", "coffee")

    page.get_by_text("Add a third model", exact=True).click()
    shows_once(page, "deit_small_distilled_patch16_224: random, untrained weights", TIMEOUT_MS)
    wait_until_idle(page, timeout_s=240)
    maps = page.locator('[data-testid="stPlotlyChart"]').nth(1)
    maps.get_by_text("Grad-CAM · espresso (967)").wait_for(timeout=TIMEOUT_MS)
    assert maps.get_by_text("Grad-CAM · espresso (967)").count() == 1
    assert maps.locator(".heatmaplayer .hm").count() == 3  # three maps on one colour scale

    page.get_by_text("Run probes", exact=True).first.click()  # the toggle; the caption names it too
    shows_once(page, "drop-salient on coffee", TIMEOUT_MS)
    wait_until_idle(page, timeout_s=240)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "compare_three_models_probes")
    _save_element(page.locator('[data-testid="stPlotlyChart"]').nth(2), "compare_probe_curves")

    page.get_by_role("tab", name="Faithfulness").click()
    page.get_by_text("Score faithfulness", exact=True).first.click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page, timeout_s=240)
    table = page.locator('[data-testid="stDataFrame"]')
    assert table.count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "compare_faithfulness")
    _save_element(page.locator('[data-testid="stTabs"]'), "compare_faithfulness_tab")
