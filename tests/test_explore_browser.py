"""Explore in a real browser: upload an image, change the layer, click a patch."""

import pytest

from tests.support.browser import click_data_point, save_screenshot, wait_until_idle
from vitviz.images import BUILTIN_PHOTOS

pytestmark = pytest.mark.browser


def _caption_text(page) -> str:
    return page.locator('[data-testid="stCaptionContainer"]').first.inner_text()


def test_upload_change_layer_and_click_a_patch(app_url, page):
    page.goto(app_url)
    wait_until_idle(page)
    assert "16×16 grid" in _caption_text(page)

    page.get_by_text("Upload", exact=True).click()
    wait_until_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(BUILTIN_PHOTOS["astronaut"])
    )
    wait_until_idle(page)
    assert page.get_by_text("astronaut.png: 16×16 patches").count() == 1

    layer = page.locator('input[type="range"][aria-label="Layer"]')
    layer.focus()
    for _ in range(8):
        layer.press("ArrowLeft")
    wait_until_idle(page)
    assert page.get_by_text("Layer 3, mean of heads: attention from class token").count() == 1

    # Click the centre of patch (5, 9) of the 14-px grid, placed by Plotly's own axis mapping.
    grid = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    click_data_point(page, grid, 9.5 * 14 - 0.5, 5.5 * 14 - 0.5)
    wait_until_idle(page)
    assert page.get_by_text("attention from patch (5, 9)").count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "explore_upload_layer_click")


def test_bad_upload_gets_a_message_not_a_traceback(app_url, page, tmp_path):
    page.goto(app_url)
    wait_until_idle(page)
    page.get_by_text("Upload", exact=True).click()
    wait_until_idle(page)
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(fake))
    wait_until_idle(page)
    assert page.get_by_text("holiday.jpg: This file is not an image").count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "explore_bad_upload")
