"""The server's side of an Explore move, against one plain forward of the model shown, in one process.

Streamlit's AppTest reruns the page script the way the server does, in this process, and this script
adds what AppTest leaves out: the full collection Streamlit makes after every run
(`runner.postScriptGC`), timed after each move. The page runs as a whole here (AppTest does not rerun
a fragment alone), so these are upper bounds on what a fragment rerun costs. The server's own time
for each interaction as a browser makes it, fragment reruns alone, is the "server's runs" column of
`bench/interactions.py`; this script needs no browser and works on any device the app offers, so the
same table can be measured on a GPU machine that has no Chromium.

    python bench/server_steps.py [--device cuda] [--weights random] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamlit.testing.v1 import AppTest

from bench.common import machine
from vitviz.images import builtin_photo
from vitviz.models import load_model
from vitviz.preprocess import image_view

APP = str(Path(__file__).resolve().parents[1] / "app.py")
MODEL = "vit_small_patch14_dinov2"


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_forward_s(weights: str, device: str, rounds: int) -> float:
    """Median seconds of the model's own forward on the default photo's view."""
    loaded = load_model(MODEL, weights, device)
    pixels = image_view(builtin_photo("cat (chelsea)"), loaded.facts).tensor.to(device)
    times = []
    with torch.inference_mode():
        for _ in range(rounds + 2):
            _synchronise(device)
            start = time.perf_counter()
            loaded.model(pixels)
            _synchronise(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def _move(app: AppTest, change: Callable[[AppTest], object]) -> tuple[float, float]:
    """Seconds of the script run after one change, and of the full collection that follows it."""
    change(app)
    start = time.perf_counter()
    app.run()
    run_s = time.perf_counter() - start
    start = time.perf_counter()
    gc.collect(2)
    return run_s, time.perf_counter() - start


def explore_moves(weights: str, device: str, rounds: int) -> dict[str, list[tuple[float, float]]]:
    app = AppTest.from_file(APP, default_timeout=600)
    app.run()
    app.selectbox(key="explore_weights").set_value(weights).run()
    app.selectbox(key="explore_device").set_value(device).run()
    assert not app.exception, app.exception
    moves: dict[str, Callable[[AppTest, int], object]] = {
        "Explore: layer slider one step": lambda a, i: a.slider(key="explore_layer").set_value(10 - i % 2),
        "Explore: head": lambda a, i: a.selectbox(key="explore_head").set_value(i % 6),
        "Explore: new built-in photo": lambda a, i: a.selectbox(key="explore_photo").set_value(
            ["astronaut", "coffee", "rocket", "cat (chelsea)"][i % 4]
        ),
    }
    samples: dict[str, list[tuple[float, float]]] = {}
    for name, move in moves.items():
        move(app, 1)
        app.run()  # one warm move first
        samples[name] = [_move(app, lambda a, i=i, move=move: move(a, i)) for i in range(rounds)]
        assert not app.exception, app.exception
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--weights", default="bundled", help="bundled, or random where the weights are not here"
    )
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    load_before = os.getloadavg()[0]
    forward = plain_forward_s(arguments.weights, arguments.device, arguments.rounds)
    samples = explore_moves(arguments.weights, arguments.device, arguments.rounds)
    print(
        f"{machine()}; device {arguments.device}; {MODEL} ({arguments.weights}); medians of {arguments.rounds}"
    )
    print(
        f"plain forward: {forward * 1e3:.1f} ms; load {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print("\n| move | script run | full collection after it | together | × plain forward |")
    print("|---|---|---|---|---|")
    for name, runs in samples.items():
        run_s = statistics.median(r for r, _ in runs)
        gc_s = statistics.median(c for _, c in runs)
        together = statistics.median(r + c for r, c in runs)
        print(
            f"| {name} | {run_s * 1e3:.0f} ms | {gc_s * 1e3:.1f} ms | {together * 1e3:.0f} ms | "
            f"{together / forward:.1f}× |"
        )


if __name__ == "__main__":
    main()
