"""Benchmark: mean attention distance over 10 images with bundled DINOv2 ViT-S/14 at 224 px on CPU.

Run as `.venv/bin/python bench/attention_distance.py`. Prints the median of 3 interleaved runs of the library
call (images batched, each layer's attention reduced as it is computed), of the naive way (one
image at a time, all attention kept, distances in NumPy) and of a plain forward pass without
attention capture (the floor), with their ratios. Target: the library call under 5 s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

import numpy as np
import skimage
import torch
from common import cpu_model, interleaved_medians

from vitviz.forward.attention import record_attention
from vitviz.forward.distance import attention_distances_over_images
from vitviz.images import BUILTIN_PHOTOS, builtin_photo, load_image_file
from vitviz.maths.distance import mean_attention_distance
from vitviz.models import load_model
from vitviz.preprocess import image_view

RUNS = 3
TARGET_S = 5.0
# Two more photos shipped with scikit-image make ten distinct images with the eight built-in ones.
EXTRA_PHOTOS = ("horse.png", "motorcycle_right.png")


def median_seconds(works: dict[str, Callable[[], object]]) -> dict[str, float]:
    return interleaved_medians(works, RUNS)


def main() -> None:
    loaded = load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    data_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    images = [builtin_photo(name) for name in BUILTIN_PHOTOS]
    images += [load_image_file(os.path.join(data_dir, name)) for name in EXTRA_PHOTOS]
    assert len(images) == 10

    def library() -> np.ndarray:
        return attention_distances_over_images(
            loaded, [image_view(image, loaded.facts) for image in images]
        ).mean

    def naive() -> np.ndarray:
        facts = loaded.facts
        per_image = [
            mean_attention_distance(
                record_attention(loaded, image_view(image, loaded.facts)).attentions,
                facts.grid_size,
                facts.stride_px,
                facts.num_prefix_tokens,
            )
            for image in images
        ]
        return np.mean(per_image, axis=0)

    @torch.inference_mode()
    def forward_only() -> None:
        pixels = torch.cat([image_view(image, loaded.facts).tensor for image in images])
        loaded.model(pixels)

    np.testing.assert_allclose(library(), naive(), rtol=1e-4, atol=1e-3)  # same numbers, both ways
    medians = median_seconds({"library": library, "naive": naive, "forward": forward_only})
    library_s, naive_s, forward_s = medians["library"], medians["naive"], medians["forward"]

    print(
        f"CPU: {cpu_model()} · {os.cpu_count()} cores · torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(f"mean attention distance, {len(images)} images, DINOv2 ViT-S/14 at 224 px, median of {RUNS} runs")
    print(
        f"  library (batched, reduced per layer): {library_s:6.2f} s  target < {TARGET_S:.0f} s: "
        f"{'met' if library_s < TARGET_S else 'MISSED'}"
    )
    print(
        f"  naive (one image at a time, NumPy):   {naive_s:6.2f} s  ({naive_s / library_s:.2f}× the library)"
    )
    print(
        f"  forward only, no capture (floor):     {forward_s:6.2f} s  ({library_s / forward_s:.2f}× of it in the library)"
    )


if __name__ == "__main__":
    main()
