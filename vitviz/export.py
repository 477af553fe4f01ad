"""Files to take away: figures as PNG or self-contained HTML, maps as .npy or CSV, and their names."""

from __future__ import annotations

import io
import os
import re
import threading
import unicodedata
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from vitviz.models import RUN_WEIGHTS

__all__ = [
    "EXPORT_MARGIN_PX",
    "ExportError",
    "array_csv",
    "array_npy",
    "export_filename",
    "figure_html",
    "figure_png",
    "slug",
]

# Debian's Chromium: kaleido looks for a browser on BROWSER_PATH before it tries to find its own.
_DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
# Size used when a figure sets none (Plotly's own export default is 700×500).
_DEFAULT_WIDTH = 900
_DEFAULT_HEIGHT = 560
# Extensions dropped from image names in file names ("astronaut.png" → "astronaut").
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
# The border an exported PNG gets on each side, in CSS pixels (see figure_png).
EXPORT_MARGIN_PX = 24
# One Chromium renders every PNG: kaleido's sync server answers requests in order through one queue,
# so two threads (Streamlit sessions) asking at once could be handed each other's image.
_KALEIDO_LOCK = threading.Lock()


class ExportError(RuntimeError):
    """A figure could not be rendered to an image; the message is meant for the user."""


def slug(text: str, max_length: int = 60) -> str:
    """A file-name-safe form of `text`: ASCII lower case, runs of other characters become "-".

    "cat (chelsea)" → "cat-chelsea"; "Layer 11 · mean" → "layer-11-mean"; "" → "untitled".
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^a-z0-9_]+", "-", ascii_text.lower()).strip("-_")
    return cleaned[:max_length].rstrip("-_") or "untitled"


def _weights_slug(weights: str) -> str:
    """Named sources as they are ("random" says it is untrained, "run" a fine-tuned run, whose name
    is the model's); a checkpoint by its file stem."""
    if weights == "random":
        return "random-untrained"
    if weights in ("bundled", "hub", RUN_WEIGHTS):
        return weights
    return "file-" + slug(Path(weights).stem)


def export_filename(model: str, weights: str, image: str, shown: str, ext: str) -> str:
    """A file name that says which model, weights and image a download shows, and what it shows.

    Example: ``export_filename("vit_small_patch14_dinov2", "bundled", "cat (chelsea)",
    "layer11 mean attention", "png")`` gives
    ``vit_small_patch14_dinov2__bundled__cat-chelsea__layer11-mean-attention.png``.

    Args:
        model: timm model name, or a fine-tuned run's name.
        weights: "bundled", "hub", "random", "run" or a checkpoint path.
        image: image name; a file extension ("astronaut.png") is dropped.
        shown: what the figure shows (its view, layer, method…).
        ext: file extension, with or without the dot.
    """
    image_stem = Path(image).stem if Path(image).suffix.lower() in _IMAGE_SUFFIXES else image
    parts = [slug(model), _weights_slug(weights), slug(image_stem), slug(shown)]
    return "__".join(parts) + "." + slug(ext.lstrip("."))


def array_npy(array: np.ndarray) -> bytes:
    """The array as a NumPy .npy file (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def array_csv(array: np.ndarray, precision: int = 6) -> str:
    """A 1-D or 2-D array as CSV: one line per row (a 1-D array is one column), no header.

    Raises:
        ValueError: the array has more than two dimensions.
    """
    values = np.asarray(array)
    if values.ndim > 2:
        raise ValueError(f"CSV holds 1-D or 2-D arrays; this one has shape {values.shape}")
    buffer = io.StringIO()
    np.savetxt(
        buffer, values.reshape(-1, 1) if values.ndim == 1 else values, delimiter=",", fmt=f"%.{precision}g"
    )
    return buffer.getvalue()


def figure_html(figure: go.Figure, title: str | None = None) -> str:
    """A standalone HTML page of the interactive figure that opens offline (plotly.js inline)."""
    html = figure.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    if title:
        html = html.replace("</head>", f"<title>{_escape(title)}</title></head>", 1)
    return html


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _use_debian_chromium() -> None:
    if not os.environ.get("BROWSER_PATH") and _DEBIAN_CHROMIUM.exists():
        os.environ["BROWSER_PATH"] = str(_DEBIAN_CHROMIUM)


def _with_border(png: bytes, border_px: int) -> bytes:
    """The PNG framed by `border_px` pixels of its own paper colour (the top-left pixel's) on every side."""
    from PIL import Image, ImageOps  # deferred: only PNG export needs Pillow here

    with Image.open(io.BytesIO(png)) as image:
        image.load()
        framed = ImageOps.expand(image, border=border_px, fill=image.getpixel((0, 0)))
    buffer = io.BytesIO()
    framed.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(
    figure: go.Figure, scale: float = 2, width: int | None = None, height: int | None = None
) -> bytes:
    """Renders the figure to PNG bytes with kaleido in headless Chromium.

    The first call starts Chromium (seconds); later calls reuse it (a fraction of a second). The
    picture is framed by EXPORT_MARGIN_PX CSS pixels of its paper colour on every side: the app's
    figures sit edge to edge on a page, a slide or a paper needs room around them.
    MathJax is off, so rendering never reaches for the network.

    Args:
        figure: any Plotly figure.
        scale: pixel density; 2 gives crisp images for slides.
        width, height: size in CSS pixels before scaling and framing; default the figure's own, else
            900×560. The PNG is (width + 2·EXPORT_MARGIN_PX)·scale wide, and likewise high.

    Raises:
        ExportError: kaleido or Chromium is missing, or rendering failed.
    """
    try:
        import kaleido
    except ImportError as error:
        raise ExportError("PNG export needs the kaleido package (pip install kaleido).") from error
    _use_debian_chromium()
    layout = figure.layout
    options = {
        "format": "png",
        "width": width or layout.width or _DEFAULT_WIDTH,
        "height": height or layout.height or _DEFAULT_HEIGHT,
        "scale": scale,
    }
    figure_dict = figure.to_dict()
    with _KALEIDO_LOCK:
        try:
            kaleido.start_sync_server(mathjax=False, silence_warnings=True)
            png = kaleido.calc_fig_sync(figure_dict, opts=options)
        except Exception as first_error:
            # A Chromium that died (killed, out of memory) leaves a server that cannot answer:
            # start a fresh one once before giving up.
            kaleido.stop_sync_server(silence_warnings=True)
            try:
                kaleido.start_sync_server(mathjax=False, silence_warnings=True)
                png = kaleido.calc_fig_sync(figure_dict, opts=options)
            except Exception as error:
                kaleido.stop_sync_server(silence_warnings=True)
                raise ExportError(
                    f"Could not render the PNG ({type(error).__name__}: {error}). PNG export needs "
                    "Chromium: install it or set BROWSER_PATH to a Chrome/Chromium binary."
                ) from first_error
    return _with_border(png, round(EXPORT_MARGIN_PX * scale))
