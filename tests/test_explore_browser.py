"""Explore in a real browser: upload an image, change the layer, click a patch."""

import pytest

from tests.support.browser import (
    click_data_point,
    open_and_wait,
    save_screenshot,
    shows_once,
    text_as_written,
    wait_until_idle,
)
from tests.support.panoramas import panorama
from tests.support.validation_pictures import flat_shapes
from tests.support.websocket_frames import media_fetched, record_frames, sent_for_a_layer_step
from vitviz.images import BUILTIN_PHOTOS

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000


def _caption_text(page) -> str:
    return page.locator('[data-testid="stCaptionContainer"]').first.inner_text()


def _open_explore(page, app_url: str) -> None:
    open_and_wait(
        page, app_url, text_as_written(page, "cat (chelsea): 16 × 16 grid (rows × columns)"), TIMEOUT_MS
    )


def _choose_upload(page) -> None:
    page.get_by_text("Upload", exact=True).click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached", timeout=TIMEOUT_MS)
    wait_until_idle(page)


def test_upload_change_layer_and_click_a_patch(app_url, page):
    _open_explore(page, app_url)
    assert "16 × 16 grid (rows × columns)" in _caption_text(page)

    _choose_upload(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(BUILTIN_PHOTOS["astronaut"])
    )
    shows_once(page, "astronaut.png: 16 × 16 grid (rows × columns)", TIMEOUT_MS)
    wait_until_idle(page)

    layer = page.locator('input[type="range"][aria-label="Layer"]')
    layer.focus()
    for _ in range(8):
        layer.press("ArrowLeft")
    shows_once(page, "Layer 3, mean of heads: attention from class token", TIMEOUT_MS)
    wait_until_idle(page)

    # Click the centre of patch (5, 9) of the 14-px grid, placed by Plotly's own axis mapping.
    grid = page.locator('[data-testid="stPlotlyChart"]', has_text="grid (rows × columns) of").locator(
        ".js-plotly-plot"
    )
    click_data_point(page, grid, 9.5 * 14 - 0.5, 5.5 * 14 - 0.5)
    shows_once(page, "attention from patch (5, 9)", TIMEOUT_MS)
    wait_until_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "explore_upload_layer_click")


def test_bad_upload_gets_a_message_not_a_traceback(app_url, page, tmp_path):
    _open_explore(page, app_url)
    _choose_upload(page)
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(fake))
    shows_once(page, "holiday.jpg: This file is not an image", TIMEOUT_MS)
    wait_until_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "explore_bad_upload")


def test_layer_slider_reruns_only_its_map_and_the_photo_is_not_sent_again(app_url, page):
    page.set_viewport_size({"width": 1500, "height": 3000})  # the whole page in one screenshot
    frames = record_frames(page)
    _open_explore(page, app_url)
    assert frames and any(b"box: centre crop" in frame for frame in frames)
    save_screenshot(page, "explore_default")

    fetched = media_fetched(page)
    sent = sent_for_a_layer_step(
        page, frames, "Layer 10, mean of heads: attention from class token", TIMEOUT_MS
    )
    shows_once(page, "Layer 10, mean of heads: attention from class token", TIMEOUT_MS)
    assert b"Layer 10, mean of heads" in sent
    assert b"box: centre crop" not in sent, "the photo was sent again for a layer change"
    assert b"data:image" not in sent, "the map's photo rode inside the layer step's message"
    assert fetched == [], f"the browser fetched the photo again instead of reusing it: {fetched}"
    map_chart = page.locator('[data-testid="stPlotlyChart"]', has_text="Layer 10")
    images = map_chart.evaluate(
        "chart => Array.from(chart.querySelectorAll('image'), node => node.href.baseVal)"
    )
    assert sum(source.startswith("/media/") for source in images) == 1, f"the map lost its photo: {images}"
    assert b"Rollout of layers" not in sent, "the rollout was sent again for a layer change"
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_wide_upload_in_the_aspect_kept_view_gets_its_own_grid(app_url, page, tmp_path):
    photo = tmp_path / "panorama.png"
    panorama(4, 200).save(photo)
    _open_explore(page, app_url)
    _choose_upload(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    shows_once(
        page, "panorama.png: 16 × 16 grid (rows × columns)", TIMEOUT_MS
    )  # the centre crop: a quarter of it
    wait_until_idle(page)
    page.get_by_text("whole image, aspect kept", exact=True).click()
    shows_once(page, "panorama.png: 8 × 32 grid (rows × columns) of 14-px patches", TIMEOUT_MS)
    shows_once(page, "its patches on the 8 × 32 grid (rows × columns): its aspect ratio is kept", TIMEOUT_MS)
    wait_until_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "explore_wide_upload_aspect_view")


def test_an_image_over_the_limit_is_refused_in_the_uploader_and_the_page_says_so(app_url, page, tmp_path):
    _open_explore(page, app_url)
    _choose_upload(page)
    dropzone = page.locator('[data-testid="stFileUploaderDropzone"]')
    assert "25MB" in dropzone.inner_text() and "200MB" not in dropzone.inner_text()
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024))  # over 25 MB: never sent
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(big))
    page.get_by_text("huge.png", exact=True).wait_for(timeout=TIMEOUT_MS)  # listed, marked as refused
    shows_once(page, "a file marked red above was refused by the uploader and not sent", TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "explore_upload_over_the_limit")


def test_a_flat_shape_names_at_most_one_sink_in_lines_no_taller_than_the_map(app_url, page, tmp_path):
    """The flat blue triangle: the earlier rule marked about 25 outline patches and named them in a
    wall of bold text. Now one layer-0 sink at most, and every line about sinks is shorter than the
    rollout map beside it is tall."""
    page.set_viewport_size({"width": 1400, "height": 2600})
    triangle = flat_shapes()[0]
    path = tmp_path / "blue-triangle.png"
    triangle.image.save(path)
    _open_explore(page, app_url)
    _choose_upload(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    shows_once(page, "blue-triangle.png: 16 × 16 grid (rows × columns)", TIMEOUT_MS)
    wait_until_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    rollout_map = page.locator('[data-testid="stPlotlyChart"]').last
    map_height = rollout_map.bounding_box()["height"]
    sink_lines = page.locator('[data-testid="stCaptionContainer"]', has_text="attention sink")
    assert 1 <= sink_lines.count() <= 2  # under the predictions and beside the rollout
    for index in range(sink_lines.count()):
        line = sink_lines.nth(index)
        assert line.inner_text().lower().count("patch (") <= 1
        assert line.bounding_box()["height"] < map_height
    statement = page.locator('[data-testid="stMarkdownContainer"] strong', has_text="ollout of layer").first
    assert statement.inner_text().count("patch (") <= 1
    assert statement.bounding_box()["height"] < map_height
    save_screenshot(page, "explore_flat_triangle_sinks")
