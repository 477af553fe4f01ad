"""Pictures whose object is known, to validate the attention-sink rule away from the eight photos.

Three kinds, each a picture and a mask of its object drawn with it:
- flat shapes: one filled shape in one colour on a background of another (no texture at all);
- line drawings: black strokes on white, the object being what the strokes outline;
- textured composites: the subject of a built-in photo (its hand-drawn box, tests/support/subjects.py)
  pasted on a real texture shipped with scikit-image (brick, grass, gravel), the object its rectangle.

Everything is drawn from fixed numbers: the same pictures on every machine. `object_coverage` moves a
mask into the pixels of a model's view exactly as the picture is moved (`vitviz.preprocess.image_view`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.support.subjects import SUBJECT_BOXES
from vitviz.finetune.shapes import shape_outline
from vitviz.images import builtin_photo
from vitviz.models import ModelFacts
from vitviz.preprocess import ViewMode, image_view

__all__ = [
    "PICTURE_SIZE",
    "KnownPicture",
    "flat_shapes",
    "line_drawings",
    "object_coverage",
    "peak_on_object",
    "textured_composites",
]

PICTURE_SIZE = 224  # pixels per side of every picture here


@dataclass(frozen=True)
class KnownPicture:
    """A picture and where its object is."""

    name: str
    image: Image.Image  # RGB, PICTURE_SIZE × PICTURE_SIZE
    mask: Image.Image  # "L", 255 on the object and 0 elsewhere, same size


def _regular(
    centre: tuple[float, float], radius: float, sides: int, turn: float = 0.0
) -> list[tuple[float, float]]:
    cx, cy = centre
    return [
        (
            cx + radius * math.cos(turn + 2 * math.pi * i / sides),
            cy + radius * math.sin(turn + 2 * math.pi * i / sides),
        )
        for i in range(sides)
    ]


# (name, background, colour, kind, geometry): polygons as point lists, ellipses as boxes.
_SHAPES: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int], str, object], ...] = (
    ("blue triangle", (255, 255, 255), (30, 60, 220), "polygon", [(112, 30), (200, 190), (24, 190)]),
    ("red circle", (245, 245, 235), (210, 30, 30), "ellipse", (52, 52, 172, 172)),
    ("green square", (20, 20, 20), (40, 200, 60), "polygon", [(60, 70), (170, 70), (170, 180), (60, 180)]),
    ("yellow star", (30, 40, 120), (250, 220, 40), "polygon", shape_outline("star", (112, 118), 90)),
    ("white cross", (200, 40, 40), (255, 255, 255), "polygon", shape_outline("cross", (112, 112), 80)),
    ("orange hexagon", (230, 230, 230), (240, 140, 20), "polygon", _regular((130, 100), 70, 6)),
    ("purple ellipse", (250, 250, 200), (120, 40, 160), "ellipse", (20, 70, 200, 160)),
    ("black diamond", (120, 200, 240), (0, 0, 0), "polygon", _regular((100, 124), 85, 4, math.pi / 2)),
    (
        "small teal square",
        (255, 255, 255),
        (0, 140, 140),
        "polygon",
        [(140, 40), (196, 40), (196, 96), (140, 96)],
    ),
    ("grey pentagon", (255, 230, 240), (110, 110, 110), "polygon", _regular((112, 116), 92, 5, -math.pi / 2)),
)


def flat_shapes() -> list[KnownPicture]:
    """Ten filled shapes, each one colour on a flat background of another; the first is the issue's blue triangle."""
    pictures = []
    size = (PICTURE_SIZE, PICTURE_SIZE)
    for name, background, colour, kind, geometry in _SHAPES:
        image, mask = Image.new("RGB", size, background), Image.new("L", size, 0)
        for canvas, fill in ((ImageDraw.Draw(image), colour), (ImageDraw.Draw(mask), 255)):
            if kind == "ellipse":
                canvas.ellipse(geometry, fill=fill)
            else:
                canvas.polygon(geometry, fill=fill)
        pictures.append(KnownPicture(name, image, mask))
    return pictures


def _house(draw: ImageDraw.ImageDraw, fill: bool) -> None:
    outline = [(50, 110), (112, 45), (174, 110), (174, 190), (50, 190)]
    if fill:
        draw.polygon(outline, fill=255)
        return
    draw.line([*outline, outline[0]], fill=0, width=4)
    draw.rectangle((98, 140, 126, 190), outline=0, width=4)  # the door
    draw.rectangle((65, 125, 88, 148), outline=0, width=3)  # a window


def _face(draw: ImageDraw.ImageDraw, fill: bool) -> None:
    if fill:
        draw.ellipse((40, 40, 184, 184), fill=255)
        return
    draw.ellipse((40, 40, 184, 184), outline=0, width=4)
    draw.ellipse((78, 85, 92, 99), fill=0)
    draw.ellipse((132, 85, 146, 99), fill=0)
    draw.arc((75, 100, 149, 155), 20, 160, fill=0, width=4)


def _stick_figure(draw: ImageDraw.ImageDraw, fill: bool) -> None:
    if fill:
        draw.rectangle((70, 25, 154, 205), fill=255)
        return
    draw.ellipse((92, 25, 132, 65), outline=0, width=3)
    draw.line([(112, 65), (112, 145)], fill=0, width=3)
    draw.line([(75, 95), (149, 95)], fill=0, width=3)
    draw.line([(112, 145), (80, 205)], fill=0, width=3)
    draw.line([(112, 145), (144, 205)], fill=0, width=3)


def _spiral(draw: ImageDraw.ImageDraw, fill: bool) -> None:
    if fill:
        draw.ellipse((22, 22, 202, 202), fill=255)
        return
    turns = np.linspace(0, 6 * math.pi, 400)
    radius = 4 + 86 * turns / turns[-1]
    draw.line(
        list(zip(112 + radius * np.cos(turns), 112 + radius * np.sin(turns), strict=True)), fill=0, width=3
    )


def _bicycle(draw: ImageDraw.ImageDraw, fill: bool) -> None:
    if fill:
        draw.rectangle((15, 70, 209, 180), fill=255)
        return
    draw.ellipse((15, 110, 85, 180), outline=0, width=4)
    draw.ellipse((139, 110, 209, 180), outline=0, width=4)
    draw.line([(50, 145), (90, 90), (150, 90), (174, 145)], fill=0, width=4)
    draw.line([(90, 90), (112, 145), (150, 90)], fill=0, width=4)
    draw.line([(50, 145), (112, 145)], fill=0, width=4)
    draw.line([(85, 75), (100, 75)], fill=0, width=4)


def _outlined_star(draw: ImageDraw.ImageDraw, fill: bool) -> None:
    points = shape_outline("star", (112, 118), 95)
    if fill:
        draw.polygon(points, fill=255)
    else:
        draw.line([*points, points[0]], fill=0, width=4)


_DRAWINGS = (
    ("house", _house),
    ("smiling face", _face),
    ("stick figure", _stick_figure),
    ("spiral", _spiral),
    ("bicycle", _bicycle),
    ("star outline", _outlined_star),
)


def line_drawings() -> list[KnownPicture]:
    """Six black line drawings on white; each mask is the region its strokes outline."""
    pictures = []
    for name, draw in _DRAWINGS:
        image = Image.new("L", (PICTURE_SIZE, PICTURE_SIZE), 255)
        mask = Image.new("L", image.size, 0)
        draw(ImageDraw.Draw(image), fill=False)
        draw(ImageDraw.Draw(mask), fill=True)
        pictures.append(KnownPicture(name, image.convert("RGB"), mask))
    return pictures


def _texture(name: str) -> Image.Image:
    import skimage  # deferred: only the composites need scikit-image's data folder

    path = Path(skimage.__file__).parent / "data" / f"{name}.png"
    return Image.open(path).convert("RGB").resize((PICTURE_SIZE, PICTURE_SIZE), Image.Resampling.BICUBIC)


# (texture, photo, (left, top) of the pasted subject, its longer side in pixels)
_COMPOSITES = (
    ("brick", "cat (chelsea)", (20, 30), 110),
    ("grass", "coffee", (100, 90), 100),
    ("gravel", "astronaut", (110, 20), 90),
    ("brick", "rocket", (40, 40), 150),
    ("grass", "cat (chelsea)", (95, 110), 100),
    ("gravel", "coffee", (15, 110), 100),
)


def textured_composites() -> list[KnownPicture]:
    """Six subjects of the built-in photos pasted on real textures; the mask is the pasted rectangle."""
    pictures = []
    for texture, photo, (left, top), longer in _COMPOSITES:
        subject = builtin_photo(photo).crop(SUBJECT_BOXES[photo])
        scale = longer / max(subject.size)
        subject = subject.resize((round(subject.width * scale), round(subject.height * scale)))
        image = _texture(texture)
        image.paste(subject, (left, top))
        mask = Image.new("L", image.size, 0)
        mask.paste(255, (left, top, left + subject.width, top + subject.height))
        pictures.append(KnownPicture(f"{photo.split()[0]} on {texture}", image, mask))
    return pictures


def object_coverage(picture: KnownPicture, facts: ModelFacts, view: ViewMode = "crop") -> np.ndarray:
    """The fraction of each grid cell of the model's view that lies on the picture's object.

    Args:
        picture: the picture and its mask.
        facts: the model's facts: its view of the mask is its view of the picture.
        view: the view mode the maps were computed on.

    Returns:
        (rows, cols) fractions in [0, 1].
    """
    seen = image_view(picture.mask, facts, view)
    assert seen.grid_size is not None, "coverage is of a ViT's token grid"
    rows, cols = seen.grid_size
    on_object = seen.pixels[..., 0].astype(np.float64) >= 128  # (H, W)
    height, width = on_object.shape
    cells = on_object[: height - height % rows, : width - width % cols]
    return cells.reshape(rows, height // rows, cols, width // cols).mean(axis=(1, 3))


def peak_on_object(relevance: np.ndarray, coverage: np.ndarray) -> bool:
    """Whether a map's brightest cell touches the object (any part of the cell lies on it).

    Touching, not lying mostly inside: on a flat shape or a line drawing the maps of a ViT light up
    the object's outline, whose cells lie half on the object and half on the background.
    """
    return bool(coverage[np.unravel_index(np.argmax(relevance), relevance.shape)] > 0.0)
