"""Tab 3, Position embeddings: cosine similarity of the learned position embeddings, grid of grids."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, WeightsComputation, _chart, _scaled
from vitviz.figures.anatomy import similarity_grid_figure, similarity_map_figure
from vitviz.figures.common import selected_patch
from vitviz.maths.posembed import (
    NoPositionEmbeddingError,
    local_fraction,
    mosaic_step,
    position_embedding_similarity,
    similarity_mosaic,
)
from vitviz.text import grid_size_text

__all__ = ["render_position_embeddings"]


_similarity = WeightsComputation(position_embedding_similarity, "Comparing position embeddings…")


POSITION = "anatomy_posembed_position"  # (row, col) of the position shown large
SEEN_POSITIONS = "anatomy_posembed_seen"  # last click seen per chart, so a rerun is not a new click
MOSAIC_GAP = 1  # blank cells between the small maps of the position-similarity grid


def _chosen_position(grid_size: tuple[int, int], chart_keys: Sequence[str]) -> tuple[int, int]:
    """The position clicked last on any of the grids; the centre before the first click."""
    for key in chart_keys:
        clicked = ui.new_click(key, SEEN_POSITIONS, lambda selection: selected_patch(selection, grid_size))
        if clicked is not None:
            st.session_state[POSITION] = clicked
    position = st.session_state.get(POSITION)
    rows, cols = grid_size
    if position is None or not (position[0] < rows and position[1] < cols):  # another model's grid
        position = st.session_state[POSITION] = (rows // 2, cols // 2)
    return position


def render_position_embeddings(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 3: cosine similarity of the position embeddings as a grid of grids, one position large."""
    similarities = []
    for side in sides:
        try:
            similarities.append(_similarity(side))
        except NoPositionEmbeddingError as error:
            st.info(f"Does not apply: {error}")
            return
    loaded = sides[0].loaded
    grid_size = loaded.facts.grid_size
    rows, cols = grid_size
    chart_keys = [f"anatomy_posembed_grid_{side.suffix}" for side in sides]
    position = _chosen_position(grid_size, chart_keys)
    step = mosaic_step(grid_size)
    single = len(sides) == 1
    columns = st.columns([3, 2]) if single else st.columns(2)
    for index, (side, similarity, chart_key) in enumerate(zip(sides, similarities, chart_keys, strict=True)):
        with columns[0] if single else columns[index]:
            mosaic = similarity_mosaic(similarity, grid_size, MOSAIC_GAP, step)
            _chart(
                _scaled(
                    similarity_grid_figure(
                        mosaic,
                        grid_size,
                        MOSAIC_GAP,
                        f"Position similarity · {side.label}",
                        selected=position,
                        step=step,
                    ),
                    mosaic,
                    "cosine similarity",
                ),
                key=chart_key,
                share=0.6 if single else 0.5,
                on_select="rerun",
                selection_mode="points",
                theme=None,
            )
        with columns[1] if single else columns[index]:
            row, col = position
            values = similarity.reshape(rows, cols, rows, cols)[row, col]
            _chart(
                _scaled(
                    similarity_map_figure(values, position, f"Position ({row}, {col}) · {side.label}"),
                    values,
                    "cosine similarity",
                ),
                key=f"anatomy_posembed_map_{side.suffix}",
                share=0.4 if single else 0.5,
                theme=None,
            )
            near, close = local_fraction(similarity, grid_size, 1), local_fraction(similarity, grid_size, 2)
            others = max(1, rows * cols - 1)
            st.caption(
                f"{side.label}: the most similar other position is a direct neighbour for {near:.0%} of "
                f"positions and within 2 steps for {close:.0%} (by chance about {min(1, 8 / others):.0%} "
                f"and {min(1, 24 / others):.0%})."
            )
    prefix_note = (
        "This model's position embedding has no rows for its prefix tokens."
        if getattr(loaded.model, "no_embed_class", False)
        else "Rows of the prefix tokens are left out."
    )
    thinned = (
        f" The {grid_size_text(rows=rows, columns=cols)} is large: a small map is drawn for one position in {step} along "
        "each row and column; the large map works for every position."
        if step > 1
        else ""
    )
    st.caption(
        "The grid of small maps: the small map at (row, col) shows how similar that "
        "position's learned embedding is to every position's (cosine similarity), as in the paper's "
        f"Fig. 7. Click a small map to see it large. {prefix_note}{thinned}"
    )
