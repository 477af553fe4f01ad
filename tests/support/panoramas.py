"""Wide and tall photos made from a real one, for the "whole image, aspect kept" view."""

from __future__ import annotations

from PIL import Image

from vitviz.images import builtin_photo

__all__ = ["panorama"]


def panorama(ratio: int, height: int = 120) -> Image.Image:
    """A real photo `ratio` times wider than high: a strip across the top of the cat's photo, resized."""
    cat = builtin_photo("cat (chelsea)")
    strip = cat.crop((0, 0, cat.width, cat.width // ratio))
    return strip.resize((height * ratio, height))
