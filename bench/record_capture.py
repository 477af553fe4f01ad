"""What the app's attention record costs against a plain fused forward, bundled DINOv2 at 224 px.

Five pieces of work, interleaved round by round so load from other work falls on all alike:
- fused: the model's own forward (fused attention), as a prediction runs it;
- unfused, nothing kept: timm's own unfused attention and no capture at all, the floor of any
  capture that must materialise the probabilities with timm's operations;
- kept and stacked: every layer's attention kept by the capture and stacked into one array
  afterwards (how `record_attention` worked first);
- copied as made: timm's unfused forward, each layer's attention copied into one preallocated array
  the moment it is made (how `record_attention` worked next);
- written in place: `capture_attention(..., into=...)`, each layer's `q @ kᵀ` and softmax made in
  its slice of the preallocated array (how `record_attention` works now).

Usage: `python bench/record_capture.py [--rounds N] [--weights random] [--device cuda]`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import interleaved_medians, machine
from vitviz.capture import AttentionCapture, attention_modules, capture_attention, model_lock
from vitviz.images import BUILTIN_PHOTOS, builtin_photo
from vitviz.models import load_model
from vitviz.preprocess import image_view


class _CopiedAsMade(AttentionCapture):
    """The capture before it wrote into the record: timm's forward runs, a hook copies each layer."""

    def _write_into_record(self, module: torch.nn.Module) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--weights", default="bundled", help="bundled, or random (same cost, no files)")
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args()
    rounds = arguments.rounds
    loaded = load_model("vit_small_patch14_dinov2", arguments.weights, arguments.device)
    facts = loaded.facts
    image = builtin_photo(next(iter(BUILTIN_PHOTOS)))
    pixels = image_view(image, facts, "crop").tensor.to(loaded.device)
    tokens = facts.num_tokens

    @torch.inference_mode()
    def fused() -> None:
        loaded.model(pixels)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()  # the other two end with a copy to the CPU, which waits too

    @torch.inference_mode()
    def unfused_nothing_kept() -> None:
        modules = attention_modules(loaded.model)
        with model_lock(loaded.model):
            flags = [module.fused_attn for module in modules]
            for module in modules:
                module.fused_attn = False
            try:
                loaded.model(pixels)
            finally:
                for module, fused in zip(modules, flags, strict=True):
                    module.fused_attn = fused

    def kept_and_stacked() -> None:
        _, attentions = capture_attention(loaded.model, pixels)
        torch.stack([attention[0] for attention in attentions]).float().cpu().numpy()

    def record() -> torch.Tensor:
        return torch.empty((facts.num_layers, 1, facts.num_heads, tokens, tokens), device=loaded.device)

    @torch.inference_mode()
    def copied_as_made() -> None:
        into = record()
        with _CopiedAsMade(loaded.model, into=into):
            loaded.model(pixels)
        into[:, 0].cpu().numpy()

    def written_in_place() -> None:
        into = record()
        capture_attention(loaded.model, pixels, into=into)
        into[:, 0].cpu().numpy()

    works = {
        "fused": fused,
        "unfused, nothing kept": unfused_nothing_kept,
        "kept and stacked": kept_and_stacked,
        "copied as made": copied_as_made,
        "written in place": written_in_place,
    }
    interleaved_medians(works, 3)  # warm-up
    load_before = os.getloadavg()[0]
    medians = interleaved_medians(works, rounds)
    load_after = os.getloadavg()[0]
    print(machine())
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {rounds} rounds, "
          f"load {load_before:.2f} before, {load_after:.2f} after")  # fmt: skip
    for name, seconds in medians.items():
        print(f"{name}: {seconds * 1000:.1f} ms = {seconds / medians['fused']:.3f}× the fused forward")


if __name__ == "__main__":
    main()
