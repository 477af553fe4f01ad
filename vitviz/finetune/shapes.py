"""The `builtin:shapes` data set: simple shapes drawn with PIL from a seed, the same on every machine."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "SHAPES_IMAGE_SIZE",
    "SHAPES_PER_CLASS",
    "SHAPE_CLASSES",
    "ShapeImage",
    "draw_shape",
    "make_shapes",
    "shape_outline",
]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SHAPES_PER_CLASS = 60  # modest on purpose: a probe on a CPU extracts 300 images' features in seconds
SHAPES_IMAGE_SIZE = 128  # pixels per side; models resize to their own input anyway


@dataclass(frozen=True)
class ShapeImage:
    """One generated picture and its class index into SHAPE_CLASSES."""

    image: Image.Image  # RGB, SHAPES_IMAGE_SIZE × SHAPES_IMAGE_SIZE
    label: int


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _contrasting_colour(rng: random.Random, background: tuple[int, int, int]) -> tuple[int, int, int]:
    """A colour far enough from the background that the shape is always visible."""
    while True:
        colour = _random_colour(rng)
        if sum(abs(a - b) for a, b in zip(colour, background, strict=True)) > 220:
            return colour


def _background(rng: random.Random, size: int) -> tuple[Image.Image, tuple[int, int, int]]:
    """A plain or two-colour gradient background; returns it and its mean colour."""
    start = _random_colour(rng)
    if rng.random() < 0.5:
        return Image.new("RGB", (size, size), start), start
    end = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in start)
    ramp = Image.linear_gradient("L").resize((size, size))
    if rng.random() < 0.5:
        ramp = ramp.rotate(90)
    image = Image.composite(Image.new("RGB", (size, size), end), Image.new("RGB", (size, size), start), ramp)
    mean = tuple((a + b) // 2 for a, b in zip(start, end, strict=True))
    return image, mean  # type: ignore[return-value]


def _rotated(
    points: list[tuple[float, float]], centre: tuple[float, float], angle: float
) -> list[tuple[float, float]]:
    cx, cy = centre
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in points]


def shape_outline(shape: str, centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    """The polygon of a shape (all but the circle) centred on `centre`, before rotation."""
    cx, cy = centre
    if shape == "square":
        side = radius * 0.8
        return [
            (cx - side, cy - side),
            (cx + side, cy - side),
            (cx + side, cy + side),
            (cx - side, cy + side),
        ]
    if shape == "triangle":
        return [
            (cx + radius * math.cos(a), cy + radius * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if shape == "star":
        return [
            (cx + r * math.cos(a), cy + r * math.sin(a))
            for i in range(10)
            for a, r in [(-math.pi / 2 + i * math.pi / 5, radius if i % 2 == 0 else radius * 0.42)]
        ]
    if shape == "cross":
        arm, width = radius, radius * 0.34
        return [
            (cx - width, cy - arm), (cx + width, cy - arm), (cx + width, cy - width),
            (cx + arm, cy - width), (cx + arm, cy + width), (cx + width, cy + width),
            (cx + width, cy + arm), (cx - width, cy + arm), (cx - width, cy + width),
            (cx - arm, cy + width), (cx - arm, cy - width), (cx - width, cy - width),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_CLASSES)}")


def draw_shape(shape: str, rng: random.Random, size: int = SHAPES_IMAGE_SIZE) -> Image.Image:
    """Draws one shape with a random colour, size, position, rotation and background.

    Args:
        shape: one of SHAPE_CLASSES.
        rng: the source of every random choice, so a seed fixes the picture.
        size: side of the square image in pixels.
    """
    image, background = _background(rng, size)
    colour = _contrasting_colour(rng, background)
    radius = rng.uniform(0.22, 0.4) * size
    margin = radius + 2
    centre = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        cx, cy = centre
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    else:
        draw.polygon(
            _rotated(shape_outline(shape, centre, radius), centre, rng.uniform(0, 2 * math.pi)), fill=colour
        )
    if rng.random() < 0.3:  # a little blur, so edges are not always pixel-sharp
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return image


def shape_rng(seed: int, shape: str, index: int) -> random.Random:
    """The random source of the `index`-th picture of `shape`: it depends on nothing else."""
    return random.Random(f"shapes:{seed}:{shape}:{index}")


def make_shapes(
    per_class: int = SHAPES_PER_CLASS, seed: int = 0, size: int = SHAPES_IMAGE_SIZE
) -> list[ShapeImage]:
    """Generates `per_class` pictures of every shape, interleaved by class, from `seed`.

    The i-th picture depends only on (seed, i), so a smaller set is a prefix-per-class of a larger one.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    pictures = []
    for index in range(per_class):
        for label, shape in enumerate(SHAPE_CLASSES):
            pictures.append(ShapeImage(draw_shape(shape, shape_rng(seed, shape, index), size), label))
    return pictures
