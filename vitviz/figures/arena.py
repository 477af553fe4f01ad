"""The arena's figure and downloads: the ranked table above each method's map, and its numbers as files."""

from __future__ import annotations

import csv
import io
import textwrap

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from vitviz.arena import ArenaTable
from vitviz.export import slug
from vitviz.figures.common import MAP_COLORSCALE
from vitviz.methods.base import map_is_constant

__all__ = ["arena_csv", "arena_figure", "arena_maps_npz", "thumbnail_rgb", "thumbnail_values"]

_THUMBNAIL_PX = 150  # each map's side in the exported figure
_TABLE_ROW_PX = 30  # one line of a cell; a median with its quartiles takes three
_FIGURE_WIDTH_PX = 1200


def thumbnail_values(values: np.ndarray) -> np.ndarray:
    """A map's positive part scaled to [0, 1] by its 99th percentile (as every overlay of the app is);
    a constant map is all zeros, never "relevant everywhere"."""
    positive = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    if map_is_constant(np.asarray(values)) or positive.max() <= 0:
        return np.zeros(positive.shape)
    peak = float(np.percentile(positive, 99)) or float(positive.max())
    return np.clip(positive / peak, 0.0, 1.0)


def thumbnail_rgb(values: np.ndarray, side_px: int = 72) -> np.ndarray:
    """The map in the app's colour scale as (H, W, 3) uint8 pixels, each cell a block, the longer side `side_px`."""
    scaled = thumbnail_values(values)
    colours = pc.sample_colorscale(MAP_COLORSCALE, scaled.ravel().tolist())  # "rgb(r, g, b)" strings
    rgb = np.array([pc.unlabel_rgb(colour) for colour in colours], dtype=np.float64).reshape(*scaled.shape, 3)
    block = max(1, side_px // max(scaled.shape))
    return np.round(rgb).astype(np.uint8).repeat(block, axis=0).repeat(block, axis=1)


def arena_figure(table: ArenaTable, image_index: int = 0) -> go.Figure:
    """The ranked table with the verdict as its title, and each method's map of one image below it.

    Args:
        table: the arena's table.
        image_index: which image's maps are drawn (of `table.images`).
    """
    rows = table.table_rows()
    columns = list(rows[0])
    count = len(table.rows)
    row_px = _TABLE_ROW_PX if len(table.images) == 1 else 3 * _TABLE_ROW_PX - 20
    table_px = _TABLE_ROW_PX * 2 + row_px * count
    figure = make_subplots(
        rows=2,
        cols=count,
        specs=[[{"type": "table", "colspan": count}] + [None] * (count - 1), [{"type": "xy"}] * count],
        row_heights=[table_px, _THUMBNAIL_PX],
        vertical_spacing=0.06,
        subplot_titles=[""] + [f"{row.rank}. {row.title}" for row in table.rows],
    )
    figure.add_trace(
        go.Table(
            header={"values": columns, "align": "left", "height": 2 * _TABLE_ROW_PX - 10},
            cells={
                "values": [[row[column] for row in rows] for column in columns],
                "align": "left",
                "height": row_px,
            },
            columnwidth=[
                0.5 if column == "rank" else 1.4 if column == "method" else 1.0 for column in columns
            ],
        ),
        row=1,
        col=1,
    )
    for column, row in enumerate(table.rows, start=1):
        figure.add_trace(
            go.Heatmap(
                z=thumbnail_values(row.maps[image_index]),
                zmin=0.0,
                zmax=1.0,
                colorscale=MAP_COLORSCALE,
                showscale=False,
                hovertemplate="row %{y}, col %{x}: %{z:.2f}<extra>" + row.title + "</extra>",
            ),
            row=2,
            col=column,
        )
        figure.update_xaxes(visible=False, row=2, col=column)
        figure.update_yaxes(visible=False, autorange="reversed", scaleanchor=f"x{column}", row=2, col=column)
    image = table.images[image_index]
    model = table.model + ("" if table.trained else " (untrained)")
    images = "1 image" if len(table.images) == 1 else f"{len(table.images)} images (maps of {image})"
    title = f"Arena · {model} · {images}<br>" + "<br>".join(textwrap.wrap(table.verdict(), 130))
    height = table_px + _THUMBNAIL_PX + 200
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 13}},
        plot_bgcolor="white",
        width=max(_FIGURE_WIDTH_PX, (_THUMBNAIL_PX + 20) * count),
        height=height,
        margin={"l": 20, "r": 20, "t": 110, "b": 20},
    )
    return figure


def arena_csv(table: ArenaTable) -> str:
    """The readable table as CSV, one row per method, best first."""
    rows = table.table_rows()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def arena_maps_npz(table: ArenaTable) -> bytes:
    """Every method's maps as one .npz: "RANK-METHOD" → (images, rows, cols) float32 (no pickled objects)."""
    arrays = {
        f"{row.rank:02d}-{slug(row.method)}": np.stack(
            [np.asarray(values, np.float32) for values in row.maps]
        )
        for row in table.rows
    }
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()
