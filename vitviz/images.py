"""Safe decoding of untrusted image bytes to RGB, and the photos shipped with scikit-image/learn."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from vitviz.text import printable_clipped

__all__ = [
    "BUILTIN_PHOTOS",
    "IMAGE_MIME_TYPES",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "MIN_IMAGE_SIDE",
    "SUPPORTED_FORMATS",
    "UPLOAD_EXTENSIONS",
    "ImageDecodeError",
    "builtin_photo",
    "decode_image",
    "decode_upload",
    "image_digest",
    "load_image_file",
    "looks_like_image",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
UPLOAD_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff")
# The MIME types of the same formats, for pickers that filter by type as well as by name.
IMAGE_MIME_TYPES: tuple[str, ...] = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
)
MAX_UPLOAD_BYTES: int = 25 * 1024 * 1024
MAX_PIXELS: int = 40_000_000
# The narrowest side an uploaded picture may have: one patch of the coarsest models this app shows
# (ViT-B/32, hybrids of stride 32, a CNN's last 32-pixel cells). A thinner one holds less than one
# patch across, and the model's view would blow it up into a sliver of 256 by 65,000 pixels.
MIN_IMAGE_SIDE: int = 32

# Multi-picture JPEGs (phone cameras) come out of Pillow's JPEG opener as "MPO"; to a user they
# are JPEGs. MPO has no opener of its own, so it is not in the list of plugins to try.
_FORMAT_ALIASES: dict[str, str] = {"MPO": "JPEG"}
_FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# Leading bytes of the supported formats: a file that starts like one of them but fails to open is
# damaged, not "not an image", and the user deserves to be told which.
_SIGNATURES: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
)
# Pillow's bomb messages read "Image size (N pixels) exceeds limit of M pixels, ...".
_PILLOW_BOMB_NUMBERS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")
# warnings.catch_warnings swaps process-global filters and restores them on exit; two threads
# (Streamlit sessions) interleaving it could restore each other's filters and leak one. The lock
# keeps our save/restore pairs apart, at the cost of reading headers and first frames one at a time.
_WARNINGS_LOCK = threading.Lock()


class ImageDecodeError(ValueError):
    """Bytes that cannot be turned into an image; ``str(error)`` is one sentence for a user."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_UPLOAD_BYTES) -> Image.Image:
    """Decodes untrusted image bytes into a fully loaded RGB image.

    Takes the first frame of animations, applies the EXIF orientation, and converts every mode
    (palette, CMYK, 16-bit, float, greyscale, alpha composited over white) to 8-bit RGB.

    Args:
        data: the file's bytes.
        max_pixels: refuse images whose width × height exceeds this, before decoding pixels.
            Pillow's own decompression-bomb limit (``2 * Image.MAX_IMAGE_PIXELS``) still applies.
        max_bytes: refuse inputs longer than this.

    Returns:
        A loaded image of mode ``"RGB"`` that owns its pixels (no open file behind it).

    Raises:
        ImageDecodeError: for any input that is not a readable, small-enough supported image.
    """
    _check_byte_count(len(data), max_bytes)
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here it is an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open_first_frame(bytes(data), max_pixels)
    try:
        return _to_rgb(_apply_exif_orientation(image))
    except Exception as error:  # a conversion failure means the decoded data is unusable
        raise ImageDecodeError("The image is truncated or corrupt.") from error
    finally:
        image.close()


def decode_upload(data: bytes) -> Image.Image:
    """Decodes a visitor's picture (:func:`decode_image`), refusing one too thin for any model.

    Raises:
        ImageDecodeError: the bytes are refused by :func:`decode_image`, or a side of the image is
            shorter than MIN_IMAGE_SIDE pixels (one line that gives its size).
    """
    image = decode_image(data)
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageDecodeError(
            f"The image is {width}×{height} pixels: too thin for a model to see; each side needs at "
            f"least {MIN_IMAGE_SIDE} pixels (one patch of the coarsest models here)."
        )
    return image


def load_image_file(path: str | Path, shown_as: str | None = None) -> Image.Image:
    """Reads an image file from disk and decodes it with :func:`decode_image`.

    Args:
        path: the file.
        shown_as: how error messages name the file (e.g. its path inside a data folder); by
            default the path as given, on one line.

    Raises:
        ImageDecodeError: if the file is missing or unreadable (the message names the path), or
            if its contents are refused by :func:`decode_image`.
    """
    shown = printable_clipped(str(path), 160) if shown_as is None else shown_as
    path = Path(path)
    try:
        size = path.stat().st_size
    except (OSError, ValueError) as error:
        raise _unreadable(shown, error) from error
    _check_byte_count(size, MAX_UPLOAD_BYTES)  # a huge file is refused before it is read
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _unreadable(shown, error) from error
    return decode_image(data)


def _unreadable(shown: str, error: OSError | ValueError) -> ImageDecodeError:
    """The error for a file that cannot be read; ValueError means a NUL byte in the path."""
    reason = getattr(error, "strerror", None) or (
        "not a valid file name" if isinstance(error, ValueError) else type(error).__name__
    )
    return ImageDecodeError(f"Cannot read the image file {shown}: {reason}.")


def looks_like_image(head: bytes) -> bool:
    """True when `head`, a file's first bytes (12 or more), starts like a supported image format.

    A cheap first check for files that claim to be images by their name (zip members): zeros or
    text named .png fail it. Passing it says nothing about the rest of the file.
    """
    return (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head.startswith(_SIGNATURES)


def _check_byte_count(byte_count: int, max_bytes: int) -> None:
    """Raises ImageDecodeError for an empty input or one longer than max_bytes."""
    if byte_count == 0:
        raise ImageDecodeError("The file is empty.")
    if byte_count > max_bytes:
        size, limit = _human_size(byte_count), _human_size(max_bytes)
        if size == limit:  # rounding hid the difference; exact counts show it
            size, limit = f"{byte_count:,} bytes", f"{max_bytes:,} bytes"
        raise ImageDecodeError(f"The file is {size}; the limit is {limit}.")


def _human_size(byte_count: int) -> str:
    """Returns a size such as "31.2 MB", "12 KB" or "900 bytes" (binary units)."""
    if byte_count < 1024:
        return f"{byte_count} bytes"
    unit, scale = ("KB", 1024) if byte_count < 1024**2 else ("MB", 1024**2)
    return f"{byte_count / scale:.1f}".removesuffix(".0") + f" {unit}"


def _open_first_frame(data: bytes, max_pixels: int) -> Image.Image:
    """Opens data lazily, checks format and size, then loads only the first frame."""
    try:
        # Only our formats' plugins are tried: hostile bytes never reach e.g. EPS (Ghostscript).
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(_pillow_bomb_message(error, max_pixels)) from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError(_unidentified_message(data)) from error
    except Exception as error:  # plugins raise many types on hostile headers; all mean "damaged"
        raise ImageDecodeError(_damaged_message(error)) from error
    try:
        _check_format(image.format)
        _check_pixel_count(image.size, max_pixels)
        image.seek(0)
        image.load()
    except ImageDecodeError:
        image.close()
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        image.close()
        raise ImageDecodeError(_pillow_bomb_message(error, max_pixels)) from error
    except Exception as error:  # truncated data raises OSError, broken streams other types
        image.close()
        raise ImageDecodeError(_damaged_message(error)) from error
    return image


def _damaged_message(error: Exception) -> str:
    """What is wrong with a file Pillow could not read; Pillow's own PNG bomb guards are named."""
    text = str(error)
    if "MAX_TEXT_CHUNK" in text:  # a zTXt, iTXt or iCCP chunk that inflates beyond Pillow's limit
        return (
            "The PNG carries a compressed text or colour-profile chunk that unpacks to more than "
            f"{_human_size(PngImagePlugin.MAX_TEXT_CHUNK)} (a decompression bomb?); it was not read."
        )
    if "MAX_TEXT_MEMORY" in text:
        return (
            f"The PNG carries more than {_human_size(PngImagePlugin.MAX_TEXT_MEMORY)} of text "
            "chunks; it was not read."
        )
    return "The image is truncated or corrupt."


def _unidentified_message(data: bytes) -> str:
    """Tells a damaged supported file apart from something that is not an image at all."""
    is_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if is_webp or data.startswith(_SIGNATURES):
        return "The image is truncated or corrupt."
    return f"This file is not an image in a format this app can read ({_FORMAT_NAMES})."


def _check_format(format_name: str | None) -> None:
    """Refuses formats outside SUPPORTED_FORMATS (MPO counts as JPEG)."""
    name = _FORMAT_ALIASES.get(format_name or "", format_name)
    if name not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"This file is not an image in a format this app can read ({_FORMAT_NAMES}).")


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    """Refuses images with more than max_pixels pixels, from the header alone."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("The image is truncated or corrupt.")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"The image is {width}×{height} pixels; the limit is {_megapixels(max_pixels)}."
        )


def _pillow_bomb_message(error: Exception, max_pixels: int) -> str:
    """Message for Pillow's own bomb check, which fires before the size can be read.

    Pillow's threshold may be below max_pixels, so the stated limit is whichever one fired.
    """
    match = _PILLOW_BOMB_NUMBERS.search(str(error))
    if match is None:
        return f"The image has too many pixels; the limit is {_megapixels(max_pixels)}."
    pixels, pillow_limit = int(match.group(1)), int(match.group(2))
    limit = min(max_pixels, pillow_limit)
    return f"The image has {_megapixels(pixels)}; the limit is {_megapixels(limit)}."


def _megapixels(pixels: int) -> str:
    """Returns a pixel count as e.g. "40 megapixels", "4,295 megapixels" or "4,999 pixels"."""
    megapixels = pixels / 1_000_000
    if megapixels < 1:  # small limits (tests, thumbnails) read better as exact pixel counts
        return f"{pixels:,} pixels"
    if megapixels < 100:
        amount = f"{megapixels:.3g}"
        return f"{amount} megapixel" + ("" if amount == "1" else "s")
    return f"{megapixels:,.0f} megapixels"


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Returns a copy turned upright by its EXIF orientation tag."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block should not cost the user otherwise good pixels
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any decoded mode to 8-bit RGB."""
    if image.mode.startswith("I;16"):
        # 16-bit samples span 0..65535 whatever the content; 65535 / 257 = 255 exactly. A rare
        # 16-bit transparent colour (PNG tRNS) is ignored: Pillow's RGBA conversion would clip.
        samples = np.asarray(image).astype(np.uint32)
        return _grey_to_rgb((samples + 128) // 257)
    if image.mode in ("I", "F"):
        # 32-bit ints and floats have no conventional white, so the image's own range is used.
        return _grey_to_rgb(_stretch_to_bytes(np.asarray(image)))
    if _has_alpha(image):
        return _composite_over_white(image.convert("RGBA"))
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    """True for modes with an alpha band, and for images with one transparent colour (tRNS)."""
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def _composite_over_white(rgba: Image.Image) -> Image.Image:
    """Flattens an RGBA image onto white, so dark logos on transparency stay visible."""
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _stretch_to_bytes(values: np.ndarray) -> np.ndarray:
    """Scales values linearly so their finite min/max become 0/255; NaN becomes 0."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    scaled = np.zeros_like(values)
    if finite.any():
        low, high = values[finite].min(), values[finite].max()
        if high > low:
            scaled = (values - low) / (high - low) * 255.0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255)


def _grey_to_rgb(levels: np.ndarray) -> Image.Image:
    """Builds an RGB image from a (H, W) array of 0..255 grey levels."""
    return Image.fromarray(levels.astype(np.uint8)).convert("RGB")


def _package_dir(package: str) -> Path | None:
    """Locates an installed package's folder without importing it (imports may download)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


# (friendly name, package, file inside the package); the cat comes first as the default photo.
_BUILTIN_PHOTO_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("cat (chelsea)", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("astronaut", "skimage", "data/astronaut.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
    ("camera (greyscale)", "skimage", "data/camera.png"),
)


def _find_builtin_photos() -> dict[str, Path]:
    """Maps friendly names to the real photos shipped inside scikit-image and scikit-learn."""
    found: dict[str, Path] = {}
    for name, package, relative_path in _BUILTIN_PHOTO_SOURCES:
        package_dir = _package_dir(package)
        if package_dir is not None and (package_dir / relative_path).is_file():
            found[name] = package_dir / relative_path
    return found


BUILTIN_PHOTOS: dict[str, Path] = _find_builtin_photos()


def builtin_photo(name: str) -> Image.Image:
    """Decodes one of BUILTIN_PHOTOS by its name, as RGB.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    if name not in BUILTIN_PHOTOS:
        known = ", ".join(repr(known_name) for known_name in BUILTIN_PHOTOS)
        raise KeyError(f"No built-in photo named {name!r}; known photos: {known}.")
    return load_image_file(BUILTIN_PHOTOS[name])


def image_digest(image: Image.Image) -> str:
    """Returns a stable SHA-1 hex digest of an image's size, mode and pixels (a cache key)."""
    digest = hashlib.sha1(usedforsecurity=False)
    width, height = image.size
    digest.update(f"{width}x{height}:{image.mode}:".encode())
    digest.update(image.tobytes())
    # Palette images store indices; the same indices under another palette are another picture.
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    if palette is not None:
        digest.update(bytes(palette))
    return digest.hexdigest()
