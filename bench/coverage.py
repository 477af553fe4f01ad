"""Coverage of every registered method over timm architectures of every family (issue 22).

Run: .venv/bin/python bench/coverage.py [KEY ...] [--threads N]

Builds each architecture of tests/support/architectures.py (tiny configs, seeded random weights),
runs every method the registry lists for it once on a textured input, and prints a Markdown table:
"works" with the map's cost against one forward pass of that model (the median of 3 forwards),
"constant" where a listed method's map came out flat, "refused" where the registry does not list
it (the method refuses before it runs, saying why). Costs are single runs: a guide, not a benchmark.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from common import machine  # noqa: E402

from tests.support.architectures import ARCHITECTURES, build_architecture, textured_input  # noqa: E402
from tests.test_architectures import QUICK_OPTIONS  # noqa: E402
from vitviz.methods import METHODS, available_methods  # noqa: E402


def forward_seconds(model: torch.nn.Module, pixels: torch.Tensor) -> float:
    with torch.inference_mode():
        model(pixels)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model(pixels)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(key: str) -> str:
    loaded = build_architecture(key)
    facts = loaded.facts
    pixels = textured_input(*facts.input_size)
    forward = forward_seconds(loaded.model, pixels)
    listed = available_methods(facts)
    cells = []
    for method in METHODS:
        if method not in listed:
            cells.append("refused")
            continue
        start = time.perf_counter()
        result = METHODS[method](loaded, **QUICK_OPTIONS).explain(pixels)[0]
        cost = (time.perf_counter() - start) / forward
        word = "constant" if result.constant else "works"
        cells.append(f"{word} {cost:.0f}×" if cost >= 10 else f"{word} {cost:.1f}×")
    where = f"{facts.family} · {facts.attention}"
    return f"| {ARCHITECTURES[key][0]} ({facts.input_size[0]} px) | {where} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(machine())
    print()
    print("| architecture | family · attention | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for key in args.keys:
        print(row(key), flush=True)


if __name__ == "__main__":
    main()
