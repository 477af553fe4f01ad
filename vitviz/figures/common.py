"""Plotly figures: the patch grid, attention overlays and prediction bars."""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Sequence

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
from PIL import Image

from vitviz.figures.scales import ColourScale
from vitviz.predict import Prediction

__all__ = [
    "MAP_COLORSCALE",
    "PATCH_CENTRES_NAME",
    "SINK_MARKS_NAME",
    "VIEW_BOX_COLOURS",
    "attention_overlay_figure",
    "custom_values",
    "grid_layout",
    "jpeg_data_uri",
    "left_title",
    "patch_grid_figure",
    "photo_view_figure",
    "png_data_uri",
    "predictions_figure",
    "rgb_colour_scale",
    "selected_patch",
    "similarity_heatmap",
    "sink_marks",
    "view_box_shape",
]

# The view's box, wherever a photo is drawn with it: cyan, then a colour of its own for each further
# view on the same photo (Compare's models). Cyan also outlines a chosen patch.
VIEW_BOX_COLOURS = ("#00e5ff", "#ffd400", "#ff4fd8")
_MIN_FIGURE_PX = 10  # the smallest width or height Plotly accepts


def rgb_colour_scale(hex_colours: list[str]) -> list[list[float | str]]:
    """A Plotly colour scale with its stops written as rgb() strings.

    Streamlit's front end swaps some near-black hex colours such as Inferno's first stop "#000004"
    for theme colours, which turned the low end of every map violet; rgb() strings are left alone.
    """
    last = len(hex_colours) - 1
    return [
        [index / last, "rgb({}, {}, {})".format(*pc.hex_to_rgb(colour))]
        for index, colour in enumerate(hex_colours)
    ]


MAP_COLORSCALE = rgb_colour_scale(pc.sequential.Inferno)

# Name of the invisible scatter of patch centres that makes patches clickable in a browser.
PATCH_CENTRES_NAME = "patches"
# Name of the small marker trace that flags attention-sink patches on a map.
SINK_MARKS_NAME = "attention sinks"


def png_data_uri(pixels: np.ndarray) -> str:
    """A PNG data URI of (H, W[, 3]) uint8 pixels: far smaller to send than the pixels as numbers."""
    return _encode_png(pixels.tobytes(), pixels.shape)


@functools.lru_cache(maxsize=32)
def _encode_png(raw: bytes, shape: tuple[int, ...]) -> str:
    """PNG data URI of raw uint8 pixels; cached because a page draws one image several times."""
    buffer = io.BytesIO()
    Image.fromarray(np.frombuffer(raw, dtype=np.uint8).reshape(shape)).save(
        buffer, format="PNG", compress_level=1
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def jpeg_data_uri(pixels: np.ndarray, quality: int = 90) -> str:
    """A JPEG data URI of (H, W, 3) uint8 photo pixels: a fifth of the PNG's bytes.

    A map is drawn over its photo and resent with every layer, head or patch change; the photo's
    PNG was ~125 KB of a ~165 KB message, its JPEG (quality 90, no chroma subsampling) ~26 KB, its
    pixels off by ~2 of 255 on average.
    """
    return _encode_jpeg(pixels.tobytes(), pixels.shape, quality)


@functools.lru_cache(maxsize=32)
def _encode_jpeg(raw: bytes, shape: tuple[int, ...], quality: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.frombuffer(raw, dtype=np.uint8).reshape(shape)).convert("RGB").save(
        buffer, format="JPEG", quality=quality, subsampling=0
    )
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def left_title(text: str, size: int = 15) -> dict:
    """A figure title set flush left, as every vitviz figure draws it."""
    return {"text": text, "x": 0.0, "xanchor": "left", "font": {"size": size}}


# Room under a wide map for its horizontal colour bar and the bar's title.
_WIDE_BAR_PX = 90


def _figure_height(pixels: np.ndarray, tallest: int, shortest: int = 160) -> int:
    """A figure height that leaves no wide band empty above and below a wide image.

    A plot column is about 560 px wide, so an image as wide as it is high fills `tallest`; a 4:1
    panorama (the "aspect" view) gets about a quarter of that, plus the 40-px title.
    """
    height, width = pixels.shape[:2]
    return max(shortest, min(tallest, 40 + round(560 * height / width)))


def grid_layout(title: str, margin: dict[str, int] | None = None, height: int = 520) -> dict:
    """The layout of a figure drawn over a grid of cells (an image, a token grid): a left title, no
    legend, no dragging, and clicks that select points; `margin` default none but the title's."""
    return {
        "title": left_title(title),
        "margin": margin or {"l": 0, "r": 0, "t": 40, "b": 0},
        "height": height,
        "dragmode": False,
        "clickmode": "event+select",
        "showlegend": False,
    }


def similarity_heatmap(
    values: np.ndarray, colorscale: list[list[float | str]], thickness: int = 12, **trace: object
) -> go.Heatmap:
    """Cosine similarities as a heatmap on the fixed scale -1..1, its colour bar saying what they are."""
    colorbar = {"title": {"text": "cosine similarity", "side": "right"}, "thickness": thickness}
    return go.Heatmap(z=values, zmin=-1.0, zmax=1.0, colorscale=colorscale, colorbar=colorbar, **trace)


def _photo_figure(
    pixels: np.ndarray,
    title: str,
    height: int,
    traces: Sequence[go.Heatmap | go.Scatter] = (),
    shapes: Sequence[dict] = (),
    **layout: object,
) -> go.Figure:
    """The image with `traces` and `shapes` over it, built in one go.

    The figure is made in a single validated construction rather than by `add_trace` and
    `update_layout` step by step: on a map that reruns with every slider step that is several
    milliseconds of the server's time saved.
    """
    rows, cols = pixels.shape[:2]
    # An encoded source is far smaller to send than a (H, W, 3) list of numbers, and these figures
    # are photos redrawn with every map change: JPEG, not PNG.
    photo = go.Image(source=jpeg_data_uri(pixels), hoverinfo="skip")
    return go.Figure(
        data=[photo, *traces],
        layout={
            **grid_layout(title, height=height),
            "xaxis": {"visible": False, "range": [-0.5, cols - 0.5]},
            "yaxis": {"visible": False, "range": [rows - 0.5, -0.5], "scaleanchor": "x"},
            "shapes": list(shapes),
            **layout,
        },
    )


def _patch_centres(
    grid_size: tuple[int, int], stride_px: tuple[int, int], values: np.ndarray | None
) -> go.Scatter:
    """A transparent scatter over the patch centres: Plotly reports clicks on points, not pixels."""
    rows, cols = grid_size
    row_index, col_index = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    row_index, col_index = row_index.ravel(), col_index.ravel()
    hover = "row %{customdata[0]}, col %{customdata[1]}"
    if values is not None:
        hover += "<br>value %{customdata[2]:.4f}"
        custom = np.stack([row_index, col_index, values.ravel()], axis=1)
    else:
        custom = np.stack([row_index, col_index], axis=1)
    return go.Scatter(
        x=(col_index + 0.5) * stride_px[1] - 0.5,
        y=(row_index + 0.5) * stride_px[0] - 0.5,
        mode="markers",
        marker={"size": max(4, min(28, 460 // max(rows, cols))), "opacity": 0.0, "color": "white"},
        customdata=custom,
        hovertemplate=hover + "<extra></extra>",
        name=PATCH_CENTRES_NAME,
        selected={"marker": {"opacity": 0.0}},
        unselected={"marker": {"opacity": 0.0}},
    )


def _outline(left: float, top: float, right: float, bottom: float, colour: str = VIEW_BOX_COLOURS[0]) -> dict:
    """A box around pixels left..right, top..bottom (edges, in the image's own pixels); cyan by default."""
    box = {"x0": left - 0.5, "x1": right - 0.5, "y0": top - 0.5, "y1": bottom - 0.5}
    return {"type": "rect", **box, "line": {"color": colour, "width": 3}}


def _patch_outline(patch: tuple[int, int], stride_px: tuple[int, int]) -> dict:
    row, col = patch
    return _outline(
        col * stride_px[1], row * stride_px[0], (col + 1) * stride_px[1], (row + 1) * stride_px[0]
    )


def patch_grid_figure(
    pixels: np.ndarray,
    grid_size: tuple[int, int],
    stride_px: tuple[int, int],
    title: str,
    selected: tuple[int, int] | None = None,
) -> go.Figure:
    """The image as the model sees it, cut into its token grid.

    Args:
        pixels: (H, W, 3) uint8 image at the model's input size.
        grid_size: (rows, cols) of the token grid.
        stride_px: input pixels between neighbouring tokens (the patch size for a plain ViT).
        title: figure title.
        selected: (row, col) of a patch to outline.
    """
    height, width = pixels.shape[:2]
    rows, cols = grid_size
    xs: list[float | None] = []
    ys: list[float | None] = []
    for col in range(1, cols):
        x = col * stride_px[1] - 0.5
        xs += [x, x, None]
        ys += [-0.5, height - 0.5, None]
    for row in range(1, rows):
        y = row * stride_px[0] - 0.5
        xs += [-0.5, width - 0.5, None]
        ys += [y, y, None]
    lines = go.Scatter(
        x=xs, y=ys, mode="lines", line={"color": "rgba(255,255,255,0.75)", "width": 1}, hoverinfo="skip"
    )
    return _photo_figure(
        pixels,
        title,
        _figure_height(pixels, 520),
        [lines, _patch_centres(grid_size, stride_px, None)],
        [] if selected is None else [_patch_outline(selected, stride_px)],
    )


def attention_overlay_figure(
    pixels: np.ndarray,
    values: np.ndarray,
    stride_px: tuple[int, int],
    title: str,
    opacity: float = 0.6,
    selected: tuple[int, int] | None = None,
    colorbar_title: str = "attention",
    scale: ColourScale | None = None,
    sinks: Sequence[tuple[int, int]] = (),
) -> go.Figure:
    """A map over the token grid drawn over the image, one cell per token, colour bar beside it.

    Args:
        pixels: (H, W, 3) uint8 image at the model's input size.
        values: (rows, cols) map over the token grid.
        stride_px: input pixels between neighbouring tokens.
        title: figure title.
        opacity: opacity of the map over the image.
        selected: (row, col) of the query patch to outline, if any.
        colorbar_title: colour-bar title when no `scale` is given (the raw range is used then).
        scale: the colour range and its title (`vitviz.figures.scales.colour_scale`); None: raw range.
        sinks: (row, col) of attention-sink patches, each marked with a small cross.
    """
    colour_range = {} if scale is None else {"zmin": scale.zmin, "zmax": scale.zmax}
    bar_title = colorbar_title if scale is None else scale.title
    colorbar: dict[str, object] = {"title": {"text": bar_title, "side": "right"}, "thickness": 14}
    height, width = pixels.shape[:2]
    figure_height = _figure_height(pixels, 520)
    wide: dict[str, object] = {}
    if width >= 2 * height:  # a wide map is short: its bar lies under it, where the title fits
        colorbar = {"title": {"text": bar_title, "side": "top"}, "thickness": 12, "orientation": "h"}
        colorbar |= {"y": 0.0, "yanchor": "top", "ypad": 6}
        figure_height += _WIDE_BAR_PX
        wide = {"margin": {**grid_layout(title)["margin"], "b": _WIDE_BAR_PX}}
    heatmap = go.Heatmap(
        z=values,
        x0=stride_px[1] / 2 - 0.5,
        dx=stride_px[1],
        y0=stride_px[0] / 2 - 0.5,
        dy=stride_px[0],
        colorscale=MAP_COLORSCALE,
        opacity=opacity,
        hoverinfo="skip",
        colorbar=colorbar,
        **colour_range,
    )
    traces = [heatmap, _patch_centres(values.shape, stride_px, values)]
    if sinks:
        traces.append(sink_marks(sinks, stride_px))
    shapes = [] if selected is None else [_patch_outline(selected, stride_px)]
    return _photo_figure(pixels, title, figure_height, traces, shapes, **wide)


def sink_marks(sinks: Sequence[tuple[int, int]], stride_px: tuple[int, int]) -> go.Scatter:
    """A small cyan cross in each sink patch, named so a legend or a test can find it."""
    rows = np.array([row for row, _ in sinks], dtype=float)
    cols = np.array([col for _, col in sinks], dtype=float)
    return go.Scatter(
        x=(cols + 0.5) * stride_px[1] - 0.5,
        y=(rows + 0.5) * stride_px[0] - 0.5,
        mode="markers",
        marker={"symbol": "x-thin", "size": 9, "line": {"color": "#00e5ff", "width": 2}},
        name=SINK_MARKS_NAME,
        hovertemplate="attention sink: row %{customdata[0]}, col %{customdata[1]}<extra></extra>",
        customdata=np.stack([rows, cols], axis=1),
    )


def view_box_shape(box: tuple[float, float, float, float], scale: float = 1.0, index: int = 0) -> dict:
    """The rectangle of a view's box (`ImageView.box`) on its photo drawn at `scale`.

    Args:
        box: (left, top, right, bottom) of the view, in the photo's own pixels.
        scale: shown pixels per photo pixel.
        index: which of several boxes on one photo: each further one has its own colour and sits
            2 px further in, so boxes that coincide stay visible side by side.
    """
    inset = 2 * index
    left, top, right, bottom = (edge * scale for edge in box)
    colour = VIEW_BOX_COLOURS[index % len(VIEW_BOX_COLOURS)]
    return _outline(left + inset, top + inset, right - inset, bottom - inset, colour)


def photo_view_figure(
    photo: Image.Image,
    boxes: Sequence[tuple[str, tuple[float, float, float, float]]],
    title: str = "",
    longest: int = 480,
) -> go.Figure:
    """The whole photo with the box of each view on it: the part of the photo the model sees.

    Every page draws a photo with its view this way (one box; on Compare one per distinct view).

    Args:
        photo: the photo the views were made from.
        boxes: (label, (left, top, right, bottom) in the photo's own pixels) per view; a label is
            written in the box's corner unless it is "".
        title: figure title; without one the figure is exactly the photo's size, with no margins.
        longest: the photo is shown at most this many pixels on its longest side (never enlarged).
    """
    rgb = photo.convert("RGB")
    scale = min(1.0, longest / max(rgb.size))
    if scale < 1.0:
        shown = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(shown, Image.Resampling.BILINEAR)
        scale = rgb.width / photo.width
    pixels = np.asarray(rgb)
    shapes = [view_box_shape(box, scale, index) for index, (_, box) in enumerate(boxes)]
    annotations = [
        {
            "text": label,
            "x": box[0] * scale + 4 + 2 * index,
            "y": box[1] * scale + 4 + 18 * index,
            "xanchor": "left",
            "yanchor": "top",
            "showarrow": False,
            "font": {"color": "black", "size": 11},
            "bgcolor": shape["line"]["color"],
        }
        for index, ((label, box), shape) in enumerate(zip(boxes, shapes, strict=True))
        if label
    ]
    if title:
        height = _figure_height(pixels, 300, 140)
        return _photo_figure(pixels, title, height, shapes=shapes, annotations=annotations, clickmode="none")
    rows, cols = pixels.shape[:2]
    # Plotly refuses a side under 10 px; a panorama 320 px wide can be 1 px tall.
    height, width = max(rows, _MIN_FIGURE_PX), max(cols, _MIN_FIGURE_PX)
    return _photo_figure(
        pixels, "", height, shapes=shapes, annotations=annotations, clickmode="none",
        margin={"l": 0, "r": 0, "t": 0, "b": 0}, width=width,
    )  # fmt: skip


def predictions_figure(predictions: Sequence[Prediction], title: str) -> go.Figure:
    """Horizontal bars of the top-k probabilities, most probable on top."""
    ordered = list(reversed(predictions))
    figure = go.Figure(
        go.Bar(
            x=[p.probability for p in ordered],
            y=[f"{p.label} ({p.index})" for p in ordered],
            orientation="h",
            text=[f"{p.probability:.1%}" for p in ordered],
            textposition="auto",
            marker={"color": "#4c78a8"},
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        xaxis={"range": [0, 1], "tickformat": ".0%", "title": "probability"},
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        height=60 + 34 * max(1, len(ordered)),
    )
    return figure


def custom_values(point: dict) -> list[float] | None:
    """A point's customdata as a list: Streamlit reports it as a list or as a {"0": ..} mapping."""
    custom = point.get("customdata")
    if isinstance(custom, dict):
        custom = [custom.get(str(index), custom.get(index)) for index in range(len(custom))]
    if not isinstance(custom, list | tuple) or len(custom) < 2:
        return None
    try:
        return [float(value) for value in custom[:2]]
    except (TypeError, ValueError):
        return None


def selected_patch(selection: dict | None, grid_size: tuple[int, int]) -> tuple[int, int] | None:
    """The (row, col) of the patch a user clicked, from a Streamlit Plotly selection event.

    Only points that carry a patch's (row, col) count; anything else gives None.
    """
    if not selection:
        return None
    points = selection.get("selection", {}).get("points", [])
    for point in points:
        values = custom_values(point)
        if values is None:
            continue
        row, col = round(values[0]), round(values[1])
        if 0 <= row < grid_size[0] and 0 <= col < grid_size[1]:
            return row, col
    return None
