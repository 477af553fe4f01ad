"""Benchmark: the arena over the built-in photos, for a model given on the command line (1 thread).

Run as `.venv/bin/python bench/arena.py MODEL WEIGHTS [--steps N] [--random-orders K] [--methods ...]`
(with VITVIZ_RUNS_DIR set when MODEL is a run's name). Prints the machine, the load before and
after, seconds per image and in all, then the table and the verdict, and writes the JSON beside
the path given by --json-out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, not installed

import torch
from common import cpu_model

from vitviz.arena import ArenaSettings, arena_methods, arena_table, builtin_photo_images, score_image
from vitviz.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("weights")
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--random-orders", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{cpu_model()} · torch {torch.__version__} · 1 thread · load before {os.getloadavg()[0]:.2f}")
    loaded = load_model(args.model, args.weights, "cpu")
    methods = args.methods or arena_methods(loaded)
    settings = ArenaSettings(
        fractions=tuple(step / (args.steps - 1) for step in range(args.steps)),
        random_orders=args.random_orders,
    )
    print(f"{loaded.facts.name} · {len(methods)} methods: {' '.join(methods)}", flush=True)
    scores = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for image in builtin_photo_images()[: args.max_images]:
        begun, cpu_begun = time.perf_counter(), time.process_time()
        scores.append(score_image(loaded, image.load(), image.name, methods, settings))
        wall, cpu = time.perf_counter() - begun, time.process_time() - cpu_begun
        print(f"{image.name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    total, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
    table = arena_table(loaded.facts.name, loaded.trained, scores)
    print(
        f"{len(scores)} images in {total:.1f} s wall, {cpu_total:.1f} s CPU · load after {os.getloadavg()[0]:.2f}"
    )
    print(table.text())
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({**table.to_json(), "seconds": total, "cpu_seconds": cpu_total}))


if __name__ == "__main__":
    main()
