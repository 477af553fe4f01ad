"""Fine-tune speed on this CPU: a probe on cached features vs a naive loop, and images/s per mode.

Run: .venv/bin/python bench/finetune.py [--images 80] [--epochs 20] [--naive-epochs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F
from common import machine

from vitviz.finetune.data import builtin_shapes, limit_images, split_train_val
from vitviz.finetune.trainer import FinetuneConfig, finetune, prepare_model
from vitviz.models import load_model
from vitviz.preprocess import image_view

MODEL = "vit_small_patch14_dinov2"


def images_tensor(image_set, indices, facts) -> tuple[torch.Tensor, torch.Tensor]:
    pictures = torch.cat([image_view(image_set.items[i].load(), facts).tensor for i in indices])
    labels = torch.tensor([image_set.items[i].label for i in indices])
    return pictures, labels  # (n, 3, H, W), (n,)


def naive_probe_epoch(model, head, optimiser, images, labels, batch_size) -> None:
    """What a probe costs without caching: the frozen backbone runs again in every epoch."""
    order = torch.randperm(len(images))
    for start in range(0, len(images), batch_size):
        batch = order[start : start + batch_size]
        with torch.inference_mode():
            features = model.forward_head(model.forward_features(images[batch]), pre_logits=True)
        loss = F.cross_entropy(head(features.clone()), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def training_images_per_second(base, mode, images, labels, batch_size, steps) -> float:
    """Images per second of optimiser steps in last-k (k=2) or full mode (after one warm-up step)."""
    model, _ = prepare_model(base.model, 5, mode, last_k=2)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    timings = []
    for step in range(steps + 1):
        batch = torch.arange(step * batch_size, (step + 1) * batch_size) % len(images)
        started = time.perf_counter()
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step:  # the first step pays for allocations
            timings.append(time.perf_counter() - started)
    return batch_size / statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=80, help="images used (80% train)")
    parser.add_argument("--epochs", type=int, default=20, help="probe epochs on cached features")
    parser.add_argument("--naive-epochs", type=int, default=3, help="epochs of the naive loop")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per backbone mode")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    base = load_model(MODEL, "bundled", "cpu")
    image_set = limit_images(builtin_shapes(), args.images, seed=0)
    split = split_train_val(image_set.labels, 0.2, seed=0)
    print(
        f"model: {MODEL} (bundled) · {len(split.train)} train + {len(split.val)} val images of builtin:shapes"
    )

    # Probe as the app runs it: features once, then the head on cached features.
    started = time.perf_counter()
    config = FinetuneConfig(
        mode="probe", epochs=args.epochs, batch_size=args.batch_size, max_images=args.images
    )
    result = finetune(config, image_set, base=base)
    total = time.perf_counter() - started
    epoch_times = [row.seconds for row in result.metrics]
    cached_epoch = statistics.median(epoch_times)
    extraction = total - sum(epoch_times)
    used = len(split.train) + len(split.val)
    print(
        f"probe: feature extraction {extraction:.2f} s for {used} images = {used / extraction:.1f} images/s"
    )
    print(f"probe: head epoch on cached features, median of {len(epoch_times)}: {cached_epoch * 1000:.2f} ms")
    print(f"probe: final val acc {result.metrics[-1].val_acc:.1%}")

    # The naive loop: the frozen backbone runs every epoch.
    model, _ = prepare_model(base.model, len(image_set.classes), "probe", last_k=1)
    images, labels = images_tensor(image_set, split.train, base.facts)
    head = model.get_classifier()
    optimiser = torch.optim.AdamW(head.parameters(), lr=1e-2)
    naive_times = []
    for _ in range(args.naive_epochs):
        started = time.perf_counter()
        naive_probe_epoch(model, head, optimiser, images, labels, args.batch_size)
        naive_times.append(time.perf_counter() - started)
    naive_epoch = statistics.median(naive_times)
    print(f"naive: epoch that reruns the frozen backbone, median of {len(naive_times)}: {naive_epoch:.2f} s")
    print(f"ratio: cached probe epoch is {naive_epoch / cached_epoch:,.0f}× faster than a naive epoch")
    whole_cached = extraction + args.epochs * cached_epoch
    whole_naive = args.epochs * naive_epoch
    print(
        f"ratio: {args.epochs} epochs in all: cached {whole_cached:.1f} s vs naive {whole_naive:.1f} s "
        f"(estimated) = {whole_naive / whole_cached:.1f}×"
    )

    for mode in ("last-k", "full"):
        rate = training_images_per_second(base, mode, images, labels, args.batch_size, args.steps)
        label = "last-k (k=2)" if mode == "last-k" else "full"
        print(
            f"{label}: {rate:.1f} images/s training (forward + backward + AdamW step, batch {args.batch_size})"
        )


if __name__ == "__main__":
    main()
