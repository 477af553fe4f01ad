"""Every page's upload, posted by a client that skips the browser's type filter or holding a sliver
of a picture, is answered by one line naming the file — never a traceback."""

import io

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.support.archives import png_bytes
from tests.support.browser import REPO

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # an HEIF box header
NOT_IMAGES = {"drawing.svg": SVG, "phone.heic": HEIC}
THIN = [(2000, 2), (1, 1000), (961, 1), (10000, 10)]


def png_of_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def opened_for_upload(page: str) -> tuple[AppTest, str]:
    """The page with its image source switched to Upload, and the key of its image uploader."""
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.switch_page(f"pages/{page}.py")
    app.run()
    source = "present_source_widget" if page == "present" else f"{page}_image_source"
    app.radio(key=source).set_value("Upload").run()
    assert not app.exception, [element.value for element in app.exception]
    return app, f"{page}_upload"


def thin_uploads() -> dict[str, tuple[bytes, str]]:
    """{file name: (a PNG less than 32 pixels across one way, the line that refuses it)}."""
    uploads = {}
    for width, height in THIN:
        name = f"thin-{width}x{height}.png"
        uploads[name] = (
            png_of_size(width, height),
            f"{name}: The image is {width} × {height} px (width × height): too thin for a model to see; each side "
            "needs at least 32 pixels (one patch of the coarsest models here).",
        )
    return uploads


def not_images() -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes a browser's type filter would have kept out, the line that refuses them)}."""
    why = "This file is not an image in a format this app can read (PNG, JPEG, WebP, GIF, BMP or TIFF)."
    return {name: (data, f"{name}: {why}") for name, data in NOT_IMAGES.items()}


@pytest.mark.parametrize("uploads", [not_images, thin_uploads])
@pytest.mark.parametrize("page", ["explore", "compare", "anatomy", "present"])
def test_an_upload_that_is_no_image_or_too_thin_gets_one_line(page, uploads):
    app, uploader = opened_for_upload(page)
    for name, (data, line) in uploads().items():
        app.file_uploader(key=uploader).set_value((name, data, "image/png")).run()
        assert not app.exception, (name, [element.value for element in app.exception])
        assert [error.value for error in app.error] == [line]
    app.file_uploader(key=uploader).set_value(("square.png", png_of_size(32, 32), "image/png")).run()
    assert not app.exception and not app.error


def test_a_zip_upload_that_is_no_zip_gets_one_line():
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    app.switch_page("pages/finetune.py")
    app.run()
    app.radio(key="finetune_data_source").set_value("upload a .zip").run()
    app.file_uploader(key="finetune_upload").set_value(("drawing.svg", SVG, "image/svg+xml")).run()
    assert not app.exception, [element.value for element in app.exception]
    assert [error.value for error in app.error] == [
        "This is not a readable .zip archive (File is not a zip file). Nothing was extracted."
    ]
    app.file_uploader(key="finetune_upload").set_value(("cat.png", png_bytes(), "image/png")).run()
    assert not app.exception and len(app.error) == 1
