"""Benchmark of the interventions: head-ablation ranking time, and every CAM method against one forward pass.

Run: .venv/bin/python bench/interventions.py [--runs N] [--slow-runs N] [--device cuda] [--threads N]

Prints Markdown tables of medians measured in this one run, with the machine line. ViT-S/16 and
ViT-B/16 have random weights (timing only: the numbers say nothing about what the heads do).
Score-CAM and Ablation-CAM run one forward per channel of their layer, so they are timed with
fewer runs (--slow-runs; 0 skips them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # Score-CAM's and Ablation-CAM's progress bars
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from common import interleaved_medians, machine  # noqa: E402

from vitviz.forward.ablation import head_importance  # noqa: E402
from vitviz.images import builtin_photo  # noqa: E402
from vitviz.methods import METHODS, MethodUnavailableError, available_methods, explain_pixels  # noqa: E402
from vitviz.methods.cam_library import LIBRARY_CAMS, LibraryGradCAM, LibraryGradCAMPlusPlus  # noqa: E402
from vitviz.models import LoadedModel, load_model  # noqa: E402
from vitviz.preprocess import (  # noqa: E402
    image_view,
)

SLOW_METHODS = ("scorecam", "ablationcam")  # one forward per channel
CAM_METHODS = ("gradcam", "gradcam++", *(method.name for method in LIBRARY_CAMS))
REFERENCES: dict[str, Callable[[LoadedModel, torch.Tensor], object]] = {
    "library-gradcam": lambda loaded, pixels: LibraryGradCAM(loaded).explain(pixels),
    "library-gradcam++": lambda loaded, pixels: LibraryGradCAMPlusPlus(loaded).explain(pixels),
}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """The work, waiting for the GPU to finish so that wall time is the work's own."""

    def run() -> object:
        result = work()
        synchronise(device)
        return result

    return run


def ablation_table(device: str, runs: int, batch_size: int) -> list[str]:
    image = builtin_photo("coffee")
    rows = [
        "| model (random weights) | heads | forwards | ranking, median | per head |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("vit_small_patch16_224", "vit_base_patch16_224"):
        torch.manual_seed(0)
        loaded = load_model(name, "random", device)
        heads = loaded.facts.num_layers * loaded.facts.num_heads
        work = timed(
            lambda loaded=loaded: head_importance(
                loaded, image_view(image, loaded.facts), batch_size=batch_size
            ),
            loaded.device,
        )
        work()  # warm-up
        seconds = interleaved_medians({"rank": work}, runs)["rank"]
        forwards = -(-heads // batch_size)
        rows.append(
            f"| {name} | {heads} | {forwards} × {batch_size} | {seconds:.2f} s | {seconds / heads * 1000:.1f} ms |"
        )
    return rows


def cam_table(loaded: LoadedModel, label: str, runs: int, slow_runs: int) -> list[str]:
    pixels = image_view(builtin_photo("coffee"), loaded.facts).tensor.to(loaded.device)
    offered = set(available_methods(loaded.facts))

    def forward() -> object:
        with torch.inference_mode():
            return loaded.model(pixels)

    works: dict[str, Callable[[], object]] = {"forward": timed(forward, loaded.device)}
    slow: dict[str, Callable[[], object]] = {}
    for method in CAM_METHODS:
        if method not in offered or (method in SLOW_METHODS and slow_runs == 0):
            continue
        work = timed(lambda method=method: explain_pixels(loaded, pixels, method), loaded.device)
        (slow if method in SLOW_METHODS else works)[method] = work
    for name, reference in REFERENCES.items():
        works[name] = timed(lambda reference=reference: reference(loaded, pixels), loaded.device)
    unavailable: dict[str, str] = {}
    for name, work in list(works.items()) + list(slow.items()):
        try:
            work()  # warm-up
        except MethodUnavailableError as error:  # FullGrad on timm's fused norm-activation layers
            unavailable[name] = str(error)
            works.pop(name, None)
            slow.pop(name, None)
    medians = interleaved_medians(works, runs)
    if slow_runs > 0:
        for method, work in slow.items():
            medians[method] = interleaved_medians({method: work}, slow_runs)[method]
    base = medians["forward"]
    rows = [
        f"**{label}**, 1×3×{pixels.shape[-2]}×{pixels.shape[-1]}",
        "",
        "| method | median | × forward |",
        "|---|---:|---:|",
    ]
    for name, seconds in medians.items():
        title = METHODS[name].title if name in METHODS else name
        count = slow_runs if name in slow else runs
        rows.append(
            f"| {title} (`{name}`) | {seconds * 1000:.1f} ms | {seconds / base:.2f}× (median of {count}) |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per timing (default 5)")
    parser.add_argument(
        "--slow-runs", type=int, default=1, help="runs of Score-CAM and Ablation-CAM (0: skip)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="ablations per forward (default 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-ranking", action="store_true", help="time the CAM methods only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine() + (f" · {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""))
    print(f"device {args.device}; load {os.getloadavg()[0]:.2f} at start")
    print()
    if not args.skip_ranking:
        print("Head-ablation ranking (every head alone, top class's probability drop):")
        print()
        print("\n".join(ablation_table(args.device, args.runs, args.batch_size)))
        print()
    efficientnet = load_model("tf_efficientnet_lite0", "bundled", args.device)
    torch.manual_seed(0)
    vit = load_model("vit_small_patch16_224", "random", args.device)
    for loaded, label in ((efficientnet, "EfficientNet-Lite0 (bundled)"), (vit, "ViT-S/16 (random weights)")):
        print("\n".join(cam_table(loaded, label, args.runs, args.slow_runs)))
        print()
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
