"""One view, one forward: the page's attention record with its logits, against the two passes pages
used to make (a capture on the whole image for maps, a second forward on the eval crop for predictions).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/single_view.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import interleaved_medians, machine  # noqa: E402

from vitviz.forward.attention import record_attention  # noqa: E402
from vitviz.images import builtin_photo  # noqa: E402
from vitviz.models import load_model  # noqa: E402
from vitviz.predict import predict  # noqa: E402
from vitviz.preprocess import image_view  # noqa: E402

RUNS = 15


def main() -> None:
    image = builtin_photo("cat (chelsea)")
    print(machine())
    print(f"load before: {os.getloadavg()[0]:.2f}")
    print("| model | one view: record with logits | two passes: whole-image record + crop predict | ratio |")
    print("|---|---|---|---|")
    for name, weights in (("vit_small_patch14_dinov2", "bundled"), ("vit_base_patch16_224", "random")):
        torch.manual_seed(0)
        loaded = load_model(name, weights, "cpu")
        head = loaded.facts.has_classifier

        def one_view(loaded=loaded) -> None:
            record_attention(loaded, image_view(image, loaded.facts, "crop"))

        def two_passes(loaded=loaded, head=head) -> None:
            record_attention(loaded, image_view(image, loaded.facts, "whole"))
            if head:
                predict(loaded, [image_view(image, loaded.facts, "crop")])

        one_view()
        two_passes()
        medians = interleaved_medians({"one": one_view, "two": two_passes}, RUNS)
        label = f"{name} ({weights}{'' if head else ', no head: one pass either way'})"
        print(
            f"| {label} | {medians['one'] * 1e3:.0f} ms | {medians['two'] * 1e3:.0f} ms | "
            f"**{medians['one'] / medians['two']:.2f}×** |"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
