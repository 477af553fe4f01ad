"""Writes tests/data/bad_images/: small files that decode_image must refuse with a clear message.

Run from the repository root: ``python tests/data/make_bad_images.py``. The files are committed;
rerun only to change the corpus.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

__all__ = ["BAD_IMAGES", "write_bad_images"]

OUTPUT_DIR = Path(__file__).parent / "bad_images"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Returns one PNG chunk with a correct length and CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_with_header(width: int, height: int, rows: int = 4) -> bytes:
    """A well-formed 8-bit greyscale PNG header claiming width×height, with only a few rows.

    The pixel data is too short for the claimed size, which is what a bomb looks like before it
    is inflated: the size must be refused from the header, before any decoding is attempted.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (rows * (width + 1)), 9)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def noise_png(size: int = 64) -> bytes:
    """A valid RGB PNG of seeded noise (noise so that the pixel data is long enough to cut)."""
    noise = random.Random(1).randbytes(size * size * 3)
    rows = b"".join(b"\x00" + noise[row * size * 3 : (row + 1) * size * 3] for row in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def encoded_noise(format_name: str, size: int = 64) -> bytes:
    """A valid image of seeded noise in format_name, encoded by Pillow."""
    noise = random.Random(2).randbytes(size * size * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), noise).save(buffer, format_name)
    return buffer.getvalue()


def truncated(data: bytes) -> bytes:
    """The first half of data: a download or upload that stopped midway."""
    return data[: len(data) // 2]


def png_with_bad_crc() -> bytes:
    """A small valid PNG whose IHDR checksum has been flipped."""
    data = bytearray(png_with_header(8, 8, rows=8))
    ihdr_crc_offset = len(PNG_SIGNATURE) + 8 + 13  # length + type, then the 13-byte payload
    data[ihdr_crc_offset] ^= 0xFF
    return bytes(data)


def gif_with_screen(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen and only frame claim width×height."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    pixels = b"\x02\x02\x4c\x01\x00"  # LZW minimum code size 2, one short sub-block, terminator
    return screen + palette + frame + pixels + b"\x3b"


def icon() -> bytes:
    """A real image in a format Pillow reads but the app refuses (Windows .ico)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "ICO")
    return buffer.getvalue()


SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">
  <circle cx="50" cy="50" r="40" fill="tomato"/>
</svg>
"""

PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""

HTML = b"""<!DOCTYPE html>
<html><head><title>cat.jpg (JPEG Image, 451 x 300 pixels)</title></head>
<body><img src="https://example.com/cat.jpg"></body></html>
"""

# File name -> how to make its bytes. The name's extension is what a user would see; decoding
# must never trust it.
BAD_IMAGES: dict[str, Callable[[], bytes]] = {
    "not_an_image.txt": lambda: b"This is a text file, not a picture of a cat.\n" * 4,
    "empty.png": lambda: b"",
    "random_bytes.bin": lambda: random.Random(0).randbytes(4096),
    "drawing.svg": lambda: SVG,
    "document.pdf": lambda: PDF,
    "web_page_saved_as.jpg": lambda: HTML,
    "icon.ico": icon,
    "signature_only.png": lambda: PNG_SIGNATURE,
    "bad_header_crc.png": png_with_bad_crc,
    "zero_width.png": lambda: png_with_header(0, 16),
    "truncated.png": lambda: truncated(noise_png()),
    "truncated.jpg": lambda: truncated(encoded_noise("JPEG")),
    "truncated.webp": lambda: truncated(encoded_noise("WEBP")),
    "truncated.gif": lambda: truncated(encoded_noise("GIF")),
    # Over our 40 MP limit but under Pillow's: our own header check must catch it.
    "bomb_8000x8000.png": lambda: png_with_header(8000, 8000),
    # Between Pillow's warning and error thresholds (~89 and ~179 MP).
    "bomb_10000x10000.png": lambda: png_with_header(10000, 10000),
    # Beyond Pillow's hard limit: Pillow raises before the size can be read.
    "bomb_30000x30000.png": lambda: png_with_header(30000, 30000),
    "bomb_65535x65535.gif": lambda: gif_with_screen(65535, 65535),
}


def write_bad_images(output_dir: Path = OUTPUT_DIR) -> list[Path]:
    """Writes every file of BAD_IMAGES into output_dir and returns their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in BAD_IMAGES.items():
        path = output_dir / name
        path.write_bytes(make())
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_bad_images():
        print(f"{path.stat().st_size:>7} bytes  {path.name}")
