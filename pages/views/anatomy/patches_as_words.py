"""Tab 1, Patches as words: the image cut into patches, flattened, projected and position-embedded."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, ViewComputation, _chart, _columns
from vitviz.figures.anatomy import encoder_input_figure, token_sequence_figure
from vitviz.figures.common import patch_grid_figure
from vitviz.forward.tokens_as_words import trace_tokens
from vitviz.maths.tokens_as_words import cut_into_patches
from vitviz.text import grid_size_text, patch_size_text

__all__ = ["render_patches"]


_token_trace = ViewComputation(trace_tokens, "Cutting the image into tokens…")


STRIP_PATCHES = 16  # patches shown in the token-sequence strip before the ellipsis
MAX_HEATMAP_TOKENS = 600  # rows of the encoder-input heatmap; longer sequences are cut, and say so


def _strip_indices(num_patches: int) -> list[int]:
    shown = list(range(min(STRIP_PATCHES, num_patches)))
    if num_patches > STRIP_PATCHES:
        shown.append(num_patches - 1)
    return shown


def render_patches(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 1: the image cut into patches, flattened, projected, prefixed and position-embedded."""
    facts = sides[0].loaded.facts
    traces = [_token_trace(side, picked) for side in sides]
    trace = traces[0]
    rows, cols = facts.grid_size
    pixels = sides[0].pixels(picked)
    grid_column, steps_column = st.columns([2, 3])
    with grid_column:
        _chart(
            patch_grid_figure(
                pixels,
                facts.grid_size,
                facts.stride_px,
                f"{picked.name}: {grid_size_text(rows=rows, columns=cols)}<br><sup>one token per "
                f"{patch_size_text(width=facts.stride_px[1], height=facts.stride_px[0])} patch</sup>",
            ).update_layout(height=420),
            key="anatomy_patch_grid",
            theme=None,
        )
    with steps_column:
        st.markdown("**From image to encoder, with this model's shapes**")
        lines = [
            f"{index}. **{step.name}** `{tuple(step.shape)}` — {step.explanation}"
            for index, step in enumerate(trace.steps, start=1)
        ]
        st.markdown("\n".join(lines))
        if facts.family == "hybrid":
            st.caption(
                f'A hybrid\'s "patches" are cells of the CNN feature map: patch size '
                f"{facts.patch_size[0]} on that map, so one token per {facts.stride_px[0]} px of the image."
            )
    cells = cut_into_patches(pixels, facts.grid_size, facts.stride_px).reshape(
        rows * cols, facts.stride_px[0], facts.stride_px[1], 3
    )
    shown = _strip_indices(rows * cols)
    what = (
        "feature-map cells (each drawn as the image region under it)"
        if facts.family == "hybrid"
        else "patches"
    )
    prefix = f"{len(trace.prefix_names)} prefix + " if trace.prefix_names else "no prefix tokens, "
    _chart(
        token_sequence_figure(
            cells[shown],
            shown,
            facts.grid_size,
            trace.prefix_names,
            f"The sequence the encoder reads: {prefix}{rows * cols} {what} in reading order (first "
            f"{min(STRIP_PATCHES, rows * cols)} and the last shown)",
        ),
        key="anatomy_token_strip",
        theme=None,
    )
    if len(sides) > 1:
        st.caption("The shapes are the same with random weights; only the numbers in the tokens differ.")
    for column, side, side_trace in zip(_columns(len(sides)), sides, traces, strict=True):
        with column:
            if side_trace.encoder_input is None:
                st.info(f"{facts.name} adds its prefix tokens and positions in a way vitviz cannot read.")
                continue
            count, dim = side_trace.encoder_input.shape
            cut = "" if count <= MAX_HEATMAP_TOKENS else f", first {MAX_HEATMAP_TOKENS} rows"
            _chart(
                encoder_input_figure(
                    side_trace.encoder_input[:MAX_HEATMAP_TOKENS],
                    side_trace.prefix_names,
                    f"Encoder input ({count}, {dim}){cut} · {side.label}",
                ),
                key=f"anatomy_encoder_input_{side.suffix}",
            )
