"""The CUDA paths, once, on a GPU: device picker, capture against a fused forward, CPU/GPU agreement,
predictions, the head-ablation ranking and every explanation method's cost against a forward.

Weights are random (seeded) here: on a GPU machine without a network only timing and agreement are
measured, and random weights cost the same as trained ones. Prints Markdown tables; on a machine
without CUDA it says so and exits 0.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gpu.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vitviz.capture import capture_attention  # noqa: E402
from vitviz.device import available_devices, default_device  # noqa: E402
from vitviz.forward.ablation import head_importance  # noqa: E402
from vitviz.forward.attention import record_attention  # noqa: E402
from vitviz.images import builtin_photo  # noqa: E402
from vitviz.methods import available_methods, explanation_map  # noqa: E402
from vitviz.models import load_model  # noqa: E402
from vitviz.predict import predict  # noqa: E402
from vitviz.preprocess import (  # noqa: E402
    image_view,
)

RUNS = 20
# Methods that run hundreds of forwards by design: timed once.
_MANY_FORWARDS = {
    "scorecam",
    "ablationcam",
    "occlusion",
    "integrated-gradients",
    "smoothgrad",
    "gradient-shap",
}


def cuda_median(work: Callable[[], object], runs: int = RUNS) -> float:
    """Median seconds of `work` with the GPU synchronised around each run."""
    synchronise = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    work()
    synchronise()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        synchronise()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seeded_random(name: str, device: str):
    torch.manual_seed(0)
    return load_model(name, "random", device)


def capture_table(device: str) -> None:
    print("\n| model (random weights) | batch | fused forward | capture | ratio |")
    print("|---|---|---|---|---|")
    for name in ("vit_base_patch16_224", "vit_small_patch14_dinov2", "vit_small_r26_s32_224"):
        loaded = seeded_random(name, device)
        for batch in (1, 32):
            pixels = torch.randn(batch, 3, *loaded.facts.input_size, device=device)

            @torch.inference_mode()
            def fused(model=loaded.model, pixels=pixels) -> None:
                model(pixels)

            def captured(model=loaded.model, pixels=pixels) -> None:
                capture_attention(model, pixels)

            plain, capture = cuda_median(fused), cuda_median(captured)
            print(
                f"| {name} | {batch} | {plain * 1e3:.2f} ms | {capture * 1e3:.2f} ms | {capture / plain:.2f}× |"
            )


def agreement(device: str) -> None:
    image = builtin_photo("cat (chelsea)")
    torch.manual_seed(0)
    cpu = load_model("vit_small_patch14_dinov2", "random", "cpu")
    gpu = load_model("vit_small_patch14_dinov2", "random", "cpu")
    gpu.model.load_state_dict(cpu.model.state_dict())
    gpu.model.to(device)
    gpu = type(gpu)(gpu.model, gpu.facts, gpu.weights, torch.device(device), gpu.labels)
    on_cpu, on_gpu = (
        record_attention(cpu, image_view(image, cpu.facts)),
        record_attention(gpu, image_view(image, gpu.facts)),
    )
    gap = float(np.abs(on_cpu.attentions - on_gpu.attentions).max())
    print(f"\nAttention of one random ViT-S/14 on the cat, CPU vs {device}: largest difference {gap:.2e}")
    cnn = seeded_random("tf_efficientnet_lite0", device)
    print(
        f"predict on {device}: top class {predict(cnn, [image_view(image, cnn.facts)], topk=1)[0][0].index} (random weights)"
    )


def ablation_table(device: str) -> None:
    image = builtin_photo("cat (chelsea)")
    print("\n| model (random weights) | heads | ranking (batches of 16) | per head |")
    print("|---|---|---|---|")
    for name in ("vit_small_patch16_224", "vit_base_patch16_224"):
        loaded = seeded_random(name, device)
        heads = loaded.facts.num_layers * loaded.facts.num_heads
        seconds = cuda_median(
            lambda loaded=loaded: head_importance(loaded, image_view(image, loaded.facts)), runs=3
        )
        print(f"| {name} | {heads} | {seconds:.2f} s | {seconds / heads * 1e3:.1f} ms |")


def methods_table(device: str) -> None:
    image = builtin_photo("coffee")
    print("\n| method | EfficientNet-Lite0 × forward | ViT-S/16 × forward |")
    print("|---|---|---|")
    models = {
        name: seeded_random(name, device) for name in ("tf_efficientnet_lite0", "vit_small_patch16_224")
    }
    forwards = {}
    for name, loaded in models.items():
        pixels = image_view(image, loaded.facts).tensor.to(device)

        @torch.inference_mode()
        def forward(model=loaded.model, pixels=pixels) -> None:
            model(pixels)

        forwards[name] = cuda_median(forward)
    names = sorted(set().union(*(available_methods(loaded.facts) for loaded in models.values())))
    for method in names:
        cells = []
        for name, loaded in models.items():
            if method not in available_methods(loaded.facts):
                cells.append("—")
                continue
            runs = 1 if method in _MANY_FORWARDS else 5
            try:
                seconds = cuda_median(
                    lambda loaded=loaded, method=method: explanation_map(
                        loaded, image_view(image, loaded.facts), method
                    ),
                    runs=runs,
                )
            except (ValueError, RuntimeError) as error:
                cells.append(f"fails: {str(error).splitlines()[0][:60]}")
                continue
            cells.append(f"{seconds / forwards[name]:.1f}× ({seconds * 1e3:.0f} ms)")
        print(f"| {method} | {' | '.join(cells)} |")


def main() -> None:
    print(f"devices: {available_devices()}; default: {default_device()}")
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure")
        return
    device = default_device()
    print(f"{torch.cuda.get_device_name(0)} · torch {torch.__version__} · CUDA {torch.version.cuda}")
    capture_table(device)
    agreement(device)
    ablation_table(device)
    methods_table(device)


if __name__ == "__main__":
    main()
