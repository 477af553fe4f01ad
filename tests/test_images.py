"""Tests for vitviz.images: hostile bytes are refused clearly, every mode decodes to exact RGB."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from vitviz.images import (
    BUILTIN_PHOTOS,
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    SUPPORTED_FORMATS,
    UPLOAD_EXTENSIONS,
    ImageDecodeError,
    builtin_photo,
    decode_image,
    image_digest,
    load_image_file,
)

BAD_IMAGES_DIR = Path(__file__).parent / "data" / "bad_images"
NOT_AN_IMAGE = "This file is not an image in a format this app can read"
CORRUPT = "The image is truncated or corrupt."

# Every corpus file and a part of the message it must produce; a new file needs an entry here.
EXPECTED_BAD_IMAGE_MESSAGES: dict[str, str] = {
    "not_an_image.txt": NOT_AN_IMAGE,
    "empty.png": "The file is empty.",
    "random_bytes.bin": NOT_AN_IMAGE,
    "drawing.svg": NOT_AN_IMAGE,
    "document.pdf": NOT_AN_IMAGE,
    "web_page_saved_as.jpg": NOT_AN_IMAGE,
    "icon.ico": NOT_AN_IMAGE,
    "signature_only.png": CORRUPT,
    "bad_header_crc.png": CORRUPT,
    "zero_width.png": CORRUPT,
    "truncated.png": CORRUPT,
    "truncated.jpg": CORRUPT,
    "truncated.webp": CORRUPT,
    "truncated.gif": CORRUPT,
    "bomb_8000x8000.png": "The image is 8000 × 8000 px (width × height); the limit is 40 megapixels.",
    "bomb_10000x10000.png": "The image has 100 megapixels; the limit is 40 megapixels.",
    "bomb_30000x30000.png": "The image has 900 megapixels; the limit is 40 megapixels.",
    "bomb_65535x65535.gif": "The image has 4,295 megapixels; the limit is 40 megapixels.",
}

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(image: Image.Image, format_name: str, **options: object) -> bytes:
    """Saves image to bytes in format_name."""
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    """The image as an (H, W, C) int array, for exact and tolerant comparisons."""
    return np.asarray(image).astype(int)


def two_colour_image(mode: str, left: object, right: object, size: tuple[int, int] = (8, 4)) -> Image.Image:
    """An image whose left half is one colour and right half another."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


# --- the corpus of bad files ------------------------------------------------------------------


def bad_image_paths() -> list[Path]:
    """Every file of the committed corpus."""
    return sorted(BAD_IMAGES_DIR.iterdir())


def test_bad_image_corpus_is_small_and_fully_described() -> None:
    paths = bad_image_paths()
    assert {path.name for path in paths} == set(EXPECTED_BAD_IMAGE_MESSAGES)
    assert all(path.stat().st_size < 50_000 for path in paths)


@pytest.mark.parametrize("path", bad_image_paths(), ids=lambda path: path.name)
def test_bad_file_is_refused_with_a_clear_message(path: Path) -> None:
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(path.read_bytes())
    message = str(raised.value)
    assert EXPECTED_BAD_IMAGE_MESSAGES[path.name] in message
    assert message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("path", bad_image_paths(), ids=lambda path: path.name)
def test_bad_file_on_disk_is_refused_by_load_image_file(path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=EXPECTED_BAD_IMAGE_MESSAGES[path.name][:20]):
        load_image_file(path)


def test_decode_error_is_a_value_error_for_callers_that_catch_those() -> None:
    assert issubclass(ImageDecodeError, ValueError)


# --- good images of every mode and format -----------------------------------------------------


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode_image(data)
    assert (image.mode, image.size) == ("RGB", (16, 8))
    assert np.abs(pixels(image) - RED).max() <= 8


def test_palette_png_with_transparency_shows_transparent_pixels_as_white() -> None:
    palette_image = Image.new("P", (8, 4), 0)
    palette_image.putpalette([*RED, *BLUE])
    palette_image.paste(1, (4, 0, 8, 4))
    data = encode(palette_image, "PNG", transparency=0)
    image = decode_image(data)
    assert (image.mode, image.size) == ("RGB", (8, 4))
    assert (pixels(image)[:, :4] == WHITE).all()
    assert (pixels(image)[:, 4:] == BLUE).all()


@pytest.mark.parametrize("format_name", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_by_the_full_16_bit_range(format_name: str) -> None:
    samples = np.array([[0, 257, 2570, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(samples), format_name)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = decode_image(data)
    assert (image.mode, image.size) == ("RGB", (5, 1))
    assert pixels(image)[0, :, 0].tolist() == [0, 1, 10, 128, 255]
    assert (pixels(image)[..., 0] == pixels(image)[..., 2]).all()


def test_16_bit_image_of_a_narrow_range_is_not_stretched() -> None:
    # Dividing by 257 keeps a dim 16-bit image dim; min/max scaling would turn it black/white.
    samples = np.array([[2570, 5140]], dtype=np.uint16)
    image = decode_image(encode(Image.fromarray(samples), "PNG"))
    assert pixels(image)[0, :, 0].tolist() == [10, 20]


def test_32_bit_integer_image_is_scaled_by_its_min_and_max() -> None:
    samples = np.array([[10, 30, 50, 110]], dtype=np.int32)
    data = encode(Image.fromarray(samples), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    image = decode_image(data)
    assert pixels(image)[0, :, 1].tolist() == [0, 51, 102, 255]


def test_float_image_is_scaled_by_its_finite_min_and_max_with_nan_as_black() -> None:
    samples = np.array([[0.0, 0.2, 1.0, np.nan]], dtype=np.float32)
    data = encode(Image.fromarray(samples), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    image = decode_image(data)
    assert pixels(image)[0, :, 0].tolist() == [0, 51, 255, 0]


def test_constant_float_image_decodes_without_dividing_by_zero() -> None:
    data = encode(Image.new("F", (3, 2), 7.5), "TIFF")
    image = decode_image(data)
    assert (image.mode, image.size) == ("RGB", (3, 2))


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque"),
    [("RGBA", (0, 0, 0, 0), (*BLUE, 255)), ("LA", (0, 0), (40, 255))],
)
def test_alpha_is_composited_over_white(mode: str, transparent: tuple, opaque: tuple) -> None:
    image = decode_image(encode(two_colour_image(mode, transparent, opaque), "PNG"))
    assert (image.mode, image.size) == ("RGB", (8, 4))
    assert (pixels(image)[:, :4] == WHITE).all()
    expected_opaque = BLUE if mode == "RGBA" else (40, 40, 40)
    assert (pixels(image)[:, 4:] == expected_opaque).all()


def test_half_transparent_black_becomes_mid_grey() -> None:
    image = decode_image(encode(Image.new("RGBA", (2, 2), (0, 0, 0, 128)), "PNG"))
    assert np.abs(pixels(image) - 127).max() <= 1


@pytest.mark.parametrize(
    ("format_name", "options"),
    [("GIF", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("PNG", {})],
)
def test_animation_or_multi_page_file_gives_its_first_frame(format_name: str, options) -> None:
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, BLUE, WHITE)]
    data = encode(frames[0], format_name, save_all=True, append_images=frames[1:], **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = decode_image(data)
    assert (image.mode, image.size) == ("RGB", (6, 4))
    assert (pixels(image) == RED).all()


def jpeg_with_orientation(orientation: int) -> bytes:
    """A 40×20 black JPEG with a red 8×8 top-left corner and the given EXIF orientation."""
    image = Image.new("RGB", (40, 20), BLACK)
    image.paste(RED, (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return encode(image, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [
        (1, (40, 20), "top left"),
        (3, (40, 20), "bottom right"),
        (6, (20, 40), "top right"),  # the camera was turned clockwise: rotate 90° clockwise
        (8, (20, 40), "bottom left"),
    ],
)
def test_exif_orientation_turns_the_image_upright(
    orientation: int, size: tuple[int, int], red_corner: str
) -> None:
    image = decode_image(jpeg_with_orientation(orientation))
    assert (image.mode, image.size) == ("RGB", size)
    array = pixels(image)
    corners = {
        "top left": array[2, 2],
        "top right": array[2, -3],
        "bottom left": array[-3, 2],
        "bottom right": array[-3, -3],
    }
    for corner, colour in corners.items():
        expected = RED if corner == red_corner else BLACK
        assert np.abs(colour - expected).max() <= 16, corner


def test_decoded_image_keeps_no_orientation_to_apply_twice() -> None:
    image = decode_image(jpeg_with_orientation(6))
    assert image.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize(
    ("format_name", "options"),
    [
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
    ],
)
def test_lossless_formats_decode_to_exact_rgb(format_name: str, options: dict) -> None:
    original = two_colour_image("RGB", RED, BLUE, size=(10, 6))
    image = decode_image(encode(original, format_name, **options))
    assert (image.mode, image.size) == ("RGB", (10, 6))
    assert (pixels(image) == pixels(original)).all()


def test_mpo_from_a_phone_camera_counts_as_jpeg() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    image = decode_image(data)
    assert image.mode == "RGB" and np.abs(pixels(image) - RED).max() <= 8


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_becomes_rgb_with_equal_channels(mode: str) -> None:
    original = two_colour_image(mode, 0, 255 if mode == "1" else 200)
    image = decode_image(encode(original, "PNG"))
    assert (image.mode, image.size) == ("RGB", (8, 4))
    assert (pixels(image)[:, :4] == BLACK).all()
    assert (pixels(image)[:, 4:] == (255 if mode == "1" else 200)).all()


def test_decoded_image_is_loaded_and_independent_of_the_input() -> None:
    data = bytearray(encode(Image.new("RGB", (4, 4), RED), "PNG"))
    image = decode_image(bytes(data))
    data[:] = b"\x00" * len(data)
    assert (pixels(image) == RED).all()
    assert image.copy().getpixel((0, 0)) == RED


def test_accepted_formats_and_extensions_match_the_brief() -> None:
    assert SUPPORTED_FORMATS == ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
    assert set(UPLOAD_EXTENSIONS) == {"png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"}
    assert MAX_UPLOAD_BYTES == 25 * 1024 * 1024
    assert MAX_PIXELS == 40_000_000


# --- limits -----------------------------------------------------------------------------------


def test_too_many_bytes_are_refused_stating_both_sizes() -> None:
    data = encode(Image.new("RGB", (4, 4), RED), "PNG")
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(data, max_bytes=len(data) - 1)
    assert str(raised.value) == (f"The file is {len(data)} bytes; the limit is {len(data) - 1} bytes.")


def test_upload_limit_is_stated_in_megabytes() -> None:
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(bytes(MAX_UPLOAD_BYTES + 6 * 1024 * 1024))
    assert str(raised.value) == "The file is 31 MB; the limit is 25 MB."


def test_sizes_that_round_alike_are_stated_exactly() -> None:
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(bytes(MAX_UPLOAD_BYTES + 1))
    assert str(raised.value) == "The file is 26,214,401 bytes; the limit is 26,214,400 bytes."


def test_too_many_pixels_are_refused_stating_size_and_limit() -> None:
    data = encode(Image.new("RGB", (100, 50), RED), "PNG")
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(data, max_pixels=4999)
    assert str(raised.value) == "The image is 100 × 50 px (width × height); the limit is 4,999 pixels."
    assert decode_image(data, max_pixels=5000).size == (100, 50)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # The bomb's pixel data is far too short: a decode attempt would report corruption instead.
    data = (BAD_IMAGES_DIR / "bomb_8000x8000.png").read_bytes()
    with pytest.raises(ImageDecodeError, match=r"8000 × 8000 px \(width × height\)"):
        decode_image(data)


def test_pillow_bomb_threshold_is_stated_when_it_is_below_the_callers_limit() -> None:
    data = (BAD_IMAGES_DIR / "bomb_10000x10000.png").read_bytes()
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(data, max_pixels=500_000_000)
    assert str(raised.value) == "The image has 100 megapixels; the limit is 89.5 megapixels."


# --- no global state changed ------------------------------------------------------------------


def decode_everything_once() -> None:
    """Decodes the whole corpus plus one good image, ignoring the expected refusals."""
    for path in bad_image_paths():
        with contextlib.suppress(ImageDecodeError):
            decode_image(path.read_bytes())
    decode_image(encode(Image.new("RGB", (4, 4), RED), "PNG"))


def test_decoding_leaves_pillow_and_warning_settings_unchanged() -> None:
    filters_before = list(warnings.filters)
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    decode_everything_once()
    assert warnings.filters == filters_before
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_concurrent_decodes_leave_warning_filters_unchanged() -> None:
    filters_before = list(warnings.filters)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            decode_everything_once()
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert warnings.filters == filters_before


@pytest.mark.parametrize("format_name", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_damaged_files_raise_only_image_decode_error(format_name: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), format_name)
    generator = np.random.default_rng(1)
    damaged = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 40))]
    for _ in range(40):
        flipped = bytearray(data)
        for offset in generator.integers(0, len(data), 4):
            flipped[offset] ^= 0xFF
        damaged.append(bytes(flipped))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's TIFF reader warns about the broken tags
        for sample in damaged:
            try:
                assert decode_image(sample).mode == "RGB"
            except ImageDecodeError as error:
                assert str(error).endswith(".")


# --- files on disk ----------------------------------------------------------------------------


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no_such_photo.png"
    with pytest.raises(ImageDecodeError, match=r"no_such_photo\.png"):
        load_image_file(path)


def test_directory_is_refused_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=str(tmp_path.name)):
        load_image_file(tmp_path)


def test_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as file:
        file.truncate(MAX_UPLOAD_BYTES + 6 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(ImageDecodeError, match="the limit is 25 MB"):
        load_image_file(path)


def test_good_file_loads_by_str_or_path(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(encode(Image.new("RGB", (3, 2), RED), "PNG"))
    for argument in (path, str(path)):
        image = load_image_file(argument)
        assert (image.mode, image.size) == ("RGB", (3, 2))


# --- built-in photos --------------------------------------------------------------------------


def test_there_are_at_least_six_builtin_photos_and_the_cat_comes_first() -> None:
    assert len(BUILTIN_PHOTOS) >= 6
    assert next(iter(BUILTIN_PHOTOS)) == "cat (chelsea)"
    assert all(path.is_file() for path in BUILTIN_PHOTOS.values())


@pytest.mark.parametrize("name", list(BUILTIN_PHOTOS))
def test_builtin_photo_decodes_to_rgb_of_its_real_size(name: str) -> None:
    image = builtin_photo(name)
    with Image.open(BUILTIN_PHOTOS[name]) as original:
        assert (image.mode, image.size) == ("RGB", original.size)


def test_chelsea_is_the_451_by_300_cat() -> None:
    image = builtin_photo("cat (chelsea)")
    assert image.size == (451, 300)


def test_unknown_builtin_photo_lists_the_known_names() -> None:
    with pytest.raises(KeyError) as raised:
        builtin_photo("dog")
    assert "cat (chelsea)" in str(raised.value) and "'dog'" in str(raised.value)


def test_builtin_photos_are_found_without_importing_their_packages() -> None:
    script = (
        "import sys; import vitviz.images as m; "
        "assert m.BUILTIN_PHOTOS; "
        "assert 'skimage' not in sys.modules and 'sklearn' not in sys.modules, sys.modules.keys()"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root)


# --- digests ----------------------------------------------------------------------------------


def test_digest_is_equal_for_equal_images_and_stable_across_runs() -> None:
    first = two_colour_image("RGB", RED, BLUE)
    second = two_colour_image("RGB", RED, BLUE)
    assert image_digest(first) == image_digest(second)
    # Pinned so that a change to the digest, which orphans cached results, is deliberate.
    assert image_digest(first) == "42a0589042cabdbf42b2eeb3d8c55636edb10ee9"


def test_digest_changes_with_one_pixel() -> None:
    original = two_colour_image("RGB", RED, BLUE)
    changed = original.copy()
    changed.putpixel((0, 0), (254, 0, 0))
    assert image_digest(original) != image_digest(changed)


def test_digest_tells_apart_same_bytes_in_another_shape_or_mode() -> None:
    wide, tall = Image.new("L", (4, 1), 9), Image.new("L", (1, 4), 9)
    assert image_digest(wide) != image_digest(tall)
    assert image_digest(Image.new("L", (1, 1), 1)) != image_digest(Image.new("P", (1, 1), 1))


def test_digest_tells_apart_palette_images_with_other_palettes() -> None:
    red, blue = Image.new("P", (2, 2), 0), Image.new("P", (2, 2), 0)
    red.putpalette([*RED])
    blue.putpalette([*BLUE])
    assert image_digest(red) != image_digest(blue)


def png_with_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    """A small valid PNG with one extra chunk right after its header."""
    import struct
    import zlib

    png = encode(Image.new("RGB", (8, 8), RED), "PNG")
    chunk = struct.pack(">I", len(payload)) + chunk_type + payload
    chunk += struct.pack(">I", zlib.crc32(chunk_type + payload) & 0xFFFFFFFF)
    header_end = 8 + 25  # signature, then the IHDR chunk
    return png[:header_end] + chunk + png[header_end:]


def test_a_png_with_a_huge_compressed_text_chunk_is_refused_as_such() -> None:
    import zlib

    bomb = png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 200_000_000, 9))
    assert len(bomb) < 300_000
    with pytest.raises(ImageDecodeError) as refused:
        decode_image(bomb)
    assert str(refused.value) == (
        "The PNG carries a compressed text or colour-profile chunk that unpacks to more than 1 MB "
        "(a decompression bomb?); it was not read."
    )


def test_a_png_with_a_modest_text_chunk_still_decodes() -> None:
    import zlib

    image = decode_image(png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"hello" * 100)))
    assert image.size == (8, 8)
