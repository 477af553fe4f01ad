"""Tab 5, Resolution: the model run at a larger input, its position embedding interpolated."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, ViewComputation, _chart, _each_side, _overlay_chart, _title
from vitviz.figures.anatomy import rgb_grid_figure
from vitviz.figures.common import predictions_figure
from vitviz.forward.resolution import ResolutionSide, compare_resolutions, resolution_choices
from vitviz.models import ModelFacts
from vitviz.text import grid_size_text, picture_size_text

__all__ = ["render_resolution"]


_resolutions = ViewComputation(compare_resolutions, "Running the model at both sizes…", max_entries=8)


RESOLUTION_SIZE = "anatomy_resolution_size"  # "H×W" of the resized copy


def _size_label(facts: ModelFacts, size: tuple[int, int]) -> str:
    rows, cols = size[0] // facts.stride_px[0], size[1] // facts.stride_px[1]
    own = " (its own)" if size == facts.input_size else ""
    return f"{_pixels(size)} · {grid_size_text(rows=rows, columns=cols)}{own}"


def _pixels(size: tuple[int, int]) -> str:
    """An input size, stored (height, width), written width × height."""
    return picture_size_text(width=size[1], height=size[0])


def _token_count(facts: ModelFacts) -> str:
    rows, cols = facts.grid_size
    return (
        f"{_pixels(facts.input_size)}: {grid_size_text(rows=rows, columns=cols)} = {facts.num_patches} patches "
        f"+ {facts.num_prefix_tokens} prefix = **{facts.num_tokens} tokens**"
    )


def render_resolution(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 5: the model run at a larger input, its position embedding interpolated to the larger grid."""
    facts = sides[0].loaded.facts
    # Options are "H×W" strings: a select slider reads a tuple value as a range.
    choices = {f"{height}×{width}": (height, width) for height, width in resolution_choices(facts)}
    rows = facts.grid_size[0]
    if st.session_state.get(RESOLUTION_SIZE) not in choices:  # first run, or another model's size
        st.session_state[RESOLUTION_SIZE] = max(
            (text for text, size in choices.items() if size[0] // facts.stride_px[0] <= 2 * rows),
            key=lambda text: choices[text][0],
            default=list(choices)[-1],
        )
    picked_size = st.select_slider(
        "Run at input size",
        options=list(choices),
        format_func=lambda text: _size_label(facts, choices[text]),
        key=RESOLUTION_SIZE,
        help="Any multiple of the token stride, keeping the aspect ratio; up to a 32×32 grid.",
    )
    size = choices[picked_size]
    for side, (before, after) in _each_side(
        sides,
        f"run {facts.name} at {_pixels(size)}",
        lambda side: _resolutions(side, picked, size),
    ):
        st.markdown(f"{_token_count(before.facts)} → {_token_count(after.facts)}")
        for column, resized, name in zip(st.columns(2), (before, after), ("before", "after"), strict=True):
            with column:
                _render_resolution_side(resized, name, side)
        peaks = [float(resized.rollout.max() / np.median(resized.rollout)) for resized in (before, after)]
        dominated = (
            " A few tokens dominate it: the class-token maps above spread more evenly."
            if max(peaks) > 10
            else ""
        )
        st.caption(
            f"Rollout's largest value is {peaks[0]:.1f}× its median at {before.facts.input_size[0]} px and "
            f"{peaks[1]:.1f}× at {after.facts.input_size[0]} px.{dominated}"
        )


def _render_resolution_side(resized: ResolutionSide, name: str, side: ModelSide) -> None:
    facts = resized.facts
    rows, cols = facts.grid_size
    size = _pixels(facts.input_size)
    chart_key = f"anatomy_resolution_{name}_{side.suffix}"
    if resized.position_rgb is not None:
        what = "as loaded" if name == "before" else "interpolated"
        _chart(
            rgb_grid_figure(
                resized.position_rgb,
                _title(f"Position embedding {what} ({grid_size_text(rows=rows, columns=cols)}, 3 PCs)", side),
                height=360,
                hover_name="PCs",
            ),
            key=f"{chart_key}_posembed",
            theme=None,
        )
    else:
        st.info(f"{facts.name} has no learned absolute position embedding to interpolate.")
    pixels, stride, sinks = resized.pixels, facts.stride_px, resized.sink_patches
    attention_title = _title(f"{size}: last-layer {side.class_query} attention", side)
    _overlay_chart(
        pixels, resized.class_attention, stride, attention_title, "attention", f"{chart_key}_attention", sinks
    )
    rollout_title = _title(f"{size}: rollout<br><sup>{resized.rollout_statement}</sup>", side)
    _overlay_chart(pixels, resized.rollout, stride, rollout_title, "relevance", f"{chart_key}_rollout", sinks)
    if resized.predictions is not None:
        untrained = "" if side.loaded.trained else " (untrained)"
        _chart(
            predictions_figure(resized.predictions, f"{size}: top-5 predictions{untrained}"),
            key=f"{chart_key}_predictions",
        )
    elif name == "before":
        st.caption(f"{facts.name} has no classifier head, so there are no predictions to compare.")
