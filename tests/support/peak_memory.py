"""Measures what loading a model and capturing one image's attention adds to a process's memory.

Run as ``python -m tests.support.peak_memory NAME WEIGHTS`` in a fresh process: prints the peak
increase of resident memory in bytes, over the process after torch, timm and vitviz are imported.
"""

from __future__ import annotations

import resource
import sys
import threading

import torch

from vitviz.forward.attention import record_attention
from vitviz.images import builtin_photo
from vitviz.models import load_model
from vitviz.predict import predict
from vitviz.preprocess import image_view

__all__ = ["peak_increase"]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize()


def peak_increase(name: str, weights: str) -> int:
    """Bytes of resident memory added at the peak of one load and one look at a photo."""
    image = builtin_photo("coffee")
    start = _resident_bytes()
    peak = start
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, _resident_bytes())

    watcher = threading.Thread(target=watch)
    watcher.start()
    loaded = load_model(name, weights)
    if loaded.facts.family == "cnn":
        predict(loaded, [image_view(image, loaded.facts)])
    else:
        record_attention(loaded, image_view(image, loaded.facts))
    done.set()
    watcher.join()
    return max(peak, _resident_bytes()) - start


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(peak_increase(sys.argv[1], sys.argv[2]))
