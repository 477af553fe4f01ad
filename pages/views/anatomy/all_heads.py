"""Tab 8, All heads: every layer's and head's attention as small maps, one large, heads switched off."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from pages.views import ui
from pages.views.anatomy.head_ablation import _head_label, _heads_off, _render_ablation, _toggle_head
from pages.views.anatomy.kit import (
    ModelSide,
    _chart,
    _clip_percentile,
    _each_side,
    _export_title,
    _raw_colours,
    _scaled,
    _title,
)
from vitviz.figures.anatomy import MODEL_VIEW_MARGIN_PX, model_view_figure, selected_head
from vitviz.figures.common import attention_overlay_figure, selected_patch
from vitviz.figures.scales import CLIP_PERCENTILE, ordinal
from vitviz.maths.model_view import model_view_maps, query_label
from vitviz.maths.sinks import detect_sinks, sink_sentence
from vitviz.models import ModelFacts

__all__ = ["render_all_heads"]

HEAD = "anatomy_heads_selected"  # (layer, head) shown large
QUERY_PATCH = "anatomy_heads_patch"  # (row, col) of the clicked query patch, or None
QUERY_KIND = "anatomy_heads_query"  # radio: class token or clicked patch
SEEN_HEAD_CLICKS = "anatomy_heads_seen"  # last selection seen per chart, so only new clicks count
CLICKED_PATCH = "clicked patch"


def _read_head_clicks(sides: Sequence[ModelSide], facts: ModelFacts) -> None:
    """Stores a head clicked on a mosaic, or a patch clicked on a large map, since the last run."""
    for side in sides:
        mosaic, large = f"anatomy_heads_mosaic_{side.suffix}", f"anatomy_heads_large_{side.suffix}"
        head = ui.new_click(
            mosaic,
            SEEN_HEAD_CLICKS,
            lambda selection: selected_head(selection, facts.num_layers, facts.num_heads),
        )
        if head is not None and st.session_state.get(CLICK_ACTION) == SWITCH_OFF:
            _toggle_head(head)
        elif head is not None:
            st.session_state[HEAD] = head
        patch = ui.new_click(
            large, SEEN_HEAD_CLICKS, lambda selection: selected_patch(selection, facts.grid_size)
        )
        if patch is not None:
            st.session_state[QUERY_PATCH] = patch
            st.session_state[QUERY_KIND] = CLICKED_PATCH


def render_all_heads(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """Tab 8: every layer's and head's attention as small maps; one opens large, a patch can attend."""
    facts = sides[0].loaded.facts
    layers, heads = facts.num_layers, facts.num_heads
    _read_head_clicks(sides, facts)
    head = st.session_state.get(HEAD)
    if head is None or not (head[0] < layers and head[1] < heads):
        head = st.session_state[HEAD] = (layers - 1, 0)
    patch = st.session_state.get(QUERY_PATCH)
    if patch is not None and not (patch[0] < facts.grid_size[0] and patch[1] < facts.grid_size[1]):
        patch = st.session_state[QUERY_PATCH] = None  # a patch of another model's grid
    class_option = "class token" if facts.num_prefix_tokens else "mean of patches"
    options = [class_option, CLICKED_PATCH]
    if st.session_state.get(QUERY_KIND) not in options:
        st.session_state[QUERY_KIND] = class_option
    st.markdown(
        f"One small map per layer (rows) and head (columns): where the chosen token attends, "
        f"{layers}×{heads} maps at once, each scaled to its own {_mosaic_top()}. A click on a small map opens it "
        "large or switches that head off (below); a click on a patch of the large map makes it the "
        "attending token."
    )
    controls = st.columns(2)
    kind = controls[0].radio("Attention from", options, horizontal=True, key=QUERY_KIND)
    if CLICK_ACTION not in st.session_state:
        st.session_state[CLICK_ACTION] = OPEN_LARGE
    controls[1].radio("A click on a small map", [OPEN_LARGE, SWITCH_OFF], horizontal=True, key=CLICK_ACTION)
    ablation = _render_ablation(sides[0], picked)
    query = patch if kind == CLICKED_PATCH else None
    if kind == CLICKED_PATCH and patch is None:
        st.caption("No patch clicked yet: showing the class token. Click a patch on the large map.")
    # Up to 8 heads the mosaic and the large map fit side by side in a wide layout (about 460 px
    # each); wider models stack them. Sized to fit, the mosaic's cells stay square and unclipped.
    side_by_side = heads <= 8
    map_px = min(64, ((460 if side_by_side else 940) - MODEL_VIEW_MARGIN_PX) // heads)
    for side, record in _each_side(
        sides, f"capture attention of {facts.name}", lambda side: side.attention(picked)
    ):
        if ablation is not None and not side.twin:
            record = ablation.record  # the maps of the forward with the chosen heads off
        maps = model_view_maps(record, query)
        source = query_label(record, query)
        if ablation is not None and not side.twin:
            source += f" with {len(ablation.heads)} head{'s' if len(ablation.heads) != 1 else ''} off"
        off = list(ablation.heads) if ablation is not None and not side.twin else []
        mosaic_area, large_area = st.columns([1, 1]) if side_by_side else (st.container(), st.container())
        with mosaic_area:
            _chart(
                model_view_figure(
                    maps,
                    _title(f"All heads: attention from {source}", side),
                    selected=head,
                    map_px=map_px,
                    clip_percentile=_clip_percentile(),
                    switched_off=off,
                ),
                key=f"anatomy_heads_mosaic_{side.suffix}",
                on_select="rerun",
                selection_mode="points",
                theme=None,
                width="content",
            )
            if off:
                listed = ", ".join(_head_label(item) for item in off[:12]) + (" …" if len(off) > 12 else "")
                st.caption(
                    f"Dotted red outlines and crosses mark the {_heads_off(len(off), ablation.mode)}: {listed}."
                )
        layer, head_index = head
        sinks = detect_sinks(record)  # of the forward shown: switching heads off can move them
        with large_area:
            _chart(
                _scaled(
                    attention_overlay_figure(
                        side.pixels(picked),
                        maps[layer, head_index],
                        facts.stride_px,
                        _export_title(f"Layer {layer}, head {head_index}: attention from {source}", side),
                        selected=query,
                        sinks=[sink.position for sink in sinks.patch_sinks if sink.position is not None],
                    ),
                    maps[layer, head_index],
                    "attention",
                ),
                key=f"anatomy_heads_large_{side.suffix}",
                on_select="rerun",
                selection_mode="points",
                theme=None,
            )
            sentence = sink_sentence(sinks)
            if sentence:
                st.caption(f"✕ marks attention sinks. {sentence}")


CLICK_ACTION = "anatomy_heads_click"  # radio: a click on a small map opens it or switches it off
OPEN_LARGE = "opens it large"
SWITCH_OFF = "switches the head off"


def _mosaic_top() -> str:
    """What each small map of the mosaic is divided by, under the page's colour rule."""
    if _raw_colours():
        return "maximum"
    return f"{ordinal(CLIP_PERCENTILE)} percentile (its top {100 - CLIP_PERCENTILE:g}% share the brightest colour)"
