"""Benchmark of the Compare work: Grad-CAM and grad-rollout against a plain forward, and a page run.

Run: .venv/bin/python bench/compare.py [--repeats N] [--no-apptest] [--methods-only] [--threads N]

Prints medians measured in this one run, their ratios, and the machine. Targets: Grad-CAM and
gradient-weighted rollout each cost at most 2.5× a plain forward; the Compare page with three
small models answers in under 3 s (cached model loads excluded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from common import machine  # noqa: E402

from vitviz.images import builtin_photo  # noqa: E402
from vitviz.methods import explain_pixels, explanation_map, method_title  # noqa: E402
from vitviz.models import LoadedModel, load_model  # noqa: E402
from vitviz.predict import predict  # noqa: E402
from vitviz.preprocess import (  # noqa: E402
    image_view,
)

# The Compare page's three small models: its two defaults and a third, untrained DeiT-S distilled.
PAGE_MODELS = (
    ("vit_small_patch14_dinov2", "bundled", "rollout"),
    ("tf_efficientnet_lite0", "bundled", "gradcam"),
    ("deit_small_distilled_patch16_224", "random", "rollout"),
)


def median_seconds(work: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_forward(loaded: LoadedModel, pixels: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return loaded.model(pixels)

    return run


def method_cost(loaded: LoadedModel, method: str, repeats: int) -> tuple[float, float]:
    """Medians of a plain forward and of one explanation, interleaved so load drifts hit both alike."""
    pixels = image_view(builtin_photo("coffee"), loaded.facts).tensor
    forward = plain_forward(loaded, pixels)
    explain = lambda: explain_pixels(loaded, pixels, method)  # noqa: E731
    forward(), explain(), forward(), explain()  # warm up both
    forward_times, method_times = [], []
    for _ in range(repeats):
        for work, times in ((forward, forward_times), (explain, method_times)):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
    return statistics.median(forward_times), statistics.median(method_times)


def page_library_calls(models: list[LoadedModel], repeats: int) -> float:
    """The library calls a Compare page run makes: top-5 of each model with a head, one map each."""
    image = builtin_photo("coffee")

    def run() -> None:
        for loaded, (_, _, method) in zip(models, PAGE_MODELS, strict=True):
            if loaded.facts.has_classifier:
                predict(loaded, [image_view(image, loaded.facts)], topk=5)
            explanation_map(loaded, image_view(image, loaded.facts), method)

    return median_seconds(run, repeats, warmup=1)


def apptest_rerun() -> tuple[float, float]:
    """The page in Streamlit's AppTest with three models: first run (loads models), then a new photo."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.switch_page("pages/compare.py")
    start = time.perf_counter()
    at.run()
    at.toggle(key="compare_third_model").set_value(True).run()
    first = time.perf_counter() - start
    assert not at.exception, at.exception
    times = []
    for photo in ("coffee", "rocket", "flower"):  # each a cache miss for predictions and maps
        start = time.perf_counter()
        at.selectbox(key="compare_photo").set_value(photo).run()
        times.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-apptest", action="store_true", help="skip the AppTest page timing")
    parser.add_argument(
        "--methods-only", action="store_true", help="time the methods against a forward, not the page"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default torch's own); 1 is steadier on a machine shared with other work",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine())
    print()

    efficientnet = load_model("tf_efficientnet_lite0", "bundled")
    forward, gradcam = method_cost(efficientnet, "gradcam", args.repeats)
    print(f"EfficientNet-Lite0 (bundled), 1×3×224×224, median of {args.repeats}:")
    print(f"  plain forward      {forward * 1000:8.1f} ms")
    print(f"  Grad-CAM           {gradcam * 1000:8.1f} ms   ratio {gradcam / forward:.2f}× (target ≤ 2.5×)")

    torch.manual_seed(0)
    vit = load_model("vit_small_patch16_224", "random")
    forward, grad_rollout = method_cost(vit, "grad-rollout", args.repeats)
    print(
        f"ViT-S/16 (random weights, fused attention in the plain forward), 1×3×224×224, median of {args.repeats}:"
    )
    print(f"  plain forward      {forward * 1000:8.1f} ms")
    print(
        f"  grad-rollout       {grad_rollout * 1000:8.1f} ms   ratio {grad_rollout / forward:.2f}× (target ≤ 2.5×)"
    )
    for method in ("chefer", "attnlrp", "legrad"):
        own_forward, seconds = method_cost(vit, method, args.repeats)
        print(
            f"  {method_title(method):24} {seconds * 1000:8.1f} ms   ratio {seconds / own_forward:.2f}× "
            f"(against its own interleaved forward, {own_forward * 1000:.1f} ms)"
        )
    print()
    if args.methods_only:
        return

    models = [load_model(name, weights) for name, weights, _ in PAGE_MODELS]
    calls = page_library_calls(models, max(3, args.repeats // 3))
    names = ", ".join(f"{name} ({weights}, {method})" for name, weights, method in PAGE_MODELS)
    print(f"Compare page, library calls of one run for {names}:")
    print(f"  predictions + maps {calls:8.2f} s    (target < 3 s; model loads excluded)")
    if not args.no_apptest:
        first, rerun = apptest_rerun()
        print("Compare page in AppTest, three models:")
        print(f"  first run          {first:8.2f} s    (builds and loads the three models)")
        print(
            f"  new photo, rerun   {rerun:8.2f} s    (median of 3; models cached, maps and predictions not)"
        )


if __name__ == "__main__":
    main()
