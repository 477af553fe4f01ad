"""Anatomy in a real browser: click a position or a head to see it large, and every tab with its twin."""

import os
import re

import pytest

from tests.support.browser import (
    click_data_point,
    open_and_wait,
    open_tab,
    save_screenshot,
    streamlit_app,
    text_as_written,
    wait_until_idle,
)
from tests.support.interventions import dinov2_probe_run
from tests.support.websocket_frames import record_frames, sent_for_a_layer_step

pytestmark = pytest.mark.browser

GRID = 16  # bundled DINOv2 at 224 px
GAP = 1  # blank cells between the small maps, as the page draws them
TIMEOUT_MS = 180_000


def _open_anatomy(page, app_url: str) -> None:
    # Through the app's navigation, as a user gets there (a first direct /anatomy on a fresh server
    # is served from the pages/ folder without app.py).
    open_and_wait(page, app_url, page.get_by_role("heading", name="Explore"), TIMEOUT_MS)
    page.get_by_role("link", name="Anatomy").click()
    page.get_by_text("From image to encoder, with this model's shapes").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)


def _click_small_map(page, chart_key: str, row: int, col: int) -> None:
    """Clicks the middle of small map (row, col) of a mosaic of 16×16 maps with 1-cell gaps."""
    chart = page.locator(f".st-key-{chart_key} .js-plotly-plot")
    # Drawn once the tab's slower work above it (the head-effect estimate) has finished.
    chart.locator(".main-svg").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    centre = (GRID - 1) / 2
    click_data_point(page, chart, col * (GRID + GAP) + centre, row * (GRID + GAP) + centre)


def _replaces(page, new: str, old: str) -> None:
    """Waits with a deadline for `new`; `old` must then be gone, with no exception on the page."""
    page.get_by_text(new).wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    assert page.get_by_text(old).count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0


def test_clicking_a_position_on_the_similarity_grid_enlarges_it(app_url, page):
    _open_anatomy(page, app_url)
    assert text_as_written(page, "16 × 16 grid (rows × columns)").count() >= 1
    open_tab(page, "Position embeddings", "Position (8, 8) · bundled (offline)", TIMEOUT_MS)

    row, col = 3, 12
    _click_small_map(page, "anatomy_posembed_grid_model", row, col)
    _replaces(page, f"Position ({row}, {col}) · bundled (offline)", "Position (8, 8) · bundled (offline)")
    save_screenshot(page, "anatomy_position_similarity_click")


def test_each_tab_renders_with_the_untrained_twin_beside_it(app_url, page):
    _open_anatomy(page, app_url)
    page.get_by_text("Compare with random weights").click()
    text_as_written(page, "Encoder input (257, 384) · random (untrained twin)").wait_for(timeout=TIMEOUT_MS)
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


def test_clicking_a_small_map_opens_that_head_large(app_url, page):
    _open_anatomy(page, app_url)
    open_tab(page, "All heads", "Layer 11, head 0: attention from class token", TIMEOUT_MS)

    layer, head = 4, 2
    _click_small_map(page, "anatomy_heads_mosaic_model", layer, head)
    _replaces(
        page,
        f"Layer {layer}, head {head}: attention from class token",
        "Layer 11, head 0: attention from class token",
    )
    save_screenshot(page, "anatomy_all_heads_click")

    # A click on a patch of the large map makes that patch the attending token.
    large = page.locator(".st-key-anatomy_heads_large_model .js-plotly-plot")
    row, col = 6, 9
    click_data_point(page, large, (col + 0.5) * 14 - 0.5, (row + 0.5) * 14 - 0.5)
    text_as_written(page, f"Layer {layer}, head {head}: attention from patch ({row}, {col})").wait_for(
        timeout=TIMEOUT_MS
    )
    wait_until_idle(page)
    assert text_as_written(page, f"All heads: attention from patch ({row}, {col})").count() == 1
    save_screenshot(page, "anatomy_all_heads_patch")


@pytest.mark.parametrize(
    ("tab", "expected"),
    [
        ("Resolution", "Rollout of layers 1–11 (layer 0 skipped"),
        ("Hybrid stem", "is a plain ViT"),
        ("Token norms", "Patch-token norm, before final norm"),
        ("Queries & keys", "Layer 11, head 0: 257 queries and 257 keys (PCA)"),
    ],
)
def test_each_tab_renders_without_errors(app_url, page, tab, expected):
    _open_anatomy(page, app_url)
    open_tab(page, tab, expected, TIMEOUT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, f"anatomy_{tab.lower().replace(' & ', '_').replace(' ', '_')}")


def test_a_slider_in_a_tab_reruns_that_tab_alone_and_the_photo_is_not_sent_again(app_url, page):
    frames = record_frames(page)
    _open_anatomy(page, app_url)
    open_tab(page, "Queries & keys", "Layer 11, head 0: 257 queries and 257 keys (PCA)", TIMEOUT_MS)
    assert any(b"What the model sees" in frame for frame in frames)

    sent = sent_for_a_layer_step(page, frames, "Layer 10, head 0: 257 queries and 257 keys (PCA)", TIMEOUT_MS)
    assert b"Layer 10, head 0: 257 queries" in sent
    assert b"What the model sees" not in sent, "the photo with the view's box was sent again for a layer step"
    assert b"Raw colour scale" not in sent, "the page above the tabs reran for a layer step"
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "anatomy_queries_keys_layer_step")


@pytest.fixture(scope="module")
def probe_app_url():
    """An app of its own whose runs folder holds the tiny DINOv2 shapes probe, so it can be picked."""
    run = dinov2_probe_run()
    previous = os.environ.get("VITVIZ_RUNS_DIR")
    os.environ["VITVIZ_RUNS_DIR"] = str(run.parent)
    try:
        with streamlit_app() as url:
            yield url
    finally:
        if previous is None:
            os.environ.pop("VITVIZ_RUNS_DIR", None)
        else:
            os.environ["VITVIZ_RUNS_DIR"] = previous


def _open_probe_all_heads(page, app_url: str) -> None:
    """Anatomy's All heads tab for the shapes probe, the only run of the probe app."""
    _open_anatomy(page, app_url)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator(".st-key-anatomy_model").click()
    page.get_by_role("option", name="run: DINOv2 ViT-S · probe · shapes").click()
    wait_until_idle(page)
    open_tab(page, "All heads", "Every head is on", TIMEOUT_MS)


def test_clicking_a_head_off_changes_the_prediction(probe_app_url, page):
    page.set_viewport_size({"width": 1400, "height": 3400})  # the whole 12-layer mosaic on screen to click
    _open_probe_all_heads(page, probe_app_url)
    page.get_by_text("switches the head off").click()
    wait_until_idle(page)

    layer, head = 11, 0
    _click_small_map(page, "anatomy_heads_mosaic_model", layer, head)
    page.get_by_text("With 1 head zeroed, ").wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    sentence = page.get_by_text("With 1 head zeroed, ").inner_text()
    found = re.search(r"goes from ([\d.]+)% to ([\d.]+)%", sentence)
    assert found, sentence
    assert found.group(1) != found.group(2), sentence  # the prediction changed
    assert (
        text_as_written(
            page, f"Layer {layer}, head {head}: attention from class token with 1 head off"
        ).count()
        >= 1
    )
    page.locator(".st-key-anatomy_ablation_after").scroll_into_view_if_needed()
    save_screenshot(page, "anatomy_head_switched_off")


def test_ranking_every_head_follows_the_worker_with_a_cancel_then_shows_its_agreement(probe_app_url, page):
    _open_probe_all_heads(page, probe_app_url)
    # The instant estimate first, then the exact ranking in a background worker.
    page.get_by_text("Heads that matter most here, by the estimate:").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Rank all 72 heads by their effect (zeroed)").click()
    # The worker loads the model and ranks 72 heads in batches of 16: seconds, while the bar is drawn.
    bar = page.get_by_text("Switching each head off in turn: ")
    bar.first.wait_for(timeout=TIMEOUT_MS)
    assert (
        page.locator(".st-key-anatomy_ablation_rank_job_0").get_by_role("button", name="Cancel").count() == 1
    )
    save_screenshot(page, "anatomy_ranking_running")
    agreement = page.get_by_text("The instant estimate ranked these heads with Spearman ρ = ")
    agreement.first.wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    assert page.get_by_text("Heads that matter most here: ").count() >= 1
    assert page.get_by_text("Switching each head off in turn: ").count() == 0  # the follower is gone
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "anatomy_ranking_done")
