"""Tab 6, Hybrid stem: how a hybrid's CNN stem makes the feature map its tokens are cut from."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from pages.views.anatomy.kit import ModelSide, ViewComputation, _chart, _each_side, _overlay_chart, _title
from vitviz.figures.anatomy import feature_maps_figure, stem_grid_figure
from vitviz.forward.hybrid import hybrid_stem
from vitviz.maths.attention import class_attention_map, rollout_relevance
from vitviz.maths.sinks import detect_sinks, plan_rollout, rollout_statement
from vitviz.text import grid_size_text, picture_size_text

__all__ = ["render_hybrid"]


_stem = ViewComputation(hybrid_stem, "Running the CNN stem…")


def render_hybrid(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 6: how a hybrid's CNN stem turns the image into the feature map its tokens are cut from."""
    facts = sides[0].loaded.facts
    if facts.family != "hybrid":
        patch = f"{facts.patch_size[0]}×{facts.patch_size[1]}"
        st.info(
            f"{facts.name} is a plain ViT: its patch embedding is a single {patch} convolution with stride "
            f"{patch} on the pixels, with no CNN stem before it. Pick a hybrid such as "
            "vit_small_r26_s32_224 or vit_base_r50_s16_384 (hub weights, or random offline) to see how a "
            "CNN's feature map becomes the token grid."
        )
        return
    st.markdown(
        "A hybrid ViT does not cut the **pixels** into patches: a CNN stem first turns the image into a "
        "feature map, and the patch embedding cuts **that map** into patches (usually of 1×1 cell), so "
        "each token stands for one cell of the stem's output, 16 or 32 input pixels apart."
    )
    for side, (stem, record) in _each_side(
        sides,
        f"run the stem of {facts.name}",
        lambda side: (
            _stem(side, picked),
            side.attention(picked),
        ),
    ):
        channels, height, width = stem.feature_shape
        rows, cols = stem.grid_size
        st.markdown(
            f"**{picture_size_text(width=stem.input_size[1], height=stem.input_size[0])}, 3 colours** → "
            f"`{stem.backbone}` stem "
            f"(÷{stem.feature_ratio[0]}) → **{channels}×{height}×{width}** feature map → "
            f"`{stem.projection}` (patch {stem.patch_size[0]}×{stem.patch_size[1]} cells) → "
            f"**{grid_size_text(rows=rows, columns=cols)} = {rows * cols} tokens** of width {stem.embed_dim} "
            f"+ {facts.num_prefix_tokens} prefix. One token per "
            f"**{picture_size_text(width=stem.stride_px[1], height=stem.stride_px[0])} of input** "
            "(its receptive field through the stem is larger)."
        )
        pixels = side.pixels(picked)
        grid_column, maps_column = st.columns([2, 3])
        with grid_column:
            _chart(
                stem_grid_figure(pixels, stem, _title("Feature cells and tokens", side)),
                key=f"anatomy_stem_grid_{side.suffix}",
                theme=None,
            )
        with maps_column:
            _chart(
                feature_maps_figure(
                    stem,
                    _title(f"Stem output: mean and the {len(stem.channels)} most varying channels", side),
                ),
                key=f"anatomy_stem_maps_{side.suffix}",
                theme=None,
            )
        sinks = detect_sinks(record)
        marks = [sink.position for sink in sinks.patch_sinks if sink.position is not None]
        attention = class_attention_map(record, record.num_layers - 1, None)
        rollout = rollout_relevance(record, sink_report=sinks)
        statement = rollout_statement(plan_rollout(sinks))
        attention_title = _title(
            f"Last-layer {side.class_query} attention, {grid_size_text(rows=rows, columns=cols)}", side
        )
        attention_column, rollout_column = st.columns(2)
        with attention_column:
            _overlay_chart(
                pixels,
                attention,
                facts.stride_px,
                attention_title,
                "attention",
                f"anatomy_stem_attention_{side.suffix}",
                sinks=marks,
            )
        with rollout_column:
            _overlay_chart(
                pixels,
                rollout,
                facts.stride_px,
                _title(f"Rollout, {grid_size_text(rows=rows, columns=cols)}<br><sup>{statement}</sup>", side),
                "relevance",
                f"anatomy_stem_rollout_{side.suffix}",
                sinks=marks,
            )
