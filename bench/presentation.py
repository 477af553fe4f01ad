"""Benchmark: time to the first figure in presentation mode, and PNG export time (first and later).

Run as `.venv/bin/python bench/presentation.py`. Time to first figure is measured in headless
Chromium against `streamlit run` on loopback, from `page.goto(/?present=1)` until the first slide's
Plotly figure is drawn: "cold" starts a fresh server each time (no model loaded yet; the server's own
start is not counted), "warm" opens fresh browser sessions on one server whose models are loaded.
Medians of 3 each. PNG export renders the Explore attention overlay with kaleido: the first export
(which starts Chromium) and the median of the 5 after it.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

import numpy as np
import torch
from common import cpu_model
from playwright.sync_api import Browser, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_app
from vitviz.export import figure_png
from vitviz.figures.common import attention_overlay_figure
from vitviz.forward.attention import record_attention
from vitviz.images import builtin_photo
from vitviz.maths.attention import class_attention_map
from vitviz.models import load_model
from vitviz.preprocess import image_view

LOADS = 3
LATER_EXPORTS = 5
FIRST_FIGURE = '[data-testid="stPlotlyChart"] .js-plotly-plot .main-svg'


def seconds_to_first_figure(browser: Browser, url: str, path: str = "/?present=1") -> float:
    """One fresh browser session: from navigation to the first slide's figure on screen."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        start = time.perf_counter()
        page.goto(f"{url}{path}")
        page.locator(FIRST_FIGURE).first.wait_for(state="visible", timeout=180_000)
        return time.perf_counter() - start
    finally:
        context.close()


def first_figure_times(browser: Browser) -> tuple[list[float], list[float], list[float]]:
    """Cold and warm presentation mode, and warm Explore (the app's main page) for comparison."""
    cold = []
    for _ in range(LOADS):
        with streamlit_app(timeout_s=120) as url:
            cold.append(seconds_to_first_figure(browser, url))
    with streamlit_app(timeout_s=120) as url:
        seconds_to_first_figure(browser, url)  # loads the models into this server's caches
        seconds_to_first_figure(browser, url, "/")
        warm = [seconds_to_first_figure(browser, url) for _ in range(LOADS)]
        explore = [seconds_to_first_figure(browser, url, "/") for _ in range(LOADS)]
    return cold, warm, explore


def png_export_times() -> tuple[float, list[float], int]:
    loaded = load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    image = builtin_photo("cat (chelsea)")
    record = record_attention(loaded, image_view(image, loaded.facts))
    figure = attention_overlay_figure(
        image_view(image, loaded.facts).pixels,
        class_attention_map(record, 11, None),
        loaded.facts.stride_px,
        "Layer 11, mean of heads: attention from class token",
    )
    start = time.perf_counter()
    png = figure_png(figure)
    first = time.perf_counter() - start
    later = []
    for _ in range(LATER_EXPORTS):
        start = time.perf_counter()
        figure_png(figure)
        later.append(time.perf_counter() - start)
    return first, later, len(png)


def main() -> None:
    print(
        f"CPU: {cpu_model()} · {os.cpu_count()} cores · torch {torch.__version__} · Python {platform.python_version()}"
    )
    first, later, png_bytes = png_export_times()
    later_median = statistics.median(later)
    print(f"PNG export (attention overlay, scale 2, {png_bytes / 1024:.0f} KiB):")
    print(f"  first            {first:6.2f} s  (starts headless Chromium)")
    print(f"  later, median {LATER_EXPORTS}  {later_median:6.2f} s  ({np.round(later, 2).tolist()})")
    print(f"  first / later    {first / later_median:6.1f}×")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            cold, warm, explore = first_figure_times(browser)
        finally:
            browser.close()
    cold_median, warm_median = statistics.median(cold), statistics.median(warm)
    print(f"Time to first figure, /?present=1 (median of {LOADS} fresh page loads):")
    print(f"  cold model caches {cold_median:6.2f} s  ({np.round(cold, 2).tolist()})")
    print(f"  warm model caches {warm_median:6.2f} s  ({np.round(warm, 2).tolist()})")
    print(f"  cold / warm       {cold_median / warm_median:6.1f}×")
    explore_median = statistics.median(explore)
    print(f"  Explore (/), warm {explore_median:6.2f} s  ({np.round(explore, 2).tolist()}), for comparison")


if __name__ == "__main__":
    main()
