"""Anatomy views 5–9 in a real browser: click one head in the all-heads mosaic and see it large."""

import pytest

from tests.support.browser import click_data_point, open_tab, save_screenshot, wait_until_idle

pytestmark = pytest.mark.browser

GRID = 16  # bundled DINOv2 at 224 px
GAP = 1  # blank cells between the small maps, as the mosaic draws them
TIMEOUT_MS = 180_000


def _open_anatomy(page, app_url: str) -> None:
    # Through the app's navigation, as a user gets there.
    page.goto(app_url)
    wait_until_idle(page)
    page.get_by_role("link", name="Anatomy").click()
    page.get_by_role("tab", name="All heads").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)


def test_clicking_a_small_map_opens_that_head_large(app_url, page):
    _open_anatomy(page, app_url)
    open_tab(page, "All heads", "Layer 11, head 0: attention from class token", TIMEOUT_MS)

    layer, head = 4, 2
    mosaic = page.locator(".st-key-anatomy_b_heads_mosaic_model .js-plotly-plot")
    centre = (GRID - 1) / 2
    click_data_point(page, mosaic, head * (GRID + GAP) + centre, layer * (GRID + GAP) + centre)
    page.get_by_text(f"Layer {layer}, head {head}: attention from class token").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    assert page.get_by_text("Layer 11, head 0: attention from class token").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "anatomy_b_all_heads_click")

    # A click on a patch of the large map makes that patch the attending token.
    large = page.locator(".st-key-anatomy_b_heads_large_model .js-plotly-plot")
    row, col = 6, 9
    click_data_point(page, large, (col + 0.5) * 14 - 0.5, (row + 0.5) * 14 - 0.5)
    page.get_by_text(f"Layer {layer}, head {head}: attention from patch ({row}, {col})").wait_for(
        timeout=TIMEOUT_MS
    )
    wait_until_idle(page)
    assert page.get_by_text(f"All heads: attention from patch ({row}, {col})").count() == 1
    save_screenshot(page, "anatomy_b_all_heads_patch")


@pytest.mark.parametrize(
    ("tab", "expected"),
    [
        ("Resolution", "448×448 px: rollout, 12 layers"),
        ("Hybrid stem", "is a plain ViT"),
        ("Token norms", "Patch-token norm, before final norm"),
        ("Queries & keys", "Layer 11, head 0: 257 queries and 257 keys (PCA)"),
    ],
)
def test_each_view_renders_without_errors(app_url, page, tab, expected):
    _open_anatomy(page, app_url)
    open_tab(page, tab, expected, TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, f"anatomy_b_{tab.lower().replace(' & ', '_').replace(' ', '_')}")
