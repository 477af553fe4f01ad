"""Compare in a real browser, on the default photo: the view box, one class explained, baselines."""

import pytest

from tests.support.browser import open_and_wait, save_screenshot, shows_once, text_as_written, wait_until_idle

pytestmark = pytest.mark.browser
TIMEOUT_MS = 240_000


def test_compare_on_the_default_photo_explains_the_class_its_bars_show(app_url, page):
    headless = "has no classifier head (a self-supervised DINO backbone)"
    open_and_wait(page, f"{app_url}/compare", page.get_by_text(headless), TIMEOUT_MS)
    wait_until_idle(page, timeout_s=240)
    assert page.get_by_text("Train a ViT/CNN pair on the Fine-tune page").count() == 1
    shows_once(page, "View: centre crop (the model's eval transform).", TIMEOUT_MS)
    # The page's own charts (the sidebar may briefly hold a blank one that fetches Plotly early);
    # Plotly draws a chart's text after the chart arrives, so each is waited for before it is counted.
    charts = page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"]')
    boxes, bars, maps = charts.nth(0), charts.nth(1), charts.nth(2)
    boxes.get_by_text("model 1").first.wait_for(timeout=TIMEOUT_MS)
    assert boxes.get_by_text("model 1").count() == 1
    bars.get_by_text("tiger cat (282)").first.wait_for(timeout=TIMEOUT_MS)
    text_as_written(maps, "Grad-CAM · tiger cat (282)").wait_for(timeout=TIMEOUT_MS)
    assert maps.locator(".heatmaplayer .hm").count() == 2  # two maps on one colour scale
    assert text_as_written(maps, "clipped at the 99th percentile").count() >= 1
    # The DINOv2 map marks its sink, and the line beside it says how rollout dealt with it.
    assert maps.locator(".scatterlayer .point").count() >= 1
    shows_once(page, "Rollout of layers 1–11 (layer 0 skipped: sink at patch (2, 8))", TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "compare_default")
    save_screenshot(page, "compare_maps", maps)

    page.get_by_text("Run probes", exact=True).first.click()
    wait_until_idle(page, timeout_s=240)
    probe = charts.nth(3)
    probe.get_by_text("drop-random").first.wait_for(timeout=TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "compare_probe_with_random_order", probe)
