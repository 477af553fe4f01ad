"""Benchmark: building the all-heads ("model view") figure of the Anatomy page.

Run as `.venv/bin/python bench/model_view.py`. Prints the median of 5 interleaved runs of:
- bundled DINOv2 ViT-S/14 at 224 px (12 layers × 6 heads, 16×16 grid): maps read from a captured
  attention record plus the one-heatmap mosaic figure, and the same plus its JSON (what Streamlit
  sends to the browser);
- a 12 layers × 12 heads model (ViT-B/16 at 224 px: 14×14 grid) — the mosaic figure, and for
  comparison the naive figure with one heatmap subplot per head (144 subplots), with their ratio.
The 12 × 12 maps are random numbers of the right shape: the figure's cost does not depend on them.
Attention capture itself is timed once apart: the page caches it and reuses it for every click.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

import numpy as np
import plotly.graph_objects as go
import torch
from common import cpu_model, interleaved_medians
from plotly.subplots import make_subplots

from vitviz.figures.anatomy import model_view_figure
from vitviz.figures.common import MAP_COLORSCALE
from vitviz.forward.attention import record_attention
from vitviz.images import builtin_photo
from vitviz.maths.model_view import model_view_maps
from vitviz.models import load_model
from vitviz.preprocess import image_view

RUNS = 5


def subplot_figure(maps: np.ndarray) -> go.Figure:
    """The naive model view: one heatmap subplot per layer and head."""
    layers, heads = maps.shape[:2]
    figure = make_subplots(rows=layers, cols=heads, horizontal_spacing=0.005, vertical_spacing=0.005)
    for layer in range(layers):
        for head in range(heads):
            figure.add_trace(
                go.Heatmap(z=maps[layer, head], colorscale=MAP_COLORSCALE, showscale=False),
                row=layer + 1,
                col=head + 1,
            )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False, autorange="reversed")
    return figure


def median_seconds(works: dict[str, Callable[[], object]]) -> dict[str, float]:
    return interleaved_medians(works, RUNS)


def main() -> None:
    loaded = load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    image = builtin_photo("cat (chelsea)")
    start = time.perf_counter()
    record = record_attention(loaded, image_view(image, loaded.facts))
    capture_s = time.perf_counter() - start
    wide = np.random.default_rng(0).random((12, 12, 14, 14))

    def dinov2_figure() -> go.Figure:
        return model_view_figure(model_view_maps(record), "all heads", selected=(11, 0))

    results = median_seconds(
        {
            "dinov2_12x6_figure": dinov2_figure,
            "dinov2_12x6_figure_json": lambda: dinov2_figure().to_json(),
            "vit_b_12x12_mosaic": lambda: model_view_figure(wide, "all heads", selected=(11, 0)),
            "vit_b_12x12_mosaic_json": lambda: model_view_figure(wide, "all heads").to_json(),
            "vit_b_12x12_subplots": lambda: subplot_figure(wide),
        }
    )
    mosaic_bytes = len(model_view_figure(wide, "all heads").to_json())
    subplot_bytes = len(subplot_figure(wide).to_json())

    print(f"CPU: {cpu_model()} · {os.cpu_count()} cores · torch {torch.__version__} · {RUNS} runs, median")
    print(f"attention capture, DINOv2 224 px (once, cached by the page): {capture_s * 1000:8.1f} ms")
    for name, seconds in results.items():
        print(f"{name:32s} {seconds * 1000:8.1f} ms")
    ratio = results["vit_b_12x12_subplots"] / results["vit_b_12x12_mosaic"]
    print(f"12×12: one mosaic heatmap is {ratio:.1f}× faster to build than 144 subplots")
    print(
        f"12×12 JSON sent to the browser: mosaic {mosaic_bytes / 1e3:.0f} kB, subplots {subplot_bytes / 1e3:.0f} kB"
    )


if __name__ == "__main__":
    main()
