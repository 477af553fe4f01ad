"""Each long job's time-left estimate against the real time left, at 10%, 25% and 50% done.

Runs every job the app runs in the background (the same `vitviz.jobs.compute_job` calls, or
`head_importance` for the ranking) once, in this process, with a `JobProgress` that logs its
estimate at every update; once the job has ended, the real time left at each checkpoint is known.
Prints one Markdown row per job and the machine's load before and after.

    python bench/job_estimates.py [--only NAME]...
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import machine
from vitviz.forward.ablation import head_importance
from vitviz.images import builtin_photo
from vitviz.jobs import JobSpec, compute_job, job_unit
from vitviz.models import load_model
from vitviz.preprocess import image_view
from vitviz.progress import JobProgress, ProgressSnapshot

CHECKPOINTS = (0.10, 0.25, 0.50)
# The bundled DINOv2 has no classifier head: class-specific jobs run on the bundled CNN, the ranking
# on a ViT-S/16 with random weights (its time per head is what matters here, not what it ranks).
VIT, CNN = "vit_small_patch16_224", "tf_efficientnet_lite0"


def measure(
    work: Callable[[JobProgress], object], unit: str, trace: bool = False
) -> tuple[float, dict[float, tuple[float, float]]]:
    """(seconds in all, {checkpoint: (estimated seconds left, real seconds left)}).

    With `trace`, every update's time, units done and estimate go to stderr beside the real time left.
    """
    log: list[tuple[float, ProgressSnapshot]] = []
    progress = JobProgress(unit, on_update=lambda snapshot: log.append((time.monotonic(), snapshot)))
    started = time.monotonic()
    work(progress)
    ended = time.monotonic()
    if trace:
        for moment, snapshot in log:
            estimate = "-" if snapshot.eta_s is None else f"{snapshot.eta_s:.1f}"
            print(
                f"{moment - started:7.2f} s  {snapshot.done:6.2f}/{snapshot.total:.0f}  estimate {estimate}"
                f"  real {ended - moment:.1f}",
                file=sys.stderr,
            )
    found = {}
    for checkpoint in CHECKPOINTS:
        for moment, snapshot in log:
            if snapshot.fraction >= checkpoint and snapshot.eta_s is not None:
                found[checkpoint] = (snapshot.eta_s, ended - moment)
                break
    return ended - started, found


def jobs() -> dict[str, tuple[str, Callable[[JobProgress], object]]]:
    vit, cnn = load_model(VIT, "random", "cpu"), load_model(CNN, "bundled", "cpu")
    photo = builtin_photo("coffee")

    def job(spec: JobSpec, loaded) -> tuple[str, Callable[[JobProgress], object]]:
        return job_unit(spec), lambda progress: compute_job(spec, loaded, [photo], progress)

    return {
        "Score-CAM map, EfficientNet-Lite0 (1,280 masks in batches of 32)": job(
            JobSpec("explanation", CNN, "bundled", "cpu", {"method": "scorecam"}), cnn
        ),
        "Ablation-CAM map, EfficientNet-Lite0 (1,280 channels)": job(
            JobSpec("explanation", CNN, "bundled", "cpu", {"method": "ablationcam"}), cnn
        ),
        "faithfulness + ROAD, EfficientNet-Lite0, Grad-CAM and Integrated Gradients (ROAD's 2 maps and 45 imputations, then 7 deletion steps)": job(
            JobSpec("faithfulness", CNN, "bundled", "cpu", {"methods": ["gradcam", "integrated-gradients"]}),
            cnn,
        ),
        "sanity check, EfficientNet-Lite0, Grad-CAM (one map per stage)": job(
            JobSpec("sanity", CNN, "bundled", "cpu", {"method": "gradcam"}), cnn
        ),
        "drop probe in 3 orders, EfficientNet-Lite0, Grad-CAM, 21 points": job(
            JobSpec("probe", CNN, "bundled", "cpu", {"fractions": [step / 20 for step in range(21)]}), cnn
        ),
        "head ranking, ViT-S/16 (72 heads, 16 per forward)": (
            "heads",
            lambda progress: head_importance(vit, image_view(photo, vit.facts), "zero", progress=progress),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", default=[], help="run only the jobs whose name contains this (repeatable)"
    )
    parser.add_argument("--trace", action="store_true", help="every update's estimate on stderr")
    args = parser.parse_args()
    print(machine())
    print(f"load before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print(
        "| job | time | "
        + " | ".join(f"at {checkpoint:.0%}: estimate / real left (error)" for checkpoint in CHECKPOINTS)
        + " | load after |"
    )
    print("|---|---|" + "---|" * (len(CHECKPOINTS) + 1))
    for name, (unit, work) in jobs().items():
        if args.only and not any(part in name for part in args.only):
            continue
        total, found = measure(work, unit, args.trace)
        cells = []
        for checkpoint in CHECKPOINTS:
            if checkpoint not in found:
                cells.append("no update there")
                continue
            estimate, real = found[checkpoint]
            cells.append(f"{estimate:.1f} / {real:.1f} s ({(estimate - real) / real:+.0%})")
        print(
            f"| {name} | {total:.1f} s | " + " | ".join(cells) + f" | load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print(f"load after: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
