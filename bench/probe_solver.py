"""The probe's head against scikit-learn's LogisticRegression on the very same frozen features.

For each data set and bundled model, one real probe (`vitviz.finetune.trainer.finetune`, mode probe)
runs end to end; the features its backbone pass produced are kept, and LogisticRegression (C = 1,
lbfgs) is fitted to the same training rows and scored on the same validation rows: with every default
(raw features, at most 100 iterations, as `LogisticRegression()` is mostly used), on raw features run
to convergence, and on features standardised as the probe standardises them.

--save-features DIR keeps each run's features; --load-features DIR hands a run those features instead
of running the backbone (the same rows, so the head phase of two versions of the trainer can be timed
on identical inputs without paying for the backbone twice).

Run: .venv/bin/python bench/probe_solver.py [--data builtin:digits builtin:shapes] [--max-images 400]
     [--epochs 30] [--threads 1] [--save-features DIR | --load-features DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from common import machine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vitviz.finetune import trainer
from vitviz.finetune.data import open_image_set
from vitviz.finetune.pair import PAIR_MODELS
from vitviz.finetune.trainer import FinetuneConfig, Progress, finetune
from vitviz.models import load_model


def timed_probe(config: FinetuneConfig, data: str, cached: Path | None) -> dict[str, object]:
    """One probe run; its features, split, phase times and final validation accuracy."""
    captured: list[torch.Tensor] = []
    extract = trainer._extract_features

    def keep_features(*args, **kwargs):
        features = torch.load(cached) if cached is not None else extract(*args, **kwargs)
        captured.append(features)
        return features

    marks: dict[str, float] = {}

    def on_progress(progress: Progress) -> None:
        if progress.phase == "train" and "features" not in marks:
            marks["features"] = time.perf_counter()

    trainer._extract_features = keep_features  # observing only: the trainer's own code still runs
    try:
        base = load_model(config.model, config.weights, config.device)
        started = time.perf_counter()
        result = finetune(config, open_image_set(data), base=base, on_progress=on_progress)
        ended = time.perf_counter()
    finally:
        trainer._extract_features = extract
    features = captured[0].numpy()
    labels = np.array([result.image_set.items[i].label for i in [*result.split.train, *result.split.val]])
    return {
        "features": features,
        "labels": labels,
        "train_count": len(result.split.train),
        "feature_s": marks.get("features", ended) - started,
        "head_s": ended - marks.get("features", ended),
        "val_acc": result.metrics[-1].val_acc,
        "epochs": len(result.metrics),
    }


def sklearn_accuracy(
    features: np.ndarray, labels: np.ndarray, train_count: int, scaled: bool, max_iter: int
) -> tuple[float, float]:
    """(validation accuracy, seconds) of LogisticRegression (C = 1) on the same rows."""
    model = LogisticRegression(max_iter=max_iter)
    if scaled:
        model = make_pipeline(StandardScaler(), model)
    started = time.perf_counter()
    model.fit(features[:train_count], labels[:train_count])
    seconds = time.perf_counter() - started
    return float(model.score(features[train_count:], labels[train_count:])), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["builtin:digits", "builtin:shapes"])
    parser.add_argument("--max-images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=None, help="default: the trainer's probe default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-features", type=Path, default=None)
    parser.add_argument("--load-features", type=Path, default=None)
    parser.add_argument("--no-oracle", action="store_true", help="leave LogisticRegression out (timing only)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # the 100-iteration default stops early
    torch.set_num_threads(args.threads)
    print(machine())
    print(
        "| data | model | images (train/val) | features s | head s | probe val acc | LogReg() val acc, s | "
        "LogReg raw, converged | LogReg standardised, converged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for data in args.data:
        for name, weights in PAIR_MODELS.values():
            config = FinetuneConfig(
                model=name, weights=weights, mode="probe", epochs=args.epochs, max_images=args.max_images
            )
            stem = f"{data.replace(':', '-')}-{name}-{args.max_images}.pt"
            cached = args.load_features / stem if args.load_features else None
            run = timed_probe(config, data, cached)
            if args.save_features is not None:
                args.save_features.mkdir(parents=True, exist_ok=True)
                torch.save(torch.from_numpy(run["features"]), args.save_features / stem)
            rows = (run["features"], run["labels"], run["train_count"])
            skipped = (float("nan"), 0.0)
            default = skipped if args.no_oracle else sklearn_accuracy(*rows, scaled=False, max_iter=100)
            raw = skipped if args.no_oracle else sklearn_accuracy(*rows, scaled=False, max_iter=5000)
            scaled = skipped if args.no_oracle else sklearn_accuracy(*rows, scaled=True, max_iter=5000)
            total = len(run["labels"])
            print(
                f"| {data} | {name} | {run['train_count']}/{total - run['train_count']} | "
                f"{run['feature_s']:.1f} | {run['head_s']:.2f} ({run['epochs']} epochs) | {run['val_acc']:.3f} | "
                f"{default[0]:.3f}, {default[1]:.2f} | {raw[0]:.3f}, {raw[1]:.2f} | {scaled[0]:.3f}, {scaled[1]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
