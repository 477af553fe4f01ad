"""Small archives and pictures built in memory, for upload and zip-summary tests."""

from __future__ import annotations

import io
import zipfile

from PIL import Image

__all__ = ["class_folder_zip", "png_bytes", "zip_of"]


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    """A plain RGB PNG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding `entries` (member name -> bytes), in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def class_folder_zip(classes: int, per_class: int, size: int = 4) -> bytes:
    """An ImageFolder zip: `classes` folders of `per_class` tiny PNGs, each class its own colour."""
    entries = {}
    for label in range(classes):
        colour = (label % 256, (label // 256) % 256, 128)
        picture = png_bytes(colour, size)
        for index in range(per_class):
            entries[f"class{label:05d}/{index}.png"] = picture
    return zip_of(entries, zipfile.ZIP_STORED)
