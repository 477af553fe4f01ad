"""Chart transport: figures sent to the page with their photos as media files, clicks read back
from them, and the download buttons that export them."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from PIL import Image

from vitviz.export import array_csv, array_npy, export_filename, figure_html, figure_png
from vitviz.figures.titles import fitted_colour_bars, fitted_layout

__all__ = ["cached_png", "figure_downloads", "new_click", "plotly_chart"]

T = TypeVar("T")


# Charts: a figure's photo is served once as a media file instead of riding in every update.


# The page's main area at the narrowest window the app is laid out for (1280 px, sidebar open): a
# chart's share of it is what its title must fit in.
MAIN_AREA_PX = 800


def plotly_chart(
    figure: go.Figure, key: str, *, share: float = 0.5, main_px: float = MAIN_AREA_PX, **options: object
) -> object:
    """`st.plotly_chart`, with each embedded photo sent as a media file the browser fetches once,
    and its title fitted to the chart's width.

    `share` is the part of the page's main area the chart is drawn in (0.5: one of two columns, the
    default, so a title fits wherever a chart stands unless a wider one says so) of a main area
    `main_px` wide (a page laid out for a wider screen says so); a figure with a
    width of its own is fitted to that. A title line that would run past the chart's edge (Plotly
    never wraps one, and the figure cuts it off) is broken into lines that fit, in what is sent
    only: downloads keep the figure's own title.

    A map's figure carries its photo as a JPEG data URI, so that an exported figure is whole; sent
    like that, every layer step would resend the photo inside the map's message. Here the chart is
    sent with each such photo drawn as a layout image whose source is a media file of the same
    bytes (Plotly's image traces take data URIs only; layout images take URLs). Streamlit keeps one
    file per chart and session while the chart is on the page, a fragment's rerun included, and the
    URL stays the same while the photo does. The figure's own traces are not changed (the dict made
    for it is only kept beside them), so downloads made from it still hold the photo. A figure drawn
    again as the same object (one a page kept from an earlier run) reuses that dict: a figure is
    never changed once drawn.
    Returns what `st.plotly_chart` returns.
    """
    spec = _served_spec(figure, key)
    width = figure.layout.width or main_px * share
    fitted = _fitted_title(figure, spec, width)
    if fitted is not None:
        spec = fitted
    return st.plotly_chart(figure if spec is None else _SentFigure(spec), key=key, **options)


def _fitted_title(figure: go.Figure, spec: dict | None, width_px: float) -> dict | None:
    """The chart's dict with its titles fitted to `width_px` (`fitted_layout`) and its colour bars'
    titles to their bars (`fitted_colour_bars`); None when they fit as they are. `spec` (a served
    dict, kept for later runs) is copied, never changed."""
    layout_json = figure.layout.to_plotly_json() if spec is None else spec["layout"]
    layout = fitted_layout(layout_json, width_px)
    bars = [trace.colorbar.to_plotly_json() if "colorbar" in trace else None for trace in figure.data]
    fitted_bars = fitted_colour_bars(bars, layout or layout_json)
    if layout is None and fitted_bars is None:
        return None  # the figure goes as it is: no copy of its data is made
    spec = figure.to_dict() if spec is None else spec
    data = spec["data"]
    if fitted_bars is not None:
        data = [
            trace if bar is None else {**trace, "colorbar": bar}
            for trace, bar in zip(data, fitted_bars, strict=True)
        ]
    return {**spec, "layout": layout or spec["layout"], "data": data}


class _SentFigure(go.Figure):
    """A figure that is only the dict a chart sends: Streamlit serialises a figure's `to_dict()`.

    Given as a plain dict, the spec would be validated into a new figure first (several ms a
    chart); given as this, it is sent as it is, and the page's own figure is never touched (a
    download may be reading it from another thread).
    """

    def __init__(self, spec: dict) -> None:  # no figure is built: nothing to validate
        object.__setattr__(self, "_sent_spec", spec)

    def to_dict(self) -> dict:
        return self._sent_spec


@dataclass(frozen=True)
class _ServedSpec:
    """What a chart sends for one figure: its dict, and the media files (bytes, type, name) it points at."""

    key: str
    spec: dict
    files: tuple[tuple[bytes, str, str], ...]


def _served_spec(figure: go.Figure, key: str) -> dict | None:
    """The figure's dict with its photos as media files, registered for this run; None if it has none.

    The dict is made once per figure object and chart (making it registers its files); a figure
    drawn again registers the same files again, so Streamlit keeps them while the chart is on the
    page.
    """
    from streamlit import runtime

    if not runtime.exists():  # a bare script run has no server to serve files
        return None
    served = getattr(figure, "_vitviz_served", None)
    if served is not None and served.key == key:
        for data, mimetype, name in served.files:
            runtime.get_instance().media_file_mgr.add(data, mimetype, name)
        return served.spec
    served = figure._vitviz_served = _spec_with_photos_as_media(figure, key)
    return None if served is None else served.spec


def _spec_with_photos_as_media(figure: go.Figure, key: str) -> _ServedSpec | None:
    """The figure's dict with each photo trace hidden and drawn as a layout image of a media URL,
    each photo registered as a media file on the way. None when the figure has no such photo."""
    from streamlit import runtime

    photos = [index for index, trace in enumerate(figure.data) if _served_photo(figure, trace)]
    if not photos:
        return None
    spec = figure.to_dict()
    images = spec["layout"].setdefault("images", [])
    files = []
    for index in photos:
        trace = spec["data"][index]
        header, encoded = trace.pop("source").split(",", 1)
        data = base64.b64decode(encoded)
        mimetype = header.removeprefix("data:").removesuffix(";base64")
        files.append((data, mimetype, f"{key}.photo{index}"))
        url = runtime.get_instance().media_file_mgr.add(*files[-1])
        width, height = Image.open(io.BytesIO(data)).size
        dx, dy = trace.get("dx", 1), trace.get("dy", 1)
        images.append(
            {
                "source": _under_base_path(url),
                "xref": trace.get("xaxis", "x"),
                "yref": trace.get("yaxis", "y"),
                "x": trace.get("x0", 0) - dx / 2,
                "y": trace.get("y0", 0) - dy / 2,
                "sizex": width * dx,
                "sizey": height * dy,
                "xanchor": "left",
                "yanchor": "top",
                "sizing": "stretch",
                "layer": "below",
            }
        )
        trace["visible"] = False
    return _ServedSpec(key, spec, tuple(files))


def _served_photo(figure: go.Figure, trace: object) -> bool:
    """An image trace of a data-URI photo on a top-down y axis, the way the photo figures draw one."""
    source = getattr(trace, "source", None) if getattr(trace, "type", None) == "image" else None
    if not (isinstance(source, str) and source.startswith("data:image/") and ";base64," in source):
        return False
    axis = figure.layout[f"yaxis{(trace.yaxis or 'y')[1:]}"]
    return axis.range is not None and axis.range[0] > axis.range[1]


def _under_base_path(url: str) -> str:
    """A media URL as the browser must ask for it when the app is served under a base path."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base else url


# Clicks: what a visitor selected on a chart.


def new_click(chart_key: str, seen_key: str, read: Callable[[dict | None], T | None]) -> T | None:
    """What a user clicked on a chart since the last run, or None.

    A chart's selection stays in the session after the click, so every later run would see it
    again; the last click read per chart is kept under `seen_key` and only a different one counts.

    Args:
        chart_key: the `st.plotly_chart` key whose selection to read.
        seen_key: session key of the {chart key: last click} store shared by a view's charts.
        read: turns the selection into what was clicked (a patch, a head), or None.
    """
    seen = st.session_state.setdefault(seen_key, {})
    clicked = read(st.session_state.get(chart_key))
    if clicked is None or seen.get(chart_key) == clicked:
        return None
    seen[chart_key] = clicked
    return clicked


# Downloads under figures: every file is made only when its button is clicked.


class _Download(NamedTuple):
    """One download button: its label, file ending, MIME type, the maker of its bytes, its tooltip."""

    label: str
    ext: str
    mime: str
    make: Callable[[], bytes | str]
    help: str


_PNG_HELP = "The figure as a picture (2× resolution), for slides."
_HTML_HELP = "The interactive figure in one file that opens offline."
_CSV_HELP = "The raw array as comma-separated text, one line per grid row."


@st.cache_data(show_spinner=False, max_entries=32)
def cached_png(figure_json: str) -> bytes:
    """A figure's PNG, keyed by the figure's JSON: the same view downloads again at once."""
    return figure_png(pio.from_json(figure_json, skip_invalid=True))


def figure_downloads(
    figure: go.Figure,
    array: np.ndarray | None,
    model: str,
    weights: str,
    image: str,
    view: str,
    key: str,
) -> None:
    """A row of download buttons under a figure: PNG, interactive HTML, and the array as .npy and CSV.

    File names say the model, weights, image and view. Nothing is rendered until a button is
    clicked (a PNG needs headless Chromium; the first takes seconds), so pages stay fast.
    """
    files = [
        _Download("PNG", "png", "image/png", lambda: cached_png(figure.to_json()), _PNG_HELP),
        _Download("HTML", "html", "text/html", lambda: figure_html(figure, title=view), _HTML_HELP),
    ]
    if array is not None:
        npy_help = f"The raw {'×'.join(map(str, array.shape))} array for NumPy."
        files += [
            _Download(".npy", "npy", "application/octet-stream", lambda: array_npy(array), npy_help),
            _Download("CSV", "csv", "text/csv", lambda: array_csv(array), _CSV_HELP),
        ]
    with st.container(horizontal=True, gap="small", key=f"{key}_downloads"):
        for file in files:
            st.download_button(
                file.label,
                data=file.make,
                file_name=export_filename(model, weights, image, view, file.ext),
                mime=file.mime,
                key=f"{key}_{file.ext}",
                on_click="ignore",
                icon=":material/download:",
                help=file.help,
            )
