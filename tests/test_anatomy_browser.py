"""Anatomy in a real browser: click a position on the position-similarity grid and see it enlarged."""

import pytest

from tests.support.browser import click_data_point, open_tab, save_screenshot, wait_until_idle

pytestmark = pytest.mark.browser

GRID = 16  # bundled DINOv2 at 224 px
GAP = 1  # blank cells between the small maps, as the page draws them
TIMEOUT_MS = 120_000


def _open_anatomy(page, app_url: str) -> None:
    # Through the app's navigation, as a user gets there (a first direct /anatomy on a fresh server
    # is served from the pages/ folder without app.py).
    page.goto(app_url)
    wait_until_idle(page)
    page.get_by_role("link", name="Anatomy").click()
    page.get_by_role("tab", name="Patches as words").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)


def test_clicking_a_position_on_the_similarity_grid_enlarges_it(app_url, page):
    _open_anatomy(page, app_url)
    assert page.get_by_text("16×16 grid", exact=False).count() >= 1
    open_tab(page, "Position embeddings", "Position (8, 8) · bundled (offline)", TIMEOUT_MS)

    row, col = 3, 12
    grid = page.locator(".st-key-anatomy_posembed_grid_0 .js-plotly-plot")
    centre = (GRID - 1) / 2
    click_data_point(page, grid, col * (GRID + GAP) + centre, row * (GRID + GAP) + centre)
    page.get_by_text(f"Position ({row}, {col}) · bundled (offline)").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    assert page.get_by_text("Position (8, 8) · bundled (offline)").count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "anatomy_position_similarity_click")


def test_each_view_renders_with_the_untrained_twin_beside_it(app_url, page):
    _open_anatomy(page, app_url)
    page.get_by_text("Compare with random weights").click()
    page.get_by_text("Encoder input (257, 384) · random (untrained twin)").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    save_screenshot(page, "anatomy_patches_as_words_compare")
    for label, expected, name in [
        ("Filters", "in all · random (untrained twin)", "anatomy_filters_compare"),
        (
            "Position embeddings",
            "Position (8, 8) · random (untrained twin)",
            "anatomy_position_embeddings_compare",
        ),
        (
            "Attention distance",
            "Mean attention distance, 8 images · random (untrained twin)",
            "anatomy_attention_distance_compare",
        ),
    ]:
        open_tab(page, label, expected, TIMEOUT_MS)
        assert page.locator('[data-testid="stException"]').count() == 0, label
        save_screenshot(page, name)
