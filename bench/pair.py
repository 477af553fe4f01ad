"""A ViT/CNN pair on this machine: each side's probe accuracy on builtin:digits and builtin:shapes, and
the time `finetune-pair` takes to train both, with the load the machine was under.

Run: .venv/bin/python bench/pair.py [--data builtin:digits builtin:shapes] [--max-images N] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from common import machine

from vitviz.finetune import pair as pair_module
from vitviz.finetune.pair import PAIR_MODELS, train_pair
from vitviz.finetune.trainer import FinetuneConfig


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def timed_pair(config: FinetuneConfig, data: str) -> tuple[float, dict[str, float], dict[str, float]]:
    """Trains one pair into a temporary folder.

    Returns:
        (seconds for the whole pair, seconds per side, final validation accuracy per side).
    """
    side_seconds: list[float] = []
    run_side = pair_module.execute_run

    def timed_side(*args, **kwargs):
        started = time.perf_counter()
        try:
            return run_side(*args, **kwargs)
        finally:
            side_seconds.append(time.perf_counter() - started)

    pair_module.execute_run = timed_side  # timing only: every call still goes to the worker's own code
    try:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            outcome = train_pair(config, data, Path(folder) / "pair", log=lambda line: None)
            total = time.perf_counter() - started
    finally:
        pair_module.execute_run = run_side
    accuracy = {side: result.metrics[-1].val_acc for side, result in outcome.results.items()}
    return total, dict(zip(outcome.results, side_seconds, strict=True)), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", nargs="+", default=["builtin:digits", "builtin:shapes"])
    parser.add_argument("--max-images", type=int, default=None, help="default: every image of each set")
    parser.add_argument("--repeats", type=int, default=1, help="pairs trained per data set (median time)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"machine: {machine()}")
    sides = ", ".join(f"{side} {name} ({weights})" for side, (name, weights) in PAIR_MODELS.items())
    print(f"pair: {sides}; probe, default epochs and learning rate, seed 0, 20% held out per class")
    print(
        "| data | images | ViT val acc | CNN val acc | ViT s | CNN s | pair s | runs | load before → after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for data in args.data:
        config = FinetuneConfig(mode="probe", max_images=args.max_images, device="cpu")
        load_before = load_average()
        totals, vit_times, cnn_times, accuracies = [], [], [], []
        for _ in range(args.repeats):
            total, seconds, accuracy = timed_pair(config, data)
            totals.append(total)
            vit_times.append(seconds["vit"])
            cnn_times.append(seconds["cnn"])
            accuracies.append(accuracy)
        images = "all" if args.max_images is None else str(args.max_images)
        print(
            f"| {data} | {images} | {accuracies[0]['vit']:.1%} | {accuracies[0]['cnn']:.1%} "
            f"| {statistics.median(vit_times):.0f} | {statistics.median(cnn_times):.0f} "
            f"| {statistics.median(totals):.0f} | {args.repeats} | {load_before} → {load_average()} |",
            flush=True,
        )
        # A seeded probe gives the same accuracy on every repeat; a difference would be a bug worth seeing.
        if any(accuracy != accuracies[0] for accuracy in accuracies):
            print(f"note: accuracies differed between repeats: {accuracies}")


if __name__ == "__main__":
    main()
