"""The `builtin:digits` data set: scikit-learn's 1,797 real handwritten digits, shipped offline.

The digits are written once, upscaled, as an ImageFolder layout ("0/0000.png" … "9/1796.png") in
the vitviz cache, and `vitviz.finetune.data.open_image_set("builtin:digits")` opens that folder.
Files rather than pictures drawn on demand (as builtin:shapes does) keep this module free of
`vitviz.finetune.data` (which imports it), and let a run's folder find its images again by path.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vitviz.weights import cache_dir

__all__ = [
    "BUILTIN_DIGITS",
    "DIGITS_COUNT",
    "DIGITS_IMAGE_SIZE",
    "DIGIT_CLASSES",
    "digit_image",
    "digit_labels",
    "digit_pixels",
    "digits_folder",
]

BUILTIN_DIGITS = "builtin:digits"
DIGIT_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))  # label d is the digit d
DIGITS_COUNT = 1797  # images in sklearn.datasets.load_digits
# The bundled models' input side. An 8-pixel digit resized straight by a model's transform would get
# whatever filter that model's config names; upscaling here, bicubic, gives every model the same
# smooth strokes (a probe on nearest-neighbour blocks scored 0.76 / 0.74 instead of 0.94 / 0.92).
DIGITS_IMAGE_SIZE = 224
_INK_MAX = 16.0  # load_digits counts ink as 0..16 per 8×8 cell (pixels of a 32×32 bitmap set in it)
# Bumped whenever the pictures change, so a folder written by an older vitviz is never reused.
_DIGITS_VERSION = 1


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) ink in 0..16 and (1797,) digit labels, read once from scikit-learn's own copy."""
    from sklearn.datasets import load_digits  # deferred: only this data set needs scikit-learn

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    assert images.shape == (DIGITS_COUNT, 8, 8), f"unexpected digits of shape {images.shape}"
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digit_labels() -> tuple[int, ...]:
    """The digit (0..9) of every image, in scikit-learn's order."""
    return tuple(int(label) for label in _digits()[1])


def digit_pixels(index: int) -> np.ndarray:
    """The `index`-th digit as (8, 8) uint8 grey: dark ink (0) on white paper (255).

    Dark on light is how handwriting looks in the photos ImageNet models learned from (paper,
    envelopes, signs) and how scikit-learn draws these digits. The probe measurement did not decide
    it: on 300 / 100 digits, bicubic, EfficientNet-Lite0 scored 0.93 dark-on-light vs 0.90
    light-on-dark and DINOv2 0.92 vs 0.95, both gaps within the ±0.03 that 100 held-out images allow.
    """
    ink = _digits()[0][index] / _INK_MAX  # (8, 8) in 0..1
    return np.round(255.0 * (1.0 - ink)).astype(np.uint8)


def digit_image(index: int, size: int = DIGITS_IMAGE_SIZE) -> Image.Image:
    """The `index`-th digit as a grey RGB picture of `size`×`size` pixels, upscaled bicubic."""
    small = Image.fromarray(digit_pixels(index), mode="L")
    return small.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def _write_digits(folder: Path, size: int) -> None:
    for index, label in enumerate(digit_labels()):
        class_folder = folder / DIGIT_CLASSES[label]
        class_folder.mkdir(exist_ok=True)
        # One grey channel (decoding gives RGB back); light compression writes 3× faster than
        # the default for files a quarter larger (11 KB each at 224 px).
        digit_image(index, size).convert("L").save(class_folder / f"{index:04d}.png", compress_level=1)


def digits_folder(size: int = DIGITS_IMAGE_SIZE) -> Path:
    """The folder of class folders holding every digit at `size` px, written on first use.

    The folder is filled under a hidden temporary name and renamed into place, so a second process
    (or a page reading it) never sees half of it.

    Returns:
        ``<cache_dir()>/digits-v<version>-<size>px``, holding "0/" … "9/" with 1,797 PNGs in all.
    """
    target = cache_dir() / f"digits-v{_DIGITS_VERSION}-{size}px"
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        _write_digits(staging, size)
        os.chmod(staging, 0o755)  # mkdtemp makes it owner-only; the cache may be shared
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # another process finishing first is not a failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
