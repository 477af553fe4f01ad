"""Plotly figures of the Anatomy tabs: tokens, filters, position similarity, distances, resolution,
the hybrid stem, token norms, all heads, and queries & keys."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from vitviz.figures.common import (
    MAP_COLORSCALE,
    attention_overlay_figure,
    custom_values,
    left_title,
    png_data_uri,
    rgb_colour_scale,
    similarity_heatmap,
)
from vitviz.figures.scales import CLIP_PERCENTILE, ColourScale, ordinal
from vitviz.forward.hybrid import HybridStem
from vitviz.maths.qk import QueryKeyProjection, QueryKeys
from vitviz.maths.token_features import TokenNorms

__all__ = [
    "HEAD_CENTRES_NAME",
    "MODEL_VIEW_MARGIN_PX",
    "POSITIONS_NAME",
    "SIMILARITY_COLORSCALE",
    "attention_distance_figure",
    "encoder_input_figure",
    "explained_variance_figure",
    "feature_maps_figure",
    "filter_components_figure",
    "head_importance_figure",
    "logit_lens_figure",
    "model_view_figure",
    "norm_histogram_figure",
    "patch_class_figure",
    "position_colours",
    "position_key_figure",
    "query_key_figure",
    "rgb_grid_figure",
    "sanity_maps_figure",
    "selected_head",
    "similarity_grid_figure",
    "similarity_map_figure",
    "stem_grid_figure",
    "token_sequence_figure",
]

SIMILARITY_COLORSCALE = rgb_colour_scale(pc.sequential.Viridis)
# Name of the invisible scatter of small-map centres that makes grid positions clickable.
POSITIONS_NAME = "positions"
# Slot of one token in the sequence strip, in pixels of the strip picture.
_SLOT_PX = 56
_SLOT_GAP_PX = 6
_PREFIX_COLOURS = {"class": (214, 39, 40), "distillation": (148, 103, 189), "register": (44, 160, 44)}


def _prefix_colour(name: str) -> tuple[int, int, int]:
    return _PREFIX_COLOURS.get(name.split(" ")[0], (127, 127, 127))


def token_sequence_figure(
    cells: np.ndarray,
    cell_indices: Sequence[int],
    grid_size: tuple[int, int],
    prefix_names: Sequence[str],
    title: str,
) -> go.Figure:
    """The sequence the encoder reads, as a strip: prefix tokens first, then patches in reading order.

    Args:
        cells: (k, h, w, 3) uint8 image cells of the patches shown.
        cell_indices: the k patch indices (row-major) of those cells; a jump between two is drawn
            as an ellipsis slot.
        grid_size: (rows, cols) of the token grid, to label patches with their (row, col).
        prefix_names: names of the prefix tokens, in sequence order.
        title: figure title.
    """
    cols = grid_size[1]
    slots: list[tuple[np.ndarray | None, str, str]] = []  # (picture, label, hover)
    for position, name in enumerate(prefix_names):
        colour = np.array(_prefix_colour(name), np.uint8)
        label = (
            "CLS" if name == "class" else "DIST" if name == "distillation" else name.replace("register ", "R")
        )
        slots.append(
            (np.broadcast_to(colour, (_SLOT_PX, _SLOT_PX, 3)), label, f"token {position}: {name} token")
        )
    previous = None
    for cell, index in zip(cells, cell_indices, strict=True):
        if previous is not None and index != previous + 1:
            slots.append((None, "…", f"patches {previous + 1}–{index - 1}"))
        enlarged = np.asarray(Image.fromarray(cell).resize((_SLOT_PX, _SLOT_PX), Image.Resampling.NEAREST))
        row, col = divmod(index, cols)
        sequence_index = len(prefix_names) + index
        slots.append((enlarged, str(index), f"token {sequence_index}: patch {index}, row {row}, col {col}"))
        previous = index
    width = len(slots) * (_SLOT_PX + _SLOT_GAP_PX)
    strip = np.full((_SLOT_PX, width, 3), 255, np.uint8)
    for slot, (picture, _, _) in enumerate(slots):
        if picture is not None:
            left = slot * (_SLOT_PX + _SLOT_GAP_PX)
            strip[:, left : left + _SLOT_PX] = picture
    figure = go.Figure(go.Image(source=png_data_uri(strip), hoverinfo="skip"))
    centres = [slot * (_SLOT_PX + _SLOT_GAP_PX) + _SLOT_PX / 2 - 0.5 for slot in range(len(slots))]
    figure.add_trace(
        go.Scatter(
            x=centres,
            y=[_SLOT_PX / 2] * len(slots),
            mode="text",
            text=[label if picture is None else "" for picture, label, _ in slots],
            textfont={"size": 22},
            hovertext=[hover for _, _, hover in slots],
            hoverinfo="text",
            marker={"opacity": 0},
        )
    )
    for centre, (picture, label, _) in zip(centres, slots, strict=True):
        if picture is not None:
            figure.add_annotation(
                x=centre, y=_SLOT_PX + 4, text=label, showarrow=False, yanchor="top", font={"size": 11}
            )
    figure.update_layout(
        title=left_title(title),
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        height=150,
        showlegend=False,
        dragmode=False,
    )
    figure.update_xaxes(visible=False, range=[-0.5, width - 0.5])
    figure.update_yaxes(visible=False, range=[_SLOT_PX + 22, -0.5], scaleanchor="x")
    return figure


def encoder_input_figure(sequence: np.ndarray, prefix_names: Sequence[str], title: str) -> go.Figure:
    """The encoder's input as a matrix: one row per token, one column per embedding dimension.

    Args:
        sequence: (N, D) tokens after prefix tokens and position embedding.
        prefix_names: names of the first len(prefix_names) rows.
        title: figure title.
    """
    names = [f"{name} token" for name in prefix_names]
    names += [f"patch {index}" for index in range(sequence.shape[0] - len(prefix_names))]
    limit = float(np.percentile(np.abs(sequence), 99)) or 1.0  # a few huge values would wash out the rest
    figure = go.Figure(
        go.Heatmap(
            z=sequence,
            y=names,
            colorscale="RdBu",
            reversescale=True,
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": {"text": "value", "side": "right"}, "thickness": 12},
            hovertemplate="%{y}, dimension %{x}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=left_title(title),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        height=360,
        xaxis={"title": "embedding dimension"},
        yaxis={"autorange": "reversed", "showticklabels": False, "title": "token (sequence order)"},
    )
    return figure


def _enlarged_png(tile: np.ndarray, scale: int) -> str:
    as_bytes = np.round(np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1) * 255).astype(np.uint8)
    return png_data_uri(as_bytes)


# Pixels between filter tiles across, and above each row of tiles for the tiles' titles.
_TILE_GAP_PX = 6
_TILE_TITLE_PX = 22


def filter_components_figure(
    tiles: np.ndarray, explained_variance_ratio: np.ndarray, title: str, columns: int = 7, tile_px: int = 72
) -> go.Figure:
    """Principal components of the patch-embedding filters as RGB tiles, each titled with its variance share.

    The figure has a fixed size computed from `tile_px`, so two figures drawn with the same
    `tile_px` and `columns` (a model and its untrained twin) show tiles of the same size.

    Args:
        tiles: (k, P, P, 3) floats in [0, 1], from `filters.component_tiles`.
        explained_variance_ratio: (k,) share of variance per component.
        title: figure title.
        columns: tiles per row.
        tile_px: the side of one tile on screen, in pixels.
    """
    count, size = tiles.shape[0], tiles.shape[1]
    rows = -(-count // columns)
    plot_width = columns * tile_px + (columns - 1) * _TILE_GAP_PX
    plot_height = rows * tile_px + (rows - 1) * _TILE_TITLE_PX
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[f"{index + 1}: {ratio:.1%}" for index, ratio in enumerate(explained_variance_ratio)],
        horizontal_spacing=_TILE_GAP_PX / plot_width,
        vertical_spacing=_TILE_TITLE_PX / plot_height,
    )
    scale = max(1, 112 // size)
    for index in range(count):
        row, col = divmod(index, columns)
        figure.add_trace(
            go.Image(source=_enlarged_png(tiles[index], scale), hoverinfo="skip"), row=row + 1, col=col + 1
        )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_annotations(font={"size": 10})
    top = 56 + _TILE_TITLE_PX  # the title's two lines, then the first row's tile titles
    figure.update_layout(
        title=left_title(title),
        margin={"l": 0, "r": 0, "t": top, "b": 4},
        width=plot_width,
        height=plot_height + top + 4,
    )
    return figure


def explained_variance_figure(explained_variance_ratio: np.ndarray, title: str) -> go.Figure:
    """Bars of each component's share of the filters' variance, with the running total as a line."""
    components = np.arange(1, explained_variance_ratio.shape[0] + 1)
    figure = go.Figure(
        [
            go.Bar(
                x=components,
                y=explained_variance_ratio,
                name="component",
                marker={"color": "#4c78a8"},
                hovertemplate="PC%{x}: %{y:.2%}<extra></extra>",
            ),
            go.Scatter(
                x=components,
                y=np.cumsum(explained_variance_ratio),
                name="running total",
                mode="lines+markers",
                line={"color": "#f58518"},
                hovertemplate="PC1–%{x}: %{y:.1%}<extra></extra>",
            ),
        ]
    )
    figure.update_layout(
        title=left_title(title),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        height=280,
        xaxis={"title": "principal component", "dtick": 2},
        yaxis={"title": "explained variance", "tickformat": ".0%", "rangemode": "tozero"},
        legend={
            "x": 0.02,
            "y": 0.98,
            "xanchor": "left",
            "yanchor": "top",
            "bgcolor": "rgba(255,255,255,0.7)",
        },
    )
    return figure


def similarity_grid_figure(
    mosaic: np.ndarray,
    grid_size: tuple[int, int],
    gap: int,
    title: str,
    selected: tuple[int, int] | None = None,
    step: int = 1,
) -> go.Figure:
    """The paper's grid of small grids: in each slot, one position's similarity with every position.

    An invisible scatter over the centre of each small map carries its position (row, col), so a
    click selects it.

    Args:
        mosaic: from `posembed.similarity_mosaic`, NaN between small maps.
        grid_size: (rows, cols) of positions.
        gap: cells between small maps, as passed to `similarity_mosaic`.
        title: figure title.
        selected: the position to outline, when it has a small map.
        step: as passed to `similarity_mosaic`: slot (i, j) holds position (i·step, j·step).
    """
    rows, cols = grid_size
    figure = go.Figure(similarity_heatmap(mosaic, SIMILARITY_COLORSCALE, hoverinfo="skip"))
    slot_r, slot_c = np.meshgrid(
        np.arange(0, rows, step) // step, np.arange(0, cols, step) // step, indexing="ij"
    )
    slot_r, slot_c = slot_r.ravel(), slot_c.ravel()
    slots_across = max(slot_r.max(), slot_c.max()) + 1
    figure.add_trace(
        go.Scatter(
            x=slot_c * (cols + gap) + (cols - 1) / 2,
            y=slot_r * (rows + gap) + (rows - 1) / 2,
            mode="markers",
            marker={"size": max(4, min(40, 600 // slots_across)), "opacity": 0.0, "symbol": "square"},
            customdata=np.stack([slot_r * step, slot_c * step], axis=1),
            hovertemplate="position (%{customdata[0]}, %{customdata[1]})<extra>click to enlarge</extra>",
            name=POSITIONS_NAME,
            selected={"marker": {"opacity": 0.0}},
            unselected={"marker": {"opacity": 0.0}},
        )
    )
    if selected is not None and selected[0] % step == 0 and selected[1] % step == 0:
        row, col = selected[0] // step, selected[1] // step
        figure.add_shape(
            type="rect",
            x0=col * (cols + gap) - 0.5 - gap / 2,
            x1=col * (cols + gap) + cols - 0.5 + gap / 2,
            y0=row * (rows + gap) - 0.5 - gap / 2,
            y1=row * (rows + gap) + rows - 0.5 + gap / 2,
            line={"color": "#ff2d55", "width": 2},
        )
    height, width = mosaic.shape
    figure.update_layout(
        title=left_title(title),
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        height=560,
        dragmode=False,
        clickmode="event+select",
        showlegend=False,
        plot_bgcolor="white",
    )
    figure.update_xaxes(visible=False, range=[-0.5 - gap, width - 0.5 + gap])
    figure.update_yaxes(visible=False, range=[height - 0.5 + gap, -0.5 - gap], scaleanchor="x")
    return figure


def similarity_map_figure(values: np.ndarray, position: tuple[int, int], title: str) -> go.Figure:
    """One position's similarity with every position as a large map, the position outlined.

    Args:
        values: (rows, cols) cosine similarities.
        position: (row, col) of the position compared with the others.
        title: figure title.
    """
    rows, cols = values.shape
    hover = "row %{y}, col %{x}: %{z:.3f}<extra></extra>"
    figure = go.Figure(similarity_heatmap(values, SIMILARITY_COLORSCALE, hovertemplate=hover))
    row, col = position
    figure.add_shape(
        type="rect",
        x0=col - 0.5,
        x1=col + 0.5,
        y0=row - 0.5,
        y1=row + 0.5,
        line={"color": "#ff2d55", "width": 3},
    )
    figure.update_layout(
        title=left_title(title), margin={"l": 50, "r": 10, "t": 40, "b": 10}, height=460, plot_bgcolor="white"
    )
    figure.update_xaxes(title="col", range=[-0.5, cols - 0.5], constrain="domain")
    figure.update_yaxes(title="row", range=[rows - 0.5, -0.5], scaleanchor="x", constrain="domain")
    return figure


def attention_distance_figure(
    distances: np.ndarray, uniform_reference: float, title: str, y_max: float | None = None
) -> go.Figure:
    """Mean attention distance of every head against depth, as in the paper: one dot per head.

    Args:
        distances: (layers, heads) mean distance in input pixels.
        uniform_reference: the distance of a head attending evenly to all patches, drawn dashed.
        title: figure title.
        y_max: upper end of the y axis, to share a scale between figures.
    """
    layers, heads = distances.shape
    colours = pc.sample_colorscale("Turbo", [index / max(1, heads - 1) for index in range(heads)])
    figure = go.Figure()
    for head in range(heads):
        figure.add_trace(
            go.Scatter(
                x=np.arange(layers),
                y=distances[:, head],
                mode="markers",
                name=f"head {head}",
                marker={
                    "size": 9,
                    "color": colours[head],
                    "line": {"width": 0.5, "color": "rgb(40, 40, 40)"},
                },
                hovertemplate=f"layer %{{x}}, head {head}: %{{y:.1f}} px<extra></extra>",
            )
        )
    figure.add_hline(
        y=uniform_reference,
        line={"dash": "dash", "color": "rgb(120, 120, 120)"},
        annotation_text=f"uniform attention: {uniform_reference:.0f} px",
        annotation_position="top left",
    )
    top = y_max if y_max is not None else max(float(np.nanmax(distances)), uniform_reference) * 1.12
    figure.update_layout(
        title=left_title(title),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        height=420,
        xaxis={
            "title": "network depth (layer)",
            "range": [-0.5, layers - 0.5],
            "dtick": 1 if layers <= 12 else None,
        },
        yaxis={"title": "mean attention distance (px)", "range": [0, top]},
        legend={"title": {"text": "head"}, "itemsizing": "constant"},
    )
    return figure


# Name of the invisible scatter at the small maps' centres that makes heads clickable.
HEAD_CENTRES_NAME = "heads"
# Horizontal pixels of the all-heads figure outside the mosaic (layer labels, colour bar).
MODEL_VIEW_MARGIN_PX = 130


def _upscaled(rgb: np.ndarray, target_px: int) -> np.ndarray:
    """(rows, cols, 3) colours in [0, 1] as a uint8 picture about `target_px` wide, cells kept sharp."""
    rows, cols = rgb.shape[:2]
    factor = max(1, target_px // max(rows, cols))
    pixels = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def rgb_grid_figure(rgb: np.ndarray, title: str, height: int = 420, hover_name: str = "value") -> go.Figure:
    """A map of colours over the token grid, one sharp square per token.

    Args:
        rgb: (rows, cols, 3) colours in [0, 1].
        title: figure title.
        height: figure height in pixels.
        hover_name: what a hovered cell's three numbers are called.
    """
    rows, cols = rgb.shape[:2]
    pixels = _upscaled(rgb, 512)
    factor = pixels.shape[0] // rows
    figure = go.Figure(go.Image(source=png_data_uri(pixels), hoverinfo="skip"))
    row_index, col_index = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    figure.add_trace(
        go.Scatter(
            x=(col_index.ravel() + 0.5) * factor - 0.5,
            y=(row_index.ravel() + 0.5) * factor - 0.5,
            mode="markers",
            marker={"size": max(4, min(24, 380 // max(rows, cols))), "opacity": 0.0},
            customdata=np.concatenate([np.stack([row_index, col_index], -1), rgb], -1).reshape(-1, 5),
            hovertemplate="row %{customdata[0]}, col %{customdata[1]}<br>"
            + hover_name
            + " (%{customdata[2]:.2f}, %{customdata[3]:.2f}, %{customdata[4]:.2f})<extra></extra>",
        )
    )
    figure.update_layout(
        title=left_title(title), height=height, margin={"l": 0, "r": 0, "t": 40, "b": 0}, showlegend=False
    )
    figure.update_xaxes(visible=False, range=[-0.5, pixels.shape[1] - 0.5])
    figure.update_yaxes(visible=False, range=[pixels.shape[0] - 0.5, -0.5], scaleanchor="x")
    return figure


def feature_maps_figure(stem: HybridStem, title: str, columns: int = 4) -> go.Figure:
    """The stem's mean response and its most varying channels, each on its own colour scale."""
    maps = [stem.mean_map, *stem.channel_maps]
    names = [f"mean of {stem.feature_shape[0]} channels", *(f"channel {c}" for c in stem.channels)]
    rows = -(-len(maps) // columns)
    figure = make_subplots(
        rows=rows, cols=columns, subplot_titles=names, horizontal_spacing=0.02, vertical_spacing=0.08
    )
    for index, (values, name) in enumerate(zip(maps, names, strict=True)):
        figure.add_trace(
            go.Heatmap(
                z=values,
                colorscale=MAP_COLORSCALE,
                showscale=False,
                hovertemplate=name + "<br>cell (%{y}, %{x}): %{z:.3f}<extra></extra>",
            ),
            row=index // columns + 1,
            col=index % columns + 1,
        )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False, autorange="reversed")
    for index in range(len(maps)):  # square cells in every panel
        suffix = "" if index == 0 else str(index + 1)
        figure.update_yaxes(scaleanchor=f"x{suffix}", row=index // columns + 1, col=index % columns + 1)
    figure.update_layout(
        title=left_title(title),
        height=60 + 230 * rows,
        margin={"l": 0, "r": 0, "t": 70, "b": 0},
        showlegend=False,
    )
    figure.update_annotations(font={"size": 12})
    return figure


def stem_grid_figure(pixels: np.ndarray, stem: HybridStem, title: str) -> go.Figure:
    """The input with the stem's feature cells (thin lines) and the token grid (bold lines) drawn on it.

    Args:
        pixels: (H, W, 3) uint8 image at the model's input size.
        stem: the hybrid's stem numbers.
        title: figure title.
    """
    height, width = pixels.shape[:2]
    figure = go.Figure(go.Image(source=png_data_uri(pixels), hoverinfo="skip"))

    def lines(step: tuple[int, int]) -> tuple[list[float | None], list[float | None]]:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for x in range(step[1], width, step[1]):
            xs += [x - 0.5, x - 0.5, None]
            ys += [-0.5, height - 0.5, None]
        for y in range(step[0], height, step[0]):
            xs += [-0.5, width - 0.5, None]
            ys += [y - 0.5, y - 0.5, None]
        return xs, ys

    for step, line, what in (
        (stem.feature_ratio, {"color": "rgba(255,255,255,0.35)", "width": 1}, "feature cell"),
        (stem.stride_px, {"color": "rgb(0, 229, 255)", "width": 2}, "token"),
    ):
        xs, ys = lines(step)
        name = f"{what}: {step[0]}×{step[1]} px"
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", name=name))
    figure.update_layout(
        title=left_title(title),
        height=480,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0},
    )
    figure.update_xaxes(visible=False, range=[-0.5, width - 0.5])
    figure.update_yaxes(visible=False, range=[height - 0.5, -0.5], scaleanchor="x")
    return figure


def norm_histogram_figure(norms: TokenNorms, title: str) -> go.Figure:
    """How the patch tokens' norms spread, with every prefix token's norm marked on the same axis."""
    patch_norms = norms.patch_norms.ravel()
    figure = go.Figure(
        go.Histogram(
            x=patch_norms,
            nbinsx=min(60, max(10, patch_norms.size // 4)),
            marker={"color": "#4c78a8"},
            name="patch tokens",
            hovertemplate="norm %{x}: %{y} patches<extra></extra>",
        )
    )
    median = float(np.median(patch_norms))
    figure.add_vline(x=median, line={"color": "#888", "dash": "dot"})
    figure.add_annotation(
        x=median,
        y=1.0,
        yref="paper",
        text="median patch",
        showarrow=False,
        yanchor="bottom",
        font={"size": 11},
    )
    palette = ["#e45756", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#eeca3b", "#ff9da6"]
    for index, (name, value) in enumerate(zip(norms.prefix_names, norms.prefix_norms, strict=True)):
        colour = palette[index % len(palette)]
        figure.add_trace(
            go.Scatter(
                x=[float(value), float(value)],
                y=[0, 1],
                yaxis="y2",
                mode="lines",
                line={"color": colour, "width": 3},
                name=f"{name} token: {value:.1f}",
                hovertemplate=f"{name} token: {value:.2f}<extra></extra>",
            )
        )
    figure.update_layout(
        title=left_title(title),
        height=320,
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        xaxis={"title": "L2 norm"},
        yaxis={"title": "patches"},
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False},
        legend={"orientation": "h", "y": -0.25, "x": 0},
        bargap=0.05,
    )
    return figure


def _normalised_maps(maps: np.ndarray, clip_percentile: float | None) -> np.ndarray:
    """Each (rows, cols) map divided by its own top, so every head's pattern shows.

    The top is the map's `clip_percentile`-th percentile (values above it are clipped to 1), so one
    sink token does not wash a head's map out; the maximum where that percentile is 0, or with None.
    """
    peaks = maps.max(axis=(-2, -1), keepdims=True)
    tops = peaks
    if clip_percentile is not None:
        percentiles = np.percentile(maps, clip_percentile, axis=(-2, -1), keepdims=True)
        tops = np.where(percentiles > 0, percentiles, peaks)
    return np.minimum(maps / np.where(tops > 0, tops, 1.0), 1.0)


# Outline of a switched-off head on the all-heads mosaic; each outline's shape is named "off L:H".
SWITCHED_OFF_COLOUR = "rgb(255, 45, 85)"


def model_view_figure(
    maps: np.ndarray,
    title: str,
    selected: tuple[int, int] | None = None,
    map_px: int = 64,
    clip_percentile: float | None = CLIP_PERCENTILE,
    switched_off: Sequence[tuple[int, int]] = (),
) -> go.Figure:
    """Every layer's and head's map as one mosaic heatmap: layers down, heads across, gaps between.

    One heatmap trace (not one subplot per head) keeps 12 × 12 maps fast to build and draw. An
    invisible scatter at each map's centre carries (layer, head) as customdata, so a click on a
    small map names its head.

    Args:
        maps: (layers, heads, rows, cols) attention weights.
        title: figure title.
        selected: (layer, head) to outline.
        map_px: display size of one small map's longer side, in screen pixels.
        clip_percentile: each small map is divided by this percentile of its own values (the
            colour bar says so); None divides by its maximum.
        switched_off: (layer, head) pairs an ablation switches off: each is outlined dashed and
            crossed, its shape named "off L:H".
    """
    layers, heads, rows, cols = maps.shape
    gap = 1
    cell_rows, cell_cols = rows + gap, cols + gap
    # float32 halves what is sent to the browser; the values are shares of a map's maximum.
    mosaic = np.full((layers * cell_rows - gap, heads * cell_cols - gap), np.nan, dtype=np.float32)
    scaled = _normalised_maps(maps, clip_percentile)
    for layer in range(layers):
        for head in range(heads):
            top, left = layer * cell_rows, head * cell_cols
            mosaic[top : top + rows, left : left + cols] = scaled[layer, head]
    layer_index, head_index = np.meshgrid(np.arange(layers), np.arange(heads), indexing="ij")
    centre_x = head_index.ravel() * cell_cols + (cols - 1) / 2
    centre_y = layer_index.ravel() * cell_rows + (rows - 1) / 2
    peaks = maps.max(axis=(-2, -1)).ravel()
    figure = go.Figure(
        go.Heatmap(
            z=mosaic,
            colorscale=MAP_COLORSCALE,
            zmin=0.0,
            zmax=1.0,
            hoverinfo="skip",
            colorbar={
                "title": {"text": _mosaic_colour_title(clip_percentile), "side": "right"},
                "thickness": 12,
                "len": 0.5,
            },
        )
    )
    scale = map_px / max(rows, cols)  # screen pixels per mosaic cell
    figure.add_trace(
        go.Scatter(
            x=centre_x,
            y=centre_y,
            mode="markers",
            marker={"size": map_px * 0.9, "opacity": 0.0, "color": "white", "symbol": "square"},
            customdata=np.stack([layer_index.ravel(), head_index.ravel(), peaks], axis=1),
            hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>"
            "largest weight %{customdata[2]:.3f}<br>click to open<extra></extra>",
            name=HEAD_CENTRES_NAME,
            selected={"marker": {"opacity": 0.0}},
            unselected={"marker": {"opacity": 0.0}},
        )
    )

    def outline(layer: int, head: int, line: dict, name: str) -> None:
        figure.add_shape(
            type="rect",
            x0=head * cell_cols - 0.5 - 0.3,
            x1=head * cell_cols + cols - 0.5 + 0.3,
            y0=layer * cell_rows - 0.5 - 0.3,
            y1=layer * cell_rows + rows - 0.5 + 0.3,
            line=line,
            name=name,
        )

    for layer, head in sorted(set(switched_off)):
        outline(layer, head, {"color": SWITCHED_OFF_COLOUR, "width": 2, "dash": "dot"}, f"off {layer}:{head}")
        figure.add_shape(  # a cross: the head contributes nothing in the ablated forward
            type="line",
            x0=head * cell_cols - 0.5,
            x1=head * cell_cols + cols - 0.5,
            y0=layer * cell_rows - 0.5,
            y1=layer * cell_rows + rows - 0.5,
            line={"color": SWITCHED_OFF_COLOUR, "width": 1.5},
            name=f"off {layer}:{head} cross",
        )
    if selected is not None:
        outline(*selected, {"color": "rgb(0, 229, 255)", "width": 3}, f"selected {selected[0]}:{selected[1]}")
    width_cells, height_cells = mosaic.shape[1], mosaic.shape[0]
    top = 90 + (18 if "<br>" in title else 0)  # a second title line needs room above the head labels
    figure.update_layout(
        # Pinned to the very top: the head labels and their axis title sit above the mosaic.
        title={**left_title(title), "y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 10}},
        width=int(width_cells * scale) + MODEL_VIEW_MARGIN_PX,
        height=int(height_cells * scale) + 20 + top,
        margin={"l": 50, "r": 80, "t": top, "b": 20},
        plot_bgcolor="white",
        dragmode=False,
        clickmode="event+select",
        hovermode="closest",
        showlegend=False,
    )
    figure.update_xaxes(
        range=[-0.5, width_cells - 0.5],
        tickvals=[head * cell_cols + (cols - 1) / 2 for head in range(heads)],
        ticktext=[f"h{head}" for head in range(heads)],
        side="top",
        showgrid=False,
        zeroline=False,
        constrain="domain",
        constraintoward="left",
        title={"text": "head", "standoff": 4},
    )
    figure.update_yaxes(
        range=[height_cells - 0.5, -0.5],
        tickvals=[layer * cell_rows + (rows - 1) / 2 for layer in range(layers)],
        ticktext=[f"L{layer}" for layer in range(layers)],
        showgrid=False,
        zeroline=False,
        scaleanchor="x",
        constrain="domain",
        constraintoward="top",  # any spare height goes below the mosaic, not between it and the title
        title={"text": "layer"},
    )
    return figure


def _mosaic_colour_title(clip_percentile: float | None) -> str:
    if clip_percentile is None:
        return "÷ map max"
    return f"÷ map's {ordinal(clip_percentile)} pct<br>(clipped)"


def _custom_pair(point: dict) -> tuple[float, float] | None:
    """A point's first two customdata values, or None."""
    values = custom_values(point)
    return None if values is None else (values[0], values[1])


def selected_head(selection: dict | None, layers: int, heads: int) -> tuple[int, int] | None:
    """The (layer, head) of the small map a user clicked, from a Streamlit Plotly selection event."""
    if not selection:
        return None
    for point in selection.get("selection", {}).get("points", []):
        pair = _custom_pair(point)
        if pair is None:
            continue
        layer, head = round(pair[0]), round(pair[1])
        if 0 <= layer < layers and 0 <= head < heads:
            return layer, head
    return None


def position_colours(grid_size: tuple[int, int]) -> np.ndarray:
    """A colour for every grid position: hue from the column, lightness from the row.

    Returns:
        (rows, cols, 3) colours in [0, 1]; left is red, right violet, top light, bottom dark.
    """
    rows, cols = grid_size
    colours = np.zeros((rows, cols, 3))
    for row in range(rows):
        lightness = 0.78 - 0.5 * (row / max(1, rows - 1))
        for col in range(cols):
            hue = 0.8 * (col / max(1, cols - 1))
            colours[row, col] = colorsys.hls_to_rgb(hue, lightness, 0.85)
    return colours


def position_key_figure(grid_size: tuple[int, int], title: str = "Colour key: grid position") -> go.Figure:
    """The grid coloured as in `query_key_figure`, so a colour can be read back as a position."""
    return rgb_grid_figure(position_colours(grid_size), title, height=300, hover_name="colour")


def _rgb_strings(colours: np.ndarray) -> list[str]:
    return [f"rgb({r:.0f}, {g:.0f}, {b:.0f})" for r, g, b in np.round(colours * 255)]


def query_key_figure(
    projection: QueryKeyProjection, source: QueryKeys, title: str, show_lines_for: Sequence[int] = ()
) -> go.Figure:
    """Queries (circles) and keys (crosses) of one head in one 2-D space, coloured by grid position.

    Prefix tokens (class, registers, ...) are drawn large with a black outline and named.

    Args:
        projection: 2-D positions of the queries and keys.
        source: the queries and keys, for token names and the grid.
        title: figure title.
        show_lines_for: token indices whose query is joined to its own key by a thin line.
    """
    prefix = source.num_prefix_tokens
    rows, cols = source.grid_size
    colours = _rgb_strings(position_colours(source.grid_size).reshape(-1, 3))
    row_index, col_index = np.divmod(np.arange(rows * cols), cols)
    patch_text = [f"patch ({r}, {c})" for r, c in zip(row_index, col_index, strict=True)]
    figure = go.Figure()
    for kind, plural, points, symbol in (
        ("query", "queries", projection.queries, "circle"),
        ("key", "keys", projection.keys, "x"),
    ):
        figure.add_trace(
            go.Scatter(
                x=points[prefix:, 0],
                y=points[prefix:, 1],
                mode="markers",
                marker={"symbol": symbol, "size": 8, "color": colours, "line": {"width": 0}},
                text=patch_text,
                hovertemplate=f"{kind} of %{{text}}<extra></extra>",
                name=f"{plural} of patches ({'●' if kind == 'query' else '✕'})",
            )
        )
    names = list(source.prefix_names)
    for kind, plural, points, symbol, letter in (
        ("query", "queries", projection.queries, "circle-open", "q"),
        ("key", "keys", projection.keys, "x", "k"),
    ):
        if prefix == 0:
            break
        figure.add_trace(
            go.Scatter(
                x=points[:prefix, 0],
                y=points[:prefix, 1],
                mode="markers+text",
                marker={
                    "symbol": symbol,
                    "size": 16,
                    "color": "black",
                    "line": {"width": 2.5, "color": "black"},
                },
                text=[f"{name} {letter}" for name in names],
                textposition="top center",
                textfont={"size": 12},
                hovertemplate=f"{kind} of the %{{text}} token<extra></extra>",
                name=f"prefix-token {plural}",
            )
        )
    for token in show_lines_for:
        figure.add_trace(
            go.Scatter(
                x=[projection.queries[token, 0], projection.keys[token, 0]],
                y=[projection.queries[token, 1], projection.keys[token, 1]],
                mode="lines",
                line={"color": "rgba(0,0,0,0.35)", "width": 1},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    if projection.method == "pca" and projection.explained_variance_ratio is not None:
        ratios = projection.explained_variance_ratio
        x_title, y_title = f"PC 1 ({ratios[0]:.0%})", f"PC 2 ({ratios[1]:.0%})"
    else:
        x_title, y_title = "t-SNE 1", "t-SNE 2"
    figure.update_layout(
        title=left_title(title),
        height=600,
        margin={"l": 70, "r": 10, "t": 50, "b": 60},
        xaxis={"title": x_title, "zeroline": False},
        yaxis={"title": y_title, "zeroline": False},
        legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0.0},
        plot_bgcolor="white",
    )
    figure.update_xaxes(showgrid=True, gridcolor="#eee")
    figure.update_yaxes(showgrid=True, gridcolor="#eee")
    if projection.method == "pca":
        figure.update_yaxes(scaleanchor="x")  # PCA keeps distances: do not stretch one axis
    return figure


# Interventions: head ablation, logit lens, sanity check ----------------------------------------

# Blue for a head whose removal raises the class, red for one whose removal lowers it.
_DROP_COLORSCALE: list[list[float | str]] = [
    [0.0, "rgb(33, 102, 172)"],
    [0.5, "rgb(247, 247, 247)"],
    [1.0, "rgb(178, 24, 43)"],
]


def head_importance_figure(drops: np.ndarray, scale: ColourScale, title: str) -> go.Figure:
    """The drop of the class's probability when each head alone is switched off, layers down, heads across.

    Args:
        drops: (layers, heads) clean probability − ablated probability.
        scale: a symmetric colour scale of `drops` (`colour_scale(..., symmetric=True)`).
        title: figure title.
    """
    layers, heads = drops.shape
    figure = go.Figure(
        go.Heatmap(
            z=drops,
            x=list(range(heads)),
            y=list(range(layers)),
            colorscale=_DROP_COLORSCALE,
            hovertemplate="layer %{y}, head %{x}: drop %{z:+.2%}<extra></extra>",
            **scale.heatmap_arguments(),
        )
    )
    figure.update_layout(
        title=left_title(title),
        xaxis={"title": "head", "dtick": 1},
        yaxis={"title": "layer", "dtick": 1, "autorange": "reversed", "automargin": True},
        height=120 + 26 * layers,
        margin={"l": 60, "r": 10, "t": 50, "b": 40},
    )
    return figure


def logit_lens_figure(
    probabilities: np.ndarray, class_labels: Sequence[str], scale: ColourScale, title: str
) -> go.Figure:
    """Each layer's probability of a few classes, read through the model's own norm and head.

    Args:
        probabilities: (layers, classes shown) softmax probabilities of the pooled tokens.
        class_labels: one label per column.
        scale: colour scale of `probabilities`.
        title: figure title.
    """
    layers = probabilities.shape[0]
    figure = go.Figure(
        go.Heatmap(
            z=probabilities,
            x=list(class_labels),
            y=list(range(layers)),
            colorscale=MAP_COLORSCALE,
            text=[[f"{value:.0%}" for value in row] for row in probabilities],
            texttemplate="%{text}",
            hovertemplate="layer %{y}, %{x}: %{z:.2%}<extra></extra>",
            **scale.heatmap_arguments(),
        )
    )
    figure.update_layout(
        title=left_title(title),
        xaxis={"title": "class", "type": "category"},
        yaxis={"title": "layer (after block)", "dtick": 1, "autorange": "reversed", "automargin": True},
        height=140 + 26 * layers,
        margin={"l": 70, "r": 10, "t": 50, "b": 80},
    )
    return figure


def patch_class_figure(
    pixels: np.ndarray,
    codes: np.ndarray,
    class_labels: Sequence[str],
    stride_px: tuple[int, int],
    title: str,
) -> go.Figure:
    """Which class each patch token alone already reads as, one colour per class, over the image.

    Args:
        pixels: (H, W, 3) uint8 image at the model's input size.
        codes: (rows, cols) int, the position of each patch's class in `class_labels`.
        class_labels: the classes shown, in colour order.
        stride_px: input pixels between neighbouring tokens.
        title: figure title.
    """
    count = max(1, len(class_labels))
    palette = pc.qualitative.Safe + pc.qualitative.Vivid
    steps: list[list[float | str]] = []
    for index in range(count):  # a stepped colour scale: each class owns one band of the bar
        colour = palette[index % len(palette)]
        steps += [[index / count, colour], [(index + 1) / count, colour]]
    figure = attention_overlay_figure(pixels, codes.astype(np.float64), stride_px, title, opacity=0.55)
    figure.update_traces(
        selector={"type": "heatmap"},
        zmin=-0.5,
        zmax=count - 0.5,
        colorscale=steps,
        colorbar={
            "title": {"text": "top class of the patch", "side": "right"},
            "tickvals": list(range(count)),
            "ticktext": list(class_labels),
            "thickness": 14,
        },
    )
    return figure


def sanity_maps_figure(
    maps: np.ndarray, stage_titles: Sequence[str], colour_title: str, title: str, columns: int = 5
) -> go.Figure:
    """One map per randomisation stage, each divided by its own colour-scale top so all share one bar.

    Args:
        maps: (stages, rows, cols) values already divided by each map's own top (so 1 is its top).
        stage_titles: one title per stage, naming it and its rank correlation with the original.
        colour_title: title of the shared colour bar.
        title: figure title.
        columns: maps per row.
    """
    count = maps.shape[0]
    rows = -(-count // columns)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=list(stage_titles),
        horizontal_spacing=0.02,
        vertical_spacing=0.12 / max(1, rows - 1) if rows > 1 else 0.0,
    )
    for index in range(count):
        row, col = divmod(index, columns)
        figure.add_trace(
            go.Heatmap(
                z=maps[index],
                colorscale=MAP_COLORSCALE,
                zmin=0.0,
                zmax=1.0,
                showscale=index == 0,
                colorbar={"title": {"text": colour_title, "side": "right"}, "thickness": 14},
                hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra></extra>",
            ),
            row=row + 1,
            col=col + 1,
        )
        suffix = "" if index == 0 else str(index + 1)
        figure.update_yaxes(scaleanchor=f"x{suffix}", row=row + 1, col=col + 1)  # square cells
    figure.update_xaxes(showticklabels=False, constrain="domain")
    figure.update_yaxes(showticklabels=False, autorange="reversed", constrain="domain")
    figure.update_annotations(font_size=11)
    top = 90 if "<br>" in title else 70  # a second title line above the first row's stage titles
    figure.update_layout(
        title=left_title(title), height=top + 20 + 190 * rows, margin={"l": 10, "r": 10, "t": top, "b": 10}
    )
    return figure
