"""Helpers for the intervention tests: a real probe fine-tuned from the bundled DINOv2, pictures, CLI runs."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.support.methods_helpers import frozen_loaded
from vitviz.finetune.shapes import SHAPE_CLASSES, draw_shape, shape_rng


@functools.cache
def dinov2_probe_run() -> Path:
    """A run folder with a linear head trained on the built-in shapes over the bundled DINOv2.

    Small on purpose (50 images, 3 epochs of a probe on cached features: about 15 s of CPU);
    made once per test session and removed when it ends.
    """
    from vitviz.finetune.trainer import FinetuneConfig
    from vitviz.finetune.worker import execute_run

    root = Path(tempfile.mkdtemp(prefix="vitviz-probe-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    folder = root / "dinov2-shapes-probe"
    config = FinetuneConfig(mode="probe", epochs=3, max_images=50, device="cpu")
    execute_run(config, "builtin:shapes", folder, log=lambda _line: None)
    return folder


def shape_picture(shape: str = "square", seed: int = 99, size: int = 224) -> Image.Image:
    """A built-in shapes picture that the probe did not train on (another seed)."""
    assert shape in SHAPE_CLASSES, shape
    return draw_shape(shape, shape_rng(seed, shape, 0), size)


def noise_picture(size: int = 80, seed: int = 0) -> Image.Image:
    """Uniform RGB noise: any tiny random model gets a well-defined input from it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def saved_picture(image: Image.Image, folder: Path, name: str = "picture.png") -> str:
    path = folder / name
    image.save(path)
    return str(path)


def run_command(*args: str) -> tuple[int, Any, str]:
    """Runs `python -m vitviz ARGS` in this process: exit status, parsed JSON stdout (or text), stderr."""
    from vitviz.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(list(args))
    text = stdout.getvalue()
    try:
        return status, json.loads(text), stderr.getvalue()
    except json.JSONDecodeError:
        return status, text, stderr.getvalue()


# The tiny transformer families the intervention tests run on (keys of conftest's tiny_models).
FAMILIES = ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular"]


def classifier(tiny_models, key: str):
    """A tiny model of one family as a frozen classifier (the register model gets a 10-class head)."""
    return frozen_loaded(tiny_models[key], key, num_classes=10 if key == "registers" else None)
