"""Presentation mode in a real browser: ?present=1, Next/Previous and arrow keys, upload, themes, animation."""

import re

import pytest
from PIL import Image

from tests.support.browser import page_pause, save_screenshot, shows_once, wait_until_idle, wait_until_quiet
from tests.support.polling import wait_for
from tests.support.slides import SLIDE_TITLES
from vitviz.images import BUILTIN_PHOTOS
from vitviz.runs import short_run_title

pytestmark = pytest.mark.browser


def _title(page) -> str:
    return page.locator("h1.vv-title").inner_text()


def _caption(page) -> str:
    return page.locator(".vv-caption").inner_text()


def _wait_for_title(page, title: str, timeout_ms: int = 60_000) -> None:
    page.locator("h1.vv-title", has_text=title).wait_for(timeout=timeout_ms)
    wait_until_idle(page)


def _first_chart(page):
    """The slide's first Plotly figure, once plotly.js has drawn it (it renders after the run ends)."""
    chart = page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"] .js-plotly-plot').first
    chart.locator(".main-svg").first.wait_for(state="visible", timeout=60_000)
    return chart


def _background(page) -> str:
    return page.locator(".stApp").evaluate("element => getComputedStyle(element).backgroundColor")


def test_step_through_with_buttons_and_arrow_keys(app_url, page):
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(f"{app_url}/?present=1")  # the main URL jumps to presentation mode
    _wait_for_title(page, SLIDE_TITLES[0])
    assert "/present" in page.url and "present=1" in page.url
    assert not page.locator('[data-testid="stSidebar"]').is_visible()
    assert not page.locator('[data-testid="stHeader"]').is_visible()
    assert page.locator(".vv-progress").inner_text() == "1 / 7"
    save_screenshot(page, "present_slide_1")

    page.locator(".st-key-present_next").get_by_role("button").click()
    _wait_for_title(page, SLIDE_TITLES[1])
    page.locator(".st-key-present_previous").get_by_role("button").click()
    _wait_for_title(page, SLIDE_TITLES[0])

    for index in range(1, len(SLIDE_TITLES)):
        page.locator("h1.vv-title").click()  # focus on the page, not on a control
        page.keyboard.press("ArrowRight")
        _wait_for_title(page, SLIDE_TITLES[index])
        assert page.locator(".vv-progress").inner_text() == f"{index + 1} / 7"
        assert _first_chart(page).is_visible()
        assert page.locator('[data-testid="stException"]').count() == 0
        page.wait_for_timeout(500)  # plotly.js finishes drawing after the run
        save_screenshot(page, f"present_slide_{index + 1}")
    assert page.locator(".st-key-present_next").get_by_role("button").is_disabled()
    assert "slide=7" in page.url

    page.keyboard.press("ArrowLeft")
    _wait_for_title(page, SLIDE_TITLES[-2])
    page.keyboard.press("ArrowLeft")
    _wait_for_title(page, SLIDE_TITLES[-3])


def test_the_attention_animation_plays_through_the_layers(app_url, page):
    page.goto(f"{app_url}/?present=1&slide=4")
    _wait_for_title(page, SLIDE_TITLES[3])
    chart = _first_chart(page)
    assert chart.evaluate("gd => gd._transitionData._frames.length") == 12
    page.get_by_text("▶ Play").click()
    wait_for(  # 12 frames of 0.7 s, slower on a busy machine
        lambda: "layer 11" in chart.evaluate("gd => gd.layout.title.text"),
        90,
        "the animation to reach layer 11",
        interval_s=0.2,
        pause=page_pause(page),
    )
    save_screenshot(page, "present_animation_layer_11")


def test_upload_on_the_first_slide_carries_through_the_story(app_url, page):
    page.goto(f"{app_url}/?present=1")
    _wait_for_title(page, SLIDE_TITLES[0])
    page.get_by_text("Upload", exact=True).click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached", timeout=60_000)
    wait_until_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(BUILTIN_PHOTOS["astronaut"])
    )
    page.locator(".vv-caption", has_text="astronaut.png: a photo of 512 × 512 px (width × height)").wait_for(
        timeout=60_000
    )
    wait_until_idle(page)
    save_screenshot(page, "present_upload")
    page.locator("h1.vv-title").click()
    page.keyboard.press("ArrowRight")
    _wait_for_title(page, SLIDE_TITLES[1])
    shows_once(page, "astronaut.png: 16 × 16 grid (rows × columns) of 14-px patches")
    page.keyboard.press("ArrowLeft")
    _wait_for_title(page, SLIDE_TITLES[0])
    assert "astronaut.png: a photo of 512 × 512 px (width × height)" in _caption(
        page
    )  # kept while the picker was off screen


def test_dark_and_light_themes(app_url, page):
    page.goto(f"{app_url}/?present=1&slide=5&theme=dark")
    _wait_for_title(page, SLIDE_TITLES[4])
    assert _background(page) == "rgb(14, 17, 23)"
    chart_background = _first_chart(page).evaluate("gd => gd._fullLayout.paper_bgcolor")
    assert chart_background == "#0e1117"
    help_icons = page.locator('button[aria-label^="Help for"] svg')
    assert help_icons.count() >= 1
    strokes = help_icons.evaluate_all("icons => icons.map(icon => getComputedStyle(icon).stroke)")
    for stroke in strokes:  # light on the dark background (Streamlit's own is a 60% dark grey)
        red, green, blue = (int(part) for part in re.findall(r"\d+", stroke)[:3])
        assert 0.299 * red + 0.587 * green + 0.114 * blue > 150, strokes
    save_screenshot(page, "present_dark")
    page.locator(".st-key-present_dark").get_by_text("Dark").click()
    page.wait_for_url(re.compile(r"theme=light"), timeout=60_000)  # written at the end of the run
    wait_until_idle(page)
    assert _background(page) == "rgb(255, 255, 255)"
    save_screenshot(page, "present_light")


def test_leaving_presentation_mode_brings_back_the_sidebar(app_url, page):
    page.goto(f"{app_url}/?present=1&slide=2")
    _wait_for_title(page, SLIDE_TITLES[1])
    assert not page.locator('[data-testid="stSidebar"]').is_visible()
    page.locator(".st-key-present_fullscreen").get_by_text("Presentation mode").click()
    page.locator('[data-testid="stSidebar"]').wait_for(state="visible", timeout=60_000)
    wait_until_idle(page)
    assert page.locator('[data-testid="stSidebar"]').is_visible()
    assert "present=1" not in page.url and _title(page) == SLIDE_TITLES[1]
    assert page.locator(".st-key-present_patches_chart_png").get_by_role("button").is_visible()
    save_screenshot(page, "present_windowed")

    page.locator("h1.vv-title").click()
    page.keyboard.press("ArrowRight")
    _wait_for_title(page, SLIDE_TITLES[2])
    page.keyboard.press("ArrowRight")
    _wait_for_title(page, SLIDE_TITLES[3])
    with page.expect_download(timeout=60_000) as download_info:
        page.locator(".st-key-present_gif").get_by_role("button").click()
    assert download_info.value.suggested_filename == (
        "vit_small_patch14_dinov2__bundled__cat-chelsea__attention-per-layer.gif"
    )
    with Image.open(download_info.value.path()) as gif:
        assert gif.format == "GIF" and gif.n_frames == 12 and gif.size == (448, 448)
    save_screenshot(page, "present_windowed_animation")


def _wait_for_the_slide_to_finish(page, timeout_s: float = 240.0, quiet_s: float = 1.5) -> None:
    """Presentation mode hides the status widget: a slide is done when no spinner shows and its drawn
    charts stop changing in number for `quiet_s`."""
    charts = [-1]  # the count seen at the last poll

    def changing() -> bool:
        spinning = page.locator('[data-testid="stSpinner"]').count() > 0
        drawn = page.locator('[data-testid="stMain"] .js-plotly-plot .main-svg').count()
        changed, charts[0] = spinning or drawn != charts[0], drawn
        return changed

    wait_until_quiet(page, changing, timeout_s, quiet_s, "the slide kept changing")


def test_every_slide_fits_a_1440_by_1000_screen(tmp_path, monkeypatch, chromium):
    """Presentation mode on a laptop-sized screen: no slide scrolls, the pair slide (a trained pair, each
    side's top 5 beside its map) included; the pair slide shows a held-out digit."""
    from tests.support.browser import streamlit_app
    from tests.support.pairs import trained_pair

    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path))
    pair = trained_pair(tmp_path)
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    try:
        with streamlit_app() as url:
            for index, title in enumerate(SLIDE_TITLES, start=1):
                page.goto(f"{url}/?present=1&slide={index}")
                _wait_for_title(page, title, timeout_ms=240_000)
                _first_chart(page)
                _wait_for_the_slide_to_finish(page)
                scroll, visible = page.locator('[data-testid="stMain"]').evaluate(
                    "main => [main.scrollHeight, main.clientHeight]"
                )
                assert scroll <= visible, f"slide {index} scrolls: {scroll} px of content in {visible} px"
                assert page.locator('[data-testid="stException"]').count() == 0
                save_screenshot(page, f"present_pair_slide_{index}")
            source = page.locator('[data-testid="stMain"]').inner_text()
            assert "held-out “" in source and "of builtin:digits" in source
            # The runs are named by their titles, their folders only in a run's details.
            assert short_run_title(pair.vit) in source and pair.vit.name not in source
    finally:
        context.close()
