"""The instant head-ranking estimate against the exact ranking: Spearman agreement and time.

The exact ranking switches each head off in turn (`head_importance`); the estimate takes every head's
first-order effect from one backward pass (`head_importance_estimate`). Measured on the DINOv2 probe
of the test suite (built-in shapes, held-out pictures) and on two tiny random-weight families.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm
import torch

from bench.common import machine
from tests.support.interventions import dinov2_probe_run, shape_picture
from vitviz.forward.ablation import head_importance, head_importance_estimate
from vitviz.images import builtin_photo
from vitviz.maths.ablation import ranking_agreement
from vitviz.models import LoadedModel, load_model, model_facts
from vitviz.preprocess import image_view


def measure(label: str, loaded: LoadedModel, images: list) -> None:
    for mode in ("zero", "mean"):
        agreements, estimate_s, exact_s = [], [], []
        for image in images:
            started = time.perf_counter()
            estimate = head_importance_estimate(loaded, image_view(image, loaded.facts), mode)
            estimate_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            exact = head_importance(loaded, image_view(image, loaded.facts), mode)
            exact_s.append(time.perf_counter() - started)
            agreements.append(ranking_agreement(estimate, exact))
        print(
            f"| {label} | {mode} | {len(images)} | {statistics.median(agreements):.2f} "
            f"({min(agreements):.2f}–{max(agreements):.2f}) | {statistics.median(estimate_s):.2f} s "
            f"| {statistics.median(exact_s):.2f} s |",
            flush=True,
        )


def main() -> None:
    print(machine(), f"load {os.getloadavg()[0]:.1f}")
    print("| model | ablation | images | Spearman, median (range) | estimate | exact |")
    print("|---|---|---|---|---|---|")
    probe = load_model(str(dinov2_probe_run()))
    shapes = [shape_picture(shape, seed=99) for shape in ("square", "circle", "triangle", "star", "cross")]
    measure("DINOv2 ViT-S/14 probe, built-in shapes (trained)", probe, shapes)
    photos = [builtin_photo(name) for name in ("cat (chelsea)", "coffee", "astronaut")]
    for name, kwargs in (
        ("vit_tiny_patch16_224", {"img_size": 64, "depth": 4}),
        ("vit_tiny_r_s16_p8_224", {"img_size": 96, "depth": 4}),
    ):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, **kwargs).eval().requires_grad_(False)
        loaded = LoadedModel(model, model_facts(name, model), "random", torch.device("cpu"), None)
        measure(f"{name}, 4 layers, random weights", loaded, photos)


if __name__ == "__main__":
    main()
