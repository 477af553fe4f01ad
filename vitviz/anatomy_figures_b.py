"""Plotly figures of the Anatomy views 5–9: resolution, hybrid stem, token norms, all heads, queries & keys."""

from __future__ import annotations

import base64
import colorsys
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from vitviz.figures import MAP_COLORSCALE
from vitviz.hybrid import HybridStem
from vitviz.qk import QueryKeyProjection, QueryKeys
from vitviz.token_features import TokenNorms

__all__ = [
    "HEAD_CENTRES_NAME",
    "MODEL_VIEW_MARGIN_PX",
    "feature_maps_figure",
    "model_view_figure",
    "norm_histogram_figure",
    "position_colours",
    "position_key_figure",
    "query_key_figure",
    "rgb_grid_figure",
    "selected_head",
    "stem_grid_figure",
]

# Name of the invisible scatter at the small maps' centres that makes heads clickable.
HEAD_CENTRES_NAME = "heads"
# Horizontal pixels of the all-heads figure outside the mosaic (layer labels, colour bar).
MODEL_VIEW_MARGIN_PX = 130
_TITLE_FONT = {"size": 15}


def _png_data_uri(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _title(text: str) -> dict:
    return {"text": text, "x": 0.0, "xanchor": "left", "font": _TITLE_FONT}


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
    figure = go.Figure(go.Image(source=_png_data_uri(pixels), hoverinfo="skip"))
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
        title=_title(title), height=height, margin={"l": 0, "r": 0, "t": 40, "b": 0}, showlegend=False
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
        title=_title(title),
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
    figure = go.Figure(go.Image(source=_png_data_uri(pixels), hoverinfo="skip"))

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

    cell_xs, cell_ys = lines(stem.feature_ratio)
    token_xs, token_ys = lines(stem.stride_px)
    figure.add_trace(
        go.Scatter(
            x=cell_xs,
            y=cell_ys,
            mode="lines",
            line={"color": "rgba(255,255,255,0.35)", "width": 1},
            hoverinfo="skip",
            name=f"feature cell: {stem.feature_ratio[0]}×{stem.feature_ratio[1]} px",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=token_xs,
            y=token_ys,
            mode="lines",
            line={"color": "rgb(0, 229, 255)", "width": 2},
            hoverinfo="skip",
            name=f"token: {stem.stride_px[0]}×{stem.stride_px[1]} px",
        )
    )
    figure.update_layout(
        title=_title(title),
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
        title=_title(title),
        height=320,
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        xaxis={"title": "L2 norm"},
        yaxis={"title": "patches"},
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False},
        legend={"orientation": "h", "y": -0.25, "x": 0},
        bargap=0.05,
    )
    return figure


def _normalised_maps(maps: np.ndarray) -> np.ndarray:
    """Each (rows, cols) map divided by its own maximum, so every head's pattern shows."""
    peaks = maps.max(axis=(-2, -1), keepdims=True)
    return maps / np.where(peaks > 0, peaks, 1.0)


def model_view_figure(
    maps: np.ndarray,
    title: str,
    selected: tuple[int, int] | None = None,
    map_px: int = 64,
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
    """
    layers, heads, rows, cols = maps.shape
    gap = 1
    cell_rows, cell_cols = rows + gap, cols + gap
    # float32 halves what is sent to the browser; the values are shares of a map's maximum.
    mosaic = np.full((layers * cell_rows - gap, heads * cell_cols - gap), np.nan, dtype=np.float32)
    scaled = _normalised_maps(maps)
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
            colorbar={"title": {"text": "÷ map max", "side": "right"}, "thickness": 12, "len": 0.5},
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
    if selected is not None:
        layer, head = selected
        figure.add_shape(
            type="rect",
            x0=head * cell_cols - 0.5 - 0.3,
            x1=head * cell_cols + cols - 0.5 + 0.3,
            y0=layer * cell_rows - 0.5 - 0.3,
            y1=layer * cell_rows + rows - 0.5 + 0.3,
            line={"color": "rgb(0, 229, 255)", "width": 3},
        )
    width_cells, height_cells = mosaic.shape[1], mosaic.shape[0]
    figure.update_layout(
        # Pinned to the very top: the head labels and their axis title sit above the mosaic.
        title={**_title(title), "y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 10}},
        width=int(width_cells * scale) + MODEL_VIEW_MARGIN_PX,
        height=int(height_cells * scale) + 110,
        margin={"l": 50, "r": 80, "t": 90, "b": 20},
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


def _custom_pair(point: dict) -> tuple[float, float] | None:
    """A point's first two customdata values; Streamlit reports them as a list or a {"0": ..} mapping."""
    custom = point.get("customdata")
    if isinstance(custom, dict):
        custom = [custom.get(str(index), custom.get(index)) for index in range(len(custom))]
    if not isinstance(custom, list | tuple) or len(custom) < 2:
        return None
    try:
        return float(custom[0]), float(custom[1])
    except (TypeError, ValueError):
        return None


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
        title=_title(title),
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
