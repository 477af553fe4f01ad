"""Explore: the patch grid, raw attention per layer and head, attention rollout and predictions."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from pages.views import ui
from vitviz.figures.common import (
    attention_overlay_figure,
    patch_grid_figure,
    predictions_figure,
    selected_patch,
)
from vitviz.images import BUILTIN_PHOTOS
from vitviz.maths.attention import class_attention_map, patch_token, query_attention_map
from vitviz.share import ViewState, parse_view_state, view_state_params

GRID_CHART = "explore_grid_chart"
ATTENTION_CHART = "explore_attention_chart"
QUERY_PATCH = "explore_query_patch"
SEEN_SELECTIONS = "explore_seen_selections"
QUERY_KIND = "explore_query_kind"
CLICKED_PATCH = "clicked patch"
LINK_PARAMS = "explore_link_params"  # a link's parameters, kept until the model's sizes can check them

if QUERY_PATCH not in st.session_state:
    st.session_state[QUERY_PATCH] = None
if SEEN_SELECTIONS not in st.session_state:
    st.session_state[SEEN_SELECTIONS] = {}


def _seed_pickers_from_link(state: ViewState) -> None:
    """Model, weights, photo and options from a shared link, set before their widgets exist."""
    if state.model in [name for name, _ in ui.SUGGESTED_MODELS]:
        st.session_state["explore_model"] = state.model
    else:
        st.session_state["explore_model"] = ui.OTHER_MODEL
        st.session_state["explore_model_name"] = state.model
    st.session_state["explore_weights"] = state.weights
    if state.image is not None:
        st.session_state["explore_image_source"] = "Built-in photo"
        st.session_state["explore_photo"] = state.image
    st.session_state["explore_opacity"] = state.opacity
    st.session_state["explore_fusion"] = state.fusion
    st.session_state["explore_discard"] = state.discard


def _seed_layers_from_link(state: ViewState, class_query: str) -> None:
    """Layer, head, query and rollout start from a shared link, once the model's sizes checked them."""
    if state.layer is not None:
        st.session_state["explore_layer"] = state.layer
    if state.head is not None:  # None is the "mean of heads" option, the widget's default
        st.session_state["explore_head"] = state.head
    st.session_state["explore_start_layer"] = state.start_layer
    st.session_state[QUERY_PATCH] = state.patch
    st.session_state[QUERY_KIND] = CLICKED_PATCH if state.query == "patch" else class_query


def _sync_link(attention: bool) -> None:
    """Writes what the page shows into the URL, so that copying the link shares this view."""
    session = st.session_state
    state = ViewState(
        model=choice.name,
        weights=choice.weights,
        image=picked_image.name if picked_image.name in BUILTIN_PHOTOS else None,
        layer=session.get("explore_layer"),
        head=session.get("explore_head"),
        query="patch" if session.get(QUERY_KIND) == CLICKED_PATCH else "class",
        patch=session.get(QUERY_PATCH),
        fusion=session.get("explore_fusion", "mean"),
        discard=session.get("explore_discard", 0.0),
        start_layer=session.get("explore_start_layer", 0),
        opacity=opacity,
    )
    ui.sync_url(view_state_params(state, attention=attention))


link = ui.url_params_once("explore")
if link is not None:
    _seed_pickers_from_link(parse_view_state(link, ui.view_limits())[0])
    st.session_state[LINK_PARAMS] = link

st.title("Explore")

with st.sidebar:
    picked_image = ui.image_picker("explore")
    choice = ui.model_picker("explore")
    opacity = st.slider("Map opacity", 0.1, 1.0, 0.6, 0.05, key="explore_opacity")

loaded = ui.load_or_stop(choice)
facts = loaded.facts
if LINK_PARAMS in st.session_state:
    limits = ui.view_limits()
    if facts.family != "cnn":
        limits = replace(
            limits, num_layers=facts.num_layers, num_heads=facts.num_heads, grid_size=facts.grid_size
        )
    link_state, link_notes = parse_view_state(st.session_state.pop(LINK_PARAMS), limits)
    ui.url_notes(link_notes)
    if facts.family != "cnn":
        _seed_layers_from_link(link_state, "class token" if facts.num_prefix_tokens else "mean of patches")
ui.untrained_warning(loaded)

if facts.family == "cnn":
    st.caption(
        f"**{facts.name}** · CNN · {ui.describe_weights(choice.weights)} · "
        f"{facts.input_size[0]}×{facts.input_size[1]} px input · device {loaded.device}"
    )
    st.info(f"{facts.name} is a CNN: it has no patches and no attention to show. Its predictions:")
    predictions = ui.cached_predictions(
        choice.name, choice.weights, choice.device, picked_image.digest, picked_image.image, 5
    )
    bars = predictions_figure(predictions, f"Top-5 · {picked_image.name}")
    st.plotly_chart(bars, key="explore_cnn_bars")
    ui.figure_downloads(
        bars, None, choice.name, choice.weights, picked_image.name, "top5-predictions", "explore_cnn_bars"
    )
    _sync_link(attention=False)
    st.stop()

rows, cols = facts.grid_size
st.caption(
    f"**{facts.name}** · {'hybrid (CNN stem + ViT)' if facts.family == 'hybrid' else 'ViT'} · "
    f"{ui.describe_weights(choice.weights)} · {facts.input_size[0]}×{facts.input_size[1]} px input · "
    f"{rows}×{cols} grid, one token per {facts.stride_px[0]}×{facts.stride_px[1]} px · "
    f"{facts.num_patches} patches + {facts.num_prefix_tokens} prefix = {facts.num_tokens} tokens · "
    f"{facts.num_layers} layers × {facts.num_heads} heads · device {loaded.device}"
)

try:
    record = ui.cached_attention(
        choice.name, choice.weights, choice.device, picked_image.digest, picked_image.image
    )
except (ValueError, RuntimeError) as error:
    st.error(f"Could not capture attention of {facts.name}: {error}")
    st.stop()
pixels = ui.cached_explanation_image(
    choice.name, choice.weights, choice.device, picked_image.digest, picked_image.image
)


def _newly_clicked_patch() -> tuple[int, int] | None:
    """The patch clicked since the last run on either chart, if any."""
    seen = st.session_state[SEEN_SELECTIONS]
    for chart in (GRID_CHART, ATTENTION_CHART):
        patch = selected_patch(st.session_state.get(chart), facts.grid_size)
        if patch is not None and seen.get(chart) != patch:
            seen[chart] = patch
            return patch
    return None


clicked = _newly_clicked_patch()
query_patch = st.session_state[QUERY_PATCH]
if clicked is not None:
    query_patch = st.session_state[QUERY_PATCH] = clicked
    st.session_state[QUERY_KIND] = CLICKED_PATCH  # a click means "show me this patch"
if query_patch is not None and not (query_patch[0] < rows and query_patch[1] < cols):
    query_patch = st.session_state[QUERY_PATCH] = None  # a patch of another model's grid

grid_column, predictions_column = st.columns([3, 2])
with grid_column:
    grid_figure = patch_grid_figure(
        pixels,
        facts.grid_size,
        facts.stride_px,
        f"{picked_image.name}: {rows}×{cols} patches of {facts.stride_px[0]} px (click one)",
        selected=query_patch,
    )
    st.plotly_chart(grid_figure, key=GRID_CHART, on_select="rerun", selection_mode="points", theme=None)
    ui.figure_downloads(
        grid_figure, None, choice.name, choice.weights, picked_image.name, "patch-grid", "explore_grid"
    )
with predictions_column:
    if facts.has_classifier:
        predictions = ui.cached_predictions(
            choice.name, choice.weights, choice.device, picked_image.digest, picked_image.image, 5
        )
        untrained = "" if loaded.trained else " (untrained)"
        bars = predictions_figure(predictions, f"Top-5 predictions{untrained}")
        st.plotly_chart(bars, key="explore_bars")
        ui.figure_downloads(
            bars, None, choice.name, choice.weights, picked_image.name, "top5-predictions", "explore_bars"
        )
    else:
        st.info(
            f"{facts.name} has no classifier head (a self-supervised backbone), so it makes no "
            "predictions. Its attention below is real."
        )

attention_column, rollout_column = st.columns(2)
with attention_column:
    st.subheader("Raw attention")
    controls = st.columns([3, 2])
    layer = controls[0].slider("Layer", 0, facts.num_layers - 1, facts.num_layers - 1, key="explore_layer")
    head = controls[1].selectbox(
        "Head",
        [None, *range(facts.num_heads)],
        format_func=lambda h: "mean of heads" if h is None else f"head {h}",
        key="explore_head",
    )
    query_options = ["class token" if facts.num_prefix_tokens else "mean of patches", CLICKED_PATCH]
    if st.session_state.get(QUERY_KIND) not in query_options:
        st.session_state[QUERY_KIND] = query_options[0]
    query_kind = st.radio(
        "Attention from",
        query_options,
        horizontal=True,
        key=QUERY_KIND,
        help="Click a patch on either image to see where that token attends.",
    )
    head_label = "mean of heads" if head is None else f"head {head}"
    if query_kind == CLICKED_PATCH and query_patch is not None:
        values = query_attention_map(record, layer, head, patch_token(record, *query_patch))
        source = f"patch ({query_patch[0]}, {query_patch[1]})"
    else:
        if query_kind == CLICKED_PATCH:
            st.caption("No patch clicked yet: showing the class token. Click a patch on an image.")
        values = class_attention_map(record, layer, head)
        source = query_options[0]
    attention_figure = attention_overlay_figure(
        pixels,
        values,
        facts.stride_px,
        f"Layer {layer}, {head_label}: attention from {source}",
        opacity=opacity,
        selected=query_patch if query_kind == CLICKED_PATCH else None,
    )
    st.plotly_chart(
        attention_figure, key=ATTENTION_CHART, on_select="rerun", selection_mode="points", theme=None
    )
    view = f"layer{layer} {'mean' if head is None else f'head{head}'} attention from {source}"
    ui.figure_downloads(
        attention_figure, values, choice.name, choice.weights, picked_image.name, view, "explore_attention"
    )

with rollout_column:
    st.subheader("Attention rollout")
    options = st.columns([2, 3])
    fusion = options[0].selectbox("Head fusion", ["mean", "max", "min"], key="explore_fusion")
    discard = options[1].slider("Discard ratio", 0.0, 0.95, 0.0, 0.05, key="explore_discard")
    start = st.slider("Start layer", 0, facts.num_layers - 1, 0, key="explore_start_layer")
    relevance = ui.cached_rollout(
        choice.name, choice.weights, choice.device, picked_image.digest, fusion, discard, start, record
    )
    rollout_figure = attention_overlay_figure(
        pixels,
        relevance,
        facts.stride_px,
        f"Rollout: {fusion} of heads, discard {discard:.0%}, layers {start}–{facts.num_layers - 1}",
        opacity=opacity,
        colorbar_title="relevance",
    )
    st.plotly_chart(rollout_figure, key="explore_rollout_chart", theme=None)
    view = f"rollout {fusion} discard{round(discard * 100)} layers{start}-{facts.num_layers - 1}"
    ui.figure_downloads(
        rollout_figure, relevance, choice.name, choice.weights, picked_image.name, view, "explore_rollout"
    )

_sync_link(attention=True)
