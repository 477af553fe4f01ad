"""Explore in a real browser: shared links, downloads, page navigation, and sessions kept apart."""

import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

from tests.support.browser import (
    open_and_wait,
    page_pause,
    reload_and_wait,
    save_screenshot,
    shows_once,
    text_as_written,
    wait_until_idle,
)
from tests.support.polling import wait_for
from vitviz.images import BUILTIN_PHOTOS
from vitviz.preprocess import image_view

pytestmark = pytest.mark.browser


def _query(page) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlparse(page.url).query).items()}


def _wait_for_query(page, name: str, value: str, timeout_s: float = 10.0) -> None:
    """The app writes the URL after its run; poll until it says `name=value`."""
    wait_for(
        lambda: _query(page).get(name) == value,
        timeout_s,
        lambda: f"the URL to have {name}={value}: {page.url}",
        pause=page_pause(page),
    )


def _choose(page, label: str, option: str) -> None:
    """Picks `option` in the selectbox labelled `label`."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=re.compile(f"^{re.escape(option)}")).first.click()
    wait_until_idle(page)


def test_a_shared_link_reopens_photo_layer_and_head(app_url, page):
    url = f"{app_url}/?image=coffee&layer=3&head=2&fusion=max&opacity=0.8"
    open_and_wait(
        page,
        url,
        text_as_written(
            page, "Rollout of layers 1–11 (layer 0 skipped: sink at patch (4, 12)); max of heads, discard 0%"
        ),
    )
    shows_once(page, "coffee: 16 × 16 grid (rows × columns) of 14-px patches")
    shows_once(page, "Layer 3, head 2: attention from class token")
    shows_once(
        page, "Rollout of layers 1–11 (layer 0 skipped: sink at patch (4, 12)); max of heads, discard 0%"
    )
    assert page.locator('[data-testid="stAlertContentInfo"]').filter(has_text="link asked").count() == 0
    # The page writes its whole state back into the URL, ready to copy.
    _wait_for_query(page, "layer", "3")
    assert _query(page) == {
        "model": "vit_small_patch14_dinov2",
        "weights": "bundled",
        "image": "coffee",
        "layer": "3",
        "head": "2",
        "query": "class",
        "fusion": "max",
        "discard": "0",
        "start": "0",
        "opacity": "0.8",
        "view": "crop",
    }
    slider = page.locator('input[type="range"][aria-label="Layer"]')
    slider.focus()
    slider.press("ArrowLeft")
    wait_until_idle(page)
    shows_once(page, "Layer 2, head 2: attention from class token")
    _wait_for_query(page, "layer", "2")
    save_screenshot(page, "share_link_reopens_view")

    # The copied link, opened in a fresh context, shows the same view.
    other = page.context.browser.new_context(viewport={"width": 1400, "height": 1700})
    try:
        copy = other.new_page()
        open_and_wait(copy, page.url, text_as_written(copy, "Layer 2, head 2: attention from class token"))
        shows_once(copy, "Layer 2, head 2: attention from class token")
        shows_once(copy, "coffee: 16 × 16 grid (rows × columns) of 14-px patches")
    finally:
        other.close()


def test_a_bad_link_falls_back_with_one_note(app_url, page):
    note = page.locator('[data-testid="stAlert"]').filter(has_text="link asked")
    open_and_wait(page, f"{app_url}/?image=dog&layer=40&head=1&model=vit_gigantic", note)
    assert note.count() == 1
    text = note.inner_text()
    assert "model='vit_gigantic'" in text and "image='dog'" in text and "layer='40'" in text
    shows_once(page, "Layer 11, head 1: attention from class token")
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "share_bad_link_note")


def test_png_html_and_csv_downloads(app_url, page):
    open_and_wait(
        page,
        f"{app_url}/?layer=5",
        text_as_written(page, "Layer 5, mean of heads: attention from class token"),
    )
    with page.expect_download(timeout=60_000) as download_info:
        page.locator(".st-key-explore_attention_png").get_by_role("button").click()
    download = download_info.value
    assert download.suggested_filename == (
        "vit_small_patch14_dinov2__bundled__cat-chelsea__layer5-mean-attention-from-class-token-crop.png"
    )
    png = Path(download.path()).read_bytes()
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 800

    with page.expect_download(timeout=60_000) as download_info:
        page.locator(".st-key-explore_rollout_csv").get_by_role("button").click()
    csv_lines = Path(download_info.value.path()).read_text(encoding="utf-8").splitlines()
    assert download_info.value.suggested_filename.endswith("__rollout-exclude-mean-discard0-start0-crop.csv")
    assert len(csv_lines) == 16 and all(len(line.split(",")) == 16 for line in csv_lines)

    with page.expect_download(timeout=60_000) as download_info:
        page.locator(".st-key-explore_grid_html").get_by_role("button").click()
    html = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert (
        "cat (chelsea): 16 \\u00d7 16 grid (rows \\u00d7 columns) of 14-px patches" in html
        and not re.search(r"<script[^>]+src=", html)
    )
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "share_downloads")


def test_navigation_switches_pages_and_back(app_url, page):
    open_and_wait(
        page,
        app_url,
        text_as_written(page, "cat (chelsea): 16 × 16 grid (rows × columns) of 14-px patches"),
    )
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Present", exact=True).click()
    page.locator("h1.vv-title").wait_for(timeout=120_000)
    wait_until_idle(page)
    assert page.locator("h1.vv-title").inner_text() == "An image goes in"
    assert "/present" in page.url
    save_screenshot(page, "share_navigate_to_present")
    nav.get_by_text("Explore", exact=True).click()
    page.get_by_role("heading", name="Explore").wait_for(timeout=120_000)
    wait_until_idle(page)
    assert page.get_by_role("heading", name="Explore").count() == 1
    shows_once(page, "cat (chelsea): 16 × 16 grid (rows × columns) of 14-px patches")


def test_two_sessions_never_see_each_others_state(app_url, chromium):
    first = chromium.new_context(viewport={"width": 1400, "height": 1700})
    second = chromium.new_context(viewport={"width": 1400, "height": 1700})
    try:
        upload_page, cnn_page = first.new_page(), second.new_page()
        for session_page in (upload_page, cnn_page):
            open_and_wait(
                session_page,
                app_url,
                text_as_written(session_page, "cat (chelsea): 16 × 16 grid (rows × columns)"),
            )

        # First: an upload with DINOv2 at layer 4. Second: the EfficientNet CNN on a built-in photo.
        upload_page.get_by_text("Upload", exact=True).click()
        upload_page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached")
        wait_until_idle(upload_page)
        _choose(cnn_page, "Model", "tf_efficientnet_lite0")
        upload_page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            str(BUILTIN_PHOTOS["astronaut"])
        )
        _choose(cnn_page, "Built-in photo", "coffee")
        text_as_written(
            upload_page, "astronaut.png: 16 × 16 grid (rows × columns) of 14-px patches"
        ).wait_for(timeout=120_000)
        wait_until_idle(upload_page)
        slider = upload_page.locator('input[type="range"][aria-label="Layer"]')
        slider.focus()
        for _ in range(7):
            slider.press("ArrowLeft")
        wait_until_idle(upload_page)
        # A fresh run of the second session after the first acted.
        reload_and_wait(cnn_page, cnn_page.get_by_text("coffee, 600 × 400 px (width × height)"))

        upload_caption = upload_page.locator('[data-testid="stCaptionContainer"]').first.inner_text()
        assert (
            "vit_small_patch14_dinov2" in upload_caption and "16 × 16 grid (rows × columns)" in upload_caption
        )
        shows_once(upload_page, "astronaut.png: 16 × 16 grid (rows × columns) of 14-px patches")
        shows_once(upload_page, "Layer 4, mean of heads: attention from class token")
        assert upload_page.get_by_text("tf_efficientnet_lite0").count() == 0

        cnn_caption = cnn_page.locator('[data-testid="stCaptionContainer"]').first.inner_text()
        assert "tf_efficientnet_lite0" in cnn_caption and "CNN" in cnn_caption
        shows_once(cnn_page, "coffee, 600 × 400 px (width × height)")
        assert cnn_page.get_by_text("astronaut").count() == 0 and cnn_page.get_by_text("Layer 4").count() == 0
        assert _query(cnn_page)["model"] == "tf_efficientnet_lite0" and _query(cnn_page)["image"] == "coffee"
        assert _query(upload_page)["model"] == "vit_small_patch14_dinov2" and "image" not in _query(
            upload_page
        )
        save_screenshot(upload_page, "share_two_sessions_upload_dinov2")
        save_screenshot(cnn_page, "share_two_sessions_cnn_coffee")
    finally:
        first.close()
        second.close()


def test_two_sessions_on_one_model_at_once_each_download_their_own_maps(app_url, chromium):
    """Two visitors, the same shared model, different photos, captures running at the same moment:
    every array each one downloads is the library's map of that visitor's own photo."""
    import numpy as np

    from vitviz.forward.attention import record_attention
    from vitviz.images import builtin_photo
    from vitviz.maths.attention import class_attention_map, rollout_relevance
    from vitviz.models import load_model

    photos = ("rocket", "china")  # photos no other test opens, so both captures really run now
    contexts = [chromium.new_context(viewport={"width": 1400, "height": 1700}) for _ in photos]
    try:
        pages = [context.new_page() for context in contexts]
        for page, photo in zip(pages, photos, strict=True):  # both scripts start before either ends
            page.goto(f"{app_url}/?image={photo}&layer=5", wait_until="commit")
        dino = load_model("vit_small_patch14_dinov2", "bundled")
        for page, photo in zip(pages, photos, strict=True):
            text_as_written(page, "Layer 5, mean of heads: attention from class token").first.wait_for(
                timeout=240_000
            )
            wait_until_idle(page)
            record = record_attention(dino, image_view(builtin_photo(photo), dino.facts, "crop"))
            expected = {
                "attention": class_attention_map(record, 5, None),
                "rollout": rollout_relevance(record),
            }
            for chart, values in expected.items():
                with page.expect_download(timeout=60_000) as download_info:
                    page.locator(f".st-key-explore_{chart}_npy").get_by_role("button").click()
                assert photo in download_info.value.suggested_filename
                downloaded = np.load(download_info.value.path())
                np.testing.assert_allclose(downloaded, values, rtol=1e-4, atol=1e-7)
            assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        for context in contexts:
            context.close()
