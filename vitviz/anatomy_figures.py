"""Plotly figures of the Anatomy views 1–4: token sequence, filter components, position similarity, distances."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

__all__ = [
    "POSITIONS_NAME",
    "SIMILARITY_COLORSCALE",
    "attention_distance_figure",
    "encoder_input_figure",
    "explained_variance_figure",
    "filter_components_figure",
    "similarity_grid_figure",
    "similarity_map_figure",
    "token_sequence_figure",
]

# Viridis as rgb() stops: Streamlit's front end swaps some hex colours for theme colours.
SIMILARITY_COLORSCALE: list[list[float | str]] = [
    [index / (len(pc.sequential.Viridis) - 1), "rgb({}, {}, {})".format(*pc.hex_to_rgb(colour))]
    for index, colour in enumerate(pc.sequential.Viridis)
]
# Name of the invisible scatter of small-map centres that makes grid positions clickable.
POSITIONS_NAME = "positions"
# Slot of one token in the sequence strip, in pixels of the strip picture.
_SLOT_PX = 56
_SLOT_GAP_PX = 6
_PREFIX_COLOURS = {"class": (214, 39, 40), "distillation": (148, 103, 189), "register": (44, 160, 44)}
_TITLE_FONT = {"size": 15}


def _png_data_uri(pixels: np.ndarray) -> str:
    """A PNG data URI: far smaller to send than the pixels as a list of numbers."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _title(text: str) -> dict:
    return {"text": text, "x": 0.0, "xanchor": "left", "font": _TITLE_FONT}


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
    figure = go.Figure(go.Image(source=_png_data_uri(strip), hoverinfo="skip"))
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
        title=_title(title),
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
        title=_title(title),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        height=360,
        xaxis={"title": "embedding dimension"},
        yaxis={"autorange": "reversed", "showticklabels": False, "title": "token (sequence order)"},
    )
    return figure


def _enlarged_png(tile: np.ndarray, scale: int) -> str:
    as_bytes = np.round(np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1) * 255).astype(np.uint8)
    return _png_data_uri(as_bytes)


def filter_components_figure(
    tiles: np.ndarray, explained_variance_ratio: np.ndarray, title: str, columns: int = 7
) -> go.Figure:
    """Principal components of the patch-embedding filters as RGB tiles, each titled with its variance share.

    Args:
        tiles: (k, P, P, 3) floats in [0, 1], from `filters.component_tiles`.
        explained_variance_ratio: (k,) share of variance per component.
        title: figure title.
        columns: tiles per row.
    """
    count, size = tiles.shape[0], tiles.shape[1]
    rows = -(-count // columns)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[f"{index + 1}: {ratio:.1%}" for index, ratio in enumerate(explained_variance_ratio)],
        horizontal_spacing=0.015,
        vertical_spacing=0.07,
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
    figure.update_layout(
        title=_title(title), margin={"l": 0, "r": 0, "t": 60, "b": 0}, height=120 + rows * 105
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
        title=_title(title),
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
    figure = go.Figure(
        go.Heatmap(
            z=mosaic,
            zmin=-1.0,
            zmax=1.0,
            colorscale=SIMILARITY_COLORSCALE,
            hoverinfo="skip",
            colorbar={"title": {"text": "cosine similarity", "side": "right"}, "thickness": 12},
        )
    )
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
        title=_title(title),
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
    figure = go.Figure(
        go.Heatmap(
            z=values,
            zmin=-1.0,
            zmax=1.0,
            colorscale=SIMILARITY_COLORSCALE,
            colorbar={"title": {"text": "cosine similarity", "side": "right"}, "thickness": 12},
            hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>",
        )
    )
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
        title=_title(title), margin={"l": 50, "r": 10, "t": 40, "b": 10}, height=460, plot_bgcolor="white"
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
        title=_title(title),
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
