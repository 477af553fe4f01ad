"""Plotly figures only the story needs (position similarity, the output vector) and its styling."""

from __future__ import annotations

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go

from vitviz.figures.common import PATCH_CENTRES_NAME, grid_layout, left_title, similarity_heatmap

__all__ = ["embedding_figure", "similarity_figure", "style_for_slides"]

# Diverging colours for similarities in [-1, 1], as rgb() strings (see MAP_COLORSCALE on why not names).
_SIMILARITY_COLORSCALE: list[list[float | str]] = [
    [index / (len(pc.diverging.RdBu) - 1), colour] for index, colour in enumerate(reversed(pc.diverging.RdBu))
]


def similarity_figure(similarity: np.ndarray, position: tuple[int, int], title: str) -> go.Figure:
    """One grid position's similarity to every position, as a grid with that position outlined.

    Args:
        similarity: (rows, cols) cosine similarities in [-1, 1].
        position: (row, col) the similarities are measured from.
        title: figure title.
    """
    rows, cols = similarity.shape
    row_index, col_index = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    figure = go.Figure(similarity_heatmap(similarity, _SIMILARITY_COLORSCALE, thickness=14, hoverinfo="skip"))
    # Clickable cells: Plotly reports clicks on points, so each cell gets an invisible one.
    figure.add_trace(
        go.Scatter(
            x=col_index.ravel(),
            y=row_index.ravel(),
            mode="markers",
            marker={"size": max(4, min(28, 460 // max(rows, cols))), "opacity": 0.0},
            customdata=np.stack([row_index.ravel(), col_index.ravel(), similarity.ravel()], axis=1),
            hovertemplate="row %{customdata[0]}, col %{customdata[1]}<br>similarity %{customdata[2]:.3f}"
            "<extra></extra>",
            name=PATCH_CENTRES_NAME,
            selected={"marker": {"opacity": 0.0}},
            unselected={"marker": {"opacity": 0.0}},
        )
    )
    figure.add_shape(
        type="rect",
        x0=position[1] - 0.5,
        x1=position[1] + 0.5,
        y0=position[0] - 0.5,
        y1=position[0] + 0.5,
        line={"color": "#00e5ff", "width": 3},
    )
    figure.update_layout(**grid_layout(title, margin={"l": 40, "r": 0, "t": 40, "b": 30}))
    # constrain="domain": square cells shrink the plot area instead of widening an axis's range.
    figure.update_xaxes(
        title="column", range=[-0.5, cols - 0.5], constrain="domain", showgrid=False, zeroline=False
    )
    figure.update_yaxes(
        title="row",
        range=[rows - 0.5, -0.5],
        scaleanchor="x",
        constrain="domain",
        showgrid=False,
        zeroline=False,
    )
    return figure


def embedding_figure(vector: np.ndarray, title: str, count: int = 12) -> go.Figure:
    """A vector's `count` largest components (by size) as labelled bars, largest on top.

    A bar per dimension of a 384-number vector reads as noise; its largest components, each
    named by its dimension, can be read from the back of a room.

    Args:
        vector: (D,) values.
        title: figure title.
        count: how many components to show.
    """
    vector = np.asarray(vector, dtype=np.float64)
    order = np.argsort(-np.abs(vector))[:count][::-1]  # largest last: Plotly draws the last bar on top
    figure = go.Figure(
        go.Bar(
            x=vector[order],
            y=[f"dimension {index}" for index in order],
            orientation="h",
            text=[f"{vector[index]:+.2f}" for index in order],
            textposition="auto",
            marker={"color": ["#4c78a8" if vector[index] >= 0 else "#e45756" for index in order]},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=left_title(title),
        xaxis={"title": "value", "zeroline": True},
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        height=420,
    )
    return figure


def style_for_slides(figure: go.Figure, dark: bool, height: int) -> go.Figure:
    """Enlarges a figure's text for a room and gives it the light or dark theme; returns it."""
    background = "#0e1117" if dark else "#ffffff"
    figure.update_layout(
        template="plotly_dark" if dark else "plotly_white",
        paper_bgcolor=background,
        plot_bgcolor=background,
        font={"size": 17},
        title_font={"size": 22},
        height=height,
    )
    return figure
