"""One self-contained HTML report for a folder of images: predictions, maps and the model's facts."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from PIL import Image
from plotly.offline import get_plotlyjs

from vitviz.figures.common import attention_overlay_figure
from vitviz.forward.attention import record_attention
from vitviz.images import ImageDecodeError, load_image_file
from vitviz.maths.attention import rollout_relevance
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement
from vitviz.models import LoadedModel, describe_weights
from vitviz.predict import Prediction, predict
from vitviz.preprocess import ImageView, ViewMode, image_view

__all__ = ["ImageReport", "Report", "build_report", "render_report"]

# Longest side of the thumbnails embedded in the report.
_THUMBNAIL_PX = 320
_MAP_HEIGHT = 380


@dataclass
class ImageReport:
    """What the report shows for one image, or why the file was skipped."""

    name: str
    thumbnail: Image.Image | None = None
    size: tuple[int, int] | None = None  # (width, height) of the original
    predictions: list[Prediction] | None = None
    map_figure: go.Figure | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # the reason, for files that are not usable images


@dataclass
class Report:
    """A folder's report before it is written out as HTML."""

    folder: Path
    loaded: LoadedModel
    images: list[ImageReport]
    created: datetime

    @property
    def skipped(self) -> list[ImageReport]:
        return [entry for entry in self.images if entry.skipped is not None]


def _folder_files(folder: Path) -> list[Path]:
    """Regular files of the folder (not its subfolders), hidden files left out, by name."""
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def _grad_cam(loaded: LoadedModel, view: ImageView) -> tuple[np.ndarray, tuple[float, float], str] | str:
    """A Grad-CAM map of the top class from vitviz.methods when this build has it, else why not.

    Returns:
        (rows, cols) map, input pixels per map cell and the class explained; or a note.
    """
    try:
        from vitviz.methods import explanation_map
    except ImportError:
        return "Grad-CAM is not available in this build: predictions only."
    try:
        result = explanation_map(loaded, view, "gradcam")
    except (ValueError, RuntimeError) as error:
        return f"No Grad-CAM map: {error}"
    label = result.target_label or f"class {result.target_index}"
    return result.values, (float(result.stride_px[0]), float(result.stride_px[1])), label


def _explain_map(loaded: LoadedModel, view: ImageView) -> tuple[go.Figure | None, str | None]:
    """Rollout for transformers, Grad-CAM for CNNs when available; the figure, or a note why not."""
    facts = loaded.facts
    pixels = view.pixels
    untrained = " (untrained)" if not loaded.trained else ""
    if not facts.global_attention:  # rollout needs global attention: CNNs and staged models get Grad-CAM
        grad_cam = _grad_cam(loaded, view)
        if isinstance(grad_cam, str):
            return None, grad_cam
        values, stride, label = grad_cam
        title = f"Grad-CAM for {label}{untrained}"
        return attention_overlay_figure(pixels, values, stride, title, colorbar_title="Grad-CAM"), None
    record = record_attention(loaded, view)
    sinks = detect_sinks(record)
    relevance = rollout_relevance(record, sink_report=sinks)
    title = f"{rollout_statement(plan_rollout(sinks))}{untrained}"
    return attention_overlay_figure(
        pixels, relevance, facts.stride_px, title, colorbar_title="relevance"
    ), None


def _report_image(path: Path, loaded: LoadedModel, topk: int, mode: ViewMode) -> ImageReport:
    try:
        image = load_image_file(path)
    except ImageDecodeError as error:
        return ImageReport(path.name, skipped=str(error))
    entry = ImageReport(path.name, size=image.size)
    thumbnail = image.copy()
    thumbnail.thumbnail((_THUMBNAIL_PX, _THUMBNAIL_PX))
    entry.thumbnail = thumbnail
    view = image_view(image, loaded.facts, mode)
    if loaded.facts.has_classifier:
        entry.predictions = predict(loaded, [view], topk=topk)[0]
    else:
        entry.notes.append(f"{loaded.facts.name} has no classifier head, so it makes no predictions.")
    entry.map_figure, note = _explain_map(loaded, view)
    if note:
        entry.notes.append(note)
    return entry


def build_report(
    folder: str | Path,
    loaded: LoadedModel,
    topk: int = 5,
    progress: Callable[[str], None] | None = None,
    mode: ViewMode = "crop",
) -> Report:
    """Runs the model on every file of `folder`; files that are not images are listed as skipped.

    Args:
        folder: a folder of images (subfolders and hidden files are not read).
        loaded: the model; never modified.
        topk: how many classes to list per image.
        progress: called with one line per file, e.g. "[2/3] coffee.png: ok".
        mode: what the model sees of each image: "crop" (its eval transform) or "whole"; each
            image's view is made once and every prediction and map of it is computed on it.

    Raises:
        FileNotFoundError / NotADirectoryError: `folder` is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"No such folder: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"Not a folder: {folder}")
    paths = _folder_files(folder)
    entries = []
    for number, path in enumerate(paths, start=1):
        entry = _report_image(path, loaded, topk, mode)
        if progress is not None:
            outcome = "ok" if entry.skipped is None else f"skipped ({entry.skipped})"
            progress(f"[{number}/{len(paths)}] {path.name}: {outcome}")
        entries.append(entry)
    return Report(folder=folder, loaded=loaded, images=entries, created=datetime.now())


def _jpeg_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_div(figure: go.Figure) -> str:
    figure.update_layout(height=_MAP_HEIGHT, width=_MAP_HEIGHT + 80)
    return pio.to_html(figure, full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _predictions_table(predictions: list[Prediction], trained: bool) -> str:
    rows = "".join(
        f'<tr><td class="label">{html.escape(p.label)}</td><td class="index">{p.index}</td>'
        f'<td class="bar"><span style="width:{100 * p.probability:.1f}%"></span></td>'
        f'<td class="probability">{p.probability:.1%}</td></tr>'
        for p in predictions
    )
    caption = f"Top-{len(predictions)} predictions" + ("" if trained else " (untrained)")
    return f'<table class="predictions"><caption>{caption}</caption>{rows}</table>'


def _facts_table(report: Report) -> str:
    facts = asdict(report.loaded.facts)
    rows = "".join(
        f"<tr><th>{html.escape(name.replace('_', ' '))}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in facts.items()
    )
    return f'<table class="facts">{rows}</table>'


def _image_section(entry: ImageReport, trained: bool) -> str:
    parts = [f"<h2>{html.escape(entry.name)}</h2>", '<div class="row">']
    if entry.thumbnail is not None and entry.size is not None:
        parts.append(
            f'<figure><img src="{_jpeg_data_uri(entry.thumbnail)}" alt="{html.escape(entry.name)}">'
            f"<figcaption>{entry.size[0]}×{entry.size[1]} px</figcaption></figure>"
        )
    if entry.map_figure is not None:
        parts.append(f'<div class="map">{_figure_div(entry.map_figure)}</div>')
    if entry.predictions is not None:
        parts.append(_predictions_table(entry.predictions, trained))
    parts.append("</div>")
    parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in entry.notes)
    return '<section class="image">' + "".join(parts) + "</section>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #1b1f2a; }
h1 { margin-bottom: 0.2rem; } .meta { color: #555; margin-top: 0; }
.untrained { background: #fff3cd; border: 1px solid #e0b400; padding: 0.6rem 1rem; border-radius: 6px; }
section.image { border-top: 1px solid #ddd; padding-top: 0.5rem; margin-top: 1.5rem; }
.row { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
figure { margin: 0; } figure img { max-width: 320px; border-radius: 4px; }
figcaption, .note { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; } td, th { padding: 0.25rem 0.6rem; text-align: left; }
table.facts th { color: #555; font-weight: normal; } table.facts td { font-family: monospace; }
table.predictions caption { text-align: left; font-weight: bold; padding-bottom: 0.3rem; }
table.predictions td.bar { width: 160px; } table.predictions td.index { color: #888; }
td.bar span { display: block; height: 0.9rem; background: #4c78a8; border-radius: 2px; }
ul.skipped li { margin-bottom: 0.3rem; }
"""


def render_report(report: Report) -> str:
    """The report as one HTML page that opens offline: plotly.js and every image are inline."""
    loaded = report.loaded
    facts = loaded.facts
    usable = [entry for entry in report.images if entry.skipped is None]
    weights = describe_weights(loaded.weights, loaded.run)
    title = f"vitviz report · {facts.name} · {weights}"
    banner = (
        ""
        if loaded.trained
        else '<p class="untrained"><b>Random, untrained weights:</b> every map and prediction in this '
        "report shows an untrained model.</p>"
    )
    skipped = report.skipped
    skipped_html = (
        '<section class="skipped"><h2>Skipped files</h2><ul class="skipped">'
        + "".join(
            f"<li><b>{html.escape(entry.name)}</b>: {html.escape(entry.skipped or '')}</li>"
            for entry in skipped
        )
        + "</ul></section>"
        if skipped
        else ""
    )
    body = "".join(_image_section(entry, loaded.trained) for entry in usable)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta">{len(usable)} images from {html.escape(str(report.folder))}, '
        f"{len(skipped)} skipped · {report.created:%Y-%m-%d %H:%M} · device {html.escape(str(loaded.device))}</p>"
        f"{banner}<details open><summary>Model facts</summary>{_facts_table(report)}</details>"
        f"{body}{skipped_html}</body></html>\n"
    )
