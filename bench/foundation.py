"""Foundation benchmarks: capture overhead, rollout time, slider-move time, cold start, memory.

Run with `make bench` or `.venv/bin/python bench/foundation.py`. Prints medians and ratios
measured in this one run, with the machine's details; paste them into BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_app, wait_until_idle  # noqa: E402
from vitviz.capture import capture_attention  # noqa: E402
from vitviz.forward.attention import record_attention  # noqa: E402
from vitviz.images import builtin_photo  # noqa: E402
from vitviz.maths.attention import rollout_relevance  # noqa: E402
from vitviz.maths.rollout import attention_rollout  # noqa: E402
from vitviz.models import load_model  # noqa: E402
from vitviz.preprocess import (  # noqa: E402
    image_view,
)


def median_ms(function: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def capture_overhead(name: str, weights: str, repeats: int = 15) -> None:
    loaded = load_model(name, weights, "cpu")
    pixels = image_view(builtin_photo("cat (chelsea)"), loaded.facts).tensor

    def plain() -> None:
        with torch.inference_mode():
            loaded.model(pixels)

    def captured() -> None:
        capture_attention(loaded.model, pixels)

    for _ in range(2):
        plain(), captured()
    # Interleave the two so that noise from other processes falls on both alike.
    plain_times, capture_times = [], []
    for _ in range(repeats):
        for function, times in ((plain, plain_times), (captured, capture_times)):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    plain_ms = statistics.median(plain_times) * 1000
    capture_ms = statistics.median(capture_times) * 1000
    print(
        f"capture {name} ({weights}): fused forward {plain_ms:.1f} ms, with capture {capture_ms:.1f} ms, "
        f"ratio {capture_ms / plain_ms:.3f} (target ≤ 1.05)"
    )


def rollout_time() -> None:
    generator = torch.Generator().manual_seed(0)
    layers = [torch.randn(1, 12, 197, 197, generator=generator).softmax(-1) for _ in range(12)]
    ms = median_ms(lambda: attention_rollout(layers), repeats=30)
    untrained = load_model("vit_base_patch16_224", "random")
    record = record_attention(untrained, image_view(builtin_photo("cat (chelsea)"), untrained.facts))
    record_ms = median_ms(lambda: rollout_relevance(record), repeats=30)
    print(
        f"rollout ViT-B/16 (12 layers, 197 tokens): {ms:.2f} ms; from a page's record: {record_ms:.2f} ms (target < 10)"
    )


def slider_move_time(repeats: int = 10) -> None:
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.run()
    times = []
    for index in range(repeats):
        layer = index % 12
        start = time.perf_counter()
        app.slider(key="explore_layer").set_value(layer).run()
        times.append(time.perf_counter() - start)
        assert not app.exception
    print(
        f"Explore slider move (script rerun, server side): median {statistics.median(times) * 1000:.0f} ms (target < 100)"
    )


def cold_start(repeats: int = 3) -> None:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeats):
            start = time.perf_counter()
            with streamlit_app() as url:
                page = browser.new_page()
                page.goto(url)
                page.locator("text.gtitle", has_text="attention from class token").wait_for(timeout=120_000)
                times.append(time.perf_counter() - start)
                wait_until_idle(page)
                page.close()
        browser.close()
    print(
        f"cold start to first map (new server process, bundled DINOv2, weights already converted): "
        f"median {statistics.median(times):.1f} s of {[round(t, 1) for t in times]} (target < 15)"
    )


MEMORY_SCRIPT = """
import os, resource
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from vitviz.models import load_model
from vitviz.forward.attention import record_attention  # noqa: E402
from vitviz.images import builtin_photo
loaded = load_model("vit_base_patch16_224", "random", "cpu")
record_attention(loaded, builtin_photo("cat (chelsea)"))
rss_kb = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS")))
print(rss_kb / 1024**2, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)
"""


def resident_memory() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, cwd=REPO, check=True
    )
    rss, peak = (float(value) for value in result.stdout.split())
    print(
        f"resident memory with ViT-B/16 loaded and one capture: {rss:.2f} GiB (peak {peak:.2f} GiB, target < 2)"
    )


def main() -> None:
    print(machine())
    capture_overhead("vit_base_patch16_224", "random")
    capture_overhead("vit_small_patch14_dinov2", "bundled")
    capture_overhead("vit_small_r26_s32_224", "random")
    rollout_time()
    slider_move_time()
    resident_memory()
    cold_start()


if __name__ == "__main__":
    main()
