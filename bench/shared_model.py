"""Captures per second on ONE shared model from 1, 2 and 4 threads, and what the per-model lock costs.

The app loads each model once for every visitor, so concurrent sessions capture on the same module.
Every capture holds the model's lock and binds its hooks to its own thread (vitviz.capture); this
script measures the throughput that leaves, and the single-user cost of the lock against the same
capture without it (the behaviour before the lock, reproduced here by a subclass).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/shared_model.py
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import interleaved_medians, machine  # noqa: E402

from vitviz.capture import AttentionCapture  # noqa: E402
from vitviz.images import builtin_photo  # noqa: E402
from vitviz.models import load_model  # noqa: E402
from vitviz.preprocess import (  # noqa: E402
    image_view,
)

ROUNDS = 15
CAPTURES_PER_THREAD = 8


class UnguardedCapture(AttentionCapture):
    """The capture as it was before the lock: no lock, hooks that record every thread's forward."""

    def __enter__(self) -> UnguardedCapture:
        self._thread = threading.get_ident()
        self._attach()
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._restore()

    def _hook(self, module: torch.nn.Module, function) -> None:  # type: ignore[override]
        self._handles.append(module.register_forward_hook(function))


@torch.inference_mode()
def capture(model: torch.nn.Module, pixels: torch.Tensor, kind: type[AttentionCapture]) -> None:
    with kind(model):
        model(pixels)


def captures_per_second(model: torch.nn.Module, pixels: torch.Tensor, threads: int) -> float:
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(CAPTURES_PER_THREAD):
            capture(model, pixels, AttentionCapture)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * CAPTURES_PER_THREAD / (time.perf_counter() - start)


def main() -> None:
    loaded = load_model("vit_small_patch14_dinov2", "bundled", "cpu")
    pixels = image_view(builtin_photo("cat (chelsea)"), loaded.facts).tensor
    model = loaded.model
    capture(model, pixels, AttentionCapture)  # warm-up
    print(machine())
    print(f"load before: {os.getloadavg()[0]:.2f}")
    medians = interleaved_medians(
        {
            "with lock": lambda: capture(model, pixels, AttentionCapture),
            "without lock": lambda: capture(model, pixels, UnguardedCapture),
        },
        ROUNDS,
    )
    print("| what | measured |")
    print("|---|---|")
    ratio = medians["with lock"] / medians["without lock"]
    print(
        f"| one capture, bundled DINOv2 224 px, with / without the lock | "
        f"{medians['with lock'] * 1e3:.1f} / {medians['without lock'] * 1e3:.1f} ms = **{ratio:.3f}×** |"
    )
    for threads in (1, 2, 4):
        rates = sorted(captures_per_second(model, pixels, threads) for _ in range(3))
        print(f"| captures per second, {threads} thread(s) on the one model | **{rates[1]:.2f}** |")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
