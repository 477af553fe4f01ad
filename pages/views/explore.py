"""Streamlit glue of the Explore page: shared links, clicked patches, raw attention, rollout, predictions."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages.views import ui
from vitviz.figures.common import (
    attention_overlay_figure,
    patch_grid_figure,
    predictions_figure,
    selected_patch,
)
from vitviz.images import BUILTIN_PHOTOS
from vitviz.maths.attention import AttentionRecord, class_attention_map, patch_token, query_attention_map
from vitviz.models import SUGGESTED_MODELS, LoadedModel, ModelFacts
from vitviz.share import ViewState, parse_view_state, view_state_params

__all__ = [
    "OPACITY",
    "render_attention",
    "render_cnn",
    "seed_from_link",
    "seed_layers_from_link",
    "sync_link",
]

OPACITY = "explore_opacity"
GRID_CHART = "explore_grid_chart"
ATTENTION_CHART = "explore_attention_chart"
QUERY_PATCH = "explore_query_patch"
SEEN_SELECTIONS = "explore_seen_selections"
QUERY_KIND = "explore_query_kind"
CLICKED_PATCH = "clicked patch"
LINK_PARAMS = "explore_link_params"  # a link's parameters, kept until the model's sizes can check them


# Shared links ---------------------------------------------------------------------------------


def seed_from_link() -> None:
    """At a session's first run: model, weights, photo and options from the URL, before their widgets exist."""
    link = ui.url_params_once("explore")
    if link is None:
        return
    state = parse_view_state(link, ui.view_limits())[0]
    if state.model in [name for name, _ in SUGGESTED_MODELS]:
        st.session_state["explore_model"] = state.model
    else:
        st.session_state["explore_model"] = ui.OTHER_MODEL
        st.session_state["explore_model_name"] = state.model
    st.session_state["explore_weights"] = state.weights
    if state.image is not None:
        st.session_state["explore_image_source"] = "Built-in photo"
        st.session_state["explore_photo"] = state.image
    st.session_state[OPACITY] = state.opacity
    st.session_state["explore_fusion"] = state.fusion
    st.session_state["explore_discard"] = state.discard
    st.session_state[LINK_PARAMS] = link


def seed_layers_from_link(facts: ModelFacts) -> None:
    """Layer, head, query and rollout start from the first run's link, once the model's sizes checked them.

    One note names whatever the link asked for that this app or model cannot show.
    """
    if LINK_PARAMS not in st.session_state:
        return
    limits = ui.view_limits()
    if facts.family != "cnn":
        limits = replace(
            limits, num_layers=facts.num_layers, num_heads=facts.num_heads, grid_size=facts.grid_size
        )
    state, notes = parse_view_state(st.session_state.pop(LINK_PARAMS), limits)
    ui.url_notes(notes)
    if facts.family == "cnn":
        return
    if state.layer is not None:
        st.session_state["explore_layer"] = state.layer
    if state.head is not None:  # None is the "mean of heads" option, the widget's default
        st.session_state["explore_head"] = state.head
    st.session_state["explore_start_layer"] = state.start_layer
    st.session_state[QUERY_PATCH] = state.patch
    st.session_state[QUERY_KIND] = CLICKED_PATCH if state.query == "patch" else _class_query(facts)


def sync_link(choice: ui.ModelChoice, picked: ui.ImageChoice, opacity: float, attention: bool) -> None:
    """Writes what the page shows into the URL, so that copying the link shares this view."""
    session = st.session_state
    state = ViewState(
        model=choice.name,
        weights=choice.weights,
        image=picked.name if picked.name in BUILTIN_PHOTOS else None,
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


def _class_query(facts: ModelFacts) -> str:
    return "class token" if facts.num_prefix_tokens else "mean of patches"


# The page's views -----------------------------------------------------------------------------


def _top5(choice: ui.ModelChoice, picked: ui.ImageChoice, title: str, key: str) -> None:
    """The top-5 predictions as bars, with their downloads."""
    predictions = ui.cached_predictions(
        choice.name, choice.weights, choice.device, picked.digest, picked.image, 5
    )
    bars = predictions_figure(predictions, title)
    st.plotly_chart(bars, key=key)
    ui.figure_downloads(bars, None, choice.name, choice.weights, picked.name, "top5-predictions", key)


def render_cnn(loaded: LoadedModel, choice: ui.ModelChoice, picked: ui.ImageChoice) -> None:
    """A CNN has no patches and no attention: what it predicts, with a line saying why that is all."""
    st.info(f"{loaded.facts.name} is a CNN: it has no patches and no attention to show. Its predictions:")
    _top5(choice, picked, f"Top-5 · {picked.name}", "explore_cnn_bars")


@dataclass(frozen=True)
class _Maps:
    """What every map of the page is drawn from: one model, one image, its attention and input view."""

    choice: ui.ModelChoice
    picked: ui.ImageChoice
    facts: ModelFacts
    record: AttentionRecord
    pixels: np.ndarray  # the image as the model sees it
    opacity: float

    def chart(
        self,
        figure: go.Figure,
        chart_key: str,
        downloads_key: str,
        view: str,
        array: np.ndarray | None = None,
        clickable: bool = False,
    ) -> None:
        """A figure and its row of downloads; a click on a clickable figure reruns the page."""
        if clickable:
            st.plotly_chart(figure, key=chart_key, on_select="rerun", selection_mode="points", theme=None)
        else:
            st.plotly_chart(figure, key=chart_key, theme=None)
        choice = self.choice
        ui.figure_downloads(figure, array, choice.name, choice.weights, self.picked.name, view, downloads_key)


def render_attention(
    loaded: LoadedModel, choice: ui.ModelChoice, picked: ui.ImageChoice, opacity: float
) -> None:
    """The patch grid and predictions, then raw attention and rollout side by side, on one input view."""
    facts = loaded.facts
    try:
        record = ui.cached_attention(choice.name, choice.weights, choice.device, picked.digest, picked.image)
    except (ValueError, RuntimeError) as error:
        st.error(f"Could not capture attention of {facts.name}: {error}")
        st.stop()
    pixels = ui.cached_explanation_image(
        choice.name, choice.weights, choice.device, picked.digest, picked.image
    )
    maps = _Maps(choice, picked, facts, record, pixels, opacity)
    query_patch = _query_patch(facts.grid_size)

    grid_column, predictions_column = st.columns([3, 2])
    with grid_column:
        rows, cols = facts.grid_size
        grid_figure = patch_grid_figure(
            pixels,
            facts.grid_size,
            facts.stride_px,
            f"{picked.name}: {rows}×{cols} patches of {facts.stride_px[0]} px (click one)",
            selected=query_patch,
        )
        maps.chart(grid_figure, GRID_CHART, "explore_grid", "patch-grid", clickable=True)
    with predictions_column:
        if facts.has_classifier:
            untrained = "" if loaded.trained else " (untrained)"
            _top5(choice, picked, f"Top-5 predictions{untrained}", "explore_bars")
        else:
            st.info(
                f"{facts.name} has no classifier head (a self-supervised backbone), so it makes no "
                "predictions. Its attention below is real."
            )

    attention_column, rollout_column = st.columns(2)
    with attention_column:
        _raw_attention(maps, query_patch)
    with rollout_column:
        _rollout(maps)


def _query_patch(grid_size: tuple[int, int]) -> tuple[int, int] | None:
    """The patch whose attention is asked for: the one clicked last on either chart, if still on this grid."""
    for chart in (GRID_CHART, ATTENTION_CHART):
        clicked = ui.new_click(chart, SEEN_SELECTIONS, lambda selection: selected_patch(selection, grid_size))
        if clicked is not None:
            st.session_state[QUERY_PATCH] = clicked
            st.session_state[QUERY_KIND] = CLICKED_PATCH  # a click means "show me this patch"
            break
    patch = st.session_state.get(QUERY_PATCH)
    if patch is not None and not (patch[0] < grid_size[0] and patch[1] < grid_size[1]):
        patch = st.session_state[QUERY_PATCH] = None  # a patch of another model's grid
    return patch


def _raw_attention(maps: _Maps, query_patch: tuple[int, int] | None) -> None:
    """One layer's and head's attention from the class token (or mean patch) or a clicked patch."""
    facts, record = maps.facts, maps.record
    st.subheader("Raw attention")
    controls = st.columns([3, 2])
    layer = controls[0].slider("Layer", 0, facts.num_layers - 1, facts.num_layers - 1, key="explore_layer")
    head = controls[1].selectbox(
        "Head",
        [None, *range(facts.num_heads)],
        format_func=lambda h: "mean of heads" if h is None else f"head {h}",
        key="explore_head",
    )
    query_options = [_class_query(facts), CLICKED_PATCH]
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
    figure = attention_overlay_figure(
        maps.pixels,
        values,
        facts.stride_px,
        f"Layer {layer}, {head_label}: attention from {source}",
        opacity=maps.opacity,
        selected=query_patch if query_kind == CLICKED_PATCH else None,
    )
    view = f"layer{layer} {'mean' if head is None else f'head{head}'} attention from {source}"
    maps.chart(figure, ATTENTION_CHART, "explore_attention", view, values, clickable=True)


def _rollout(maps: _Maps) -> None:
    """Attention rollout with its head fusion, discard ratio and start layer."""
    facts, choice = maps.facts, maps.choice
    st.subheader("Attention rollout")
    options = st.columns([2, 3])
    fusion = options[0].selectbox("Head fusion", ["mean", "max", "min"], key="explore_fusion")
    discard = options[1].slider("Discard ratio", 0.0, 0.95, 0.0, 0.05, key="explore_discard")
    start = st.slider("Start layer", 0, facts.num_layers - 1, 0, key="explore_start_layer")
    relevance = ui.cached_rollout(
        choice.name, choice.weights, choice.device, maps.picked.digest, fusion, discard, start, maps.record
    )
    last = facts.num_layers - 1
    figure = attention_overlay_figure(
        maps.pixels,
        relevance,
        facts.stride_px,
        f"Rollout: {fusion} of heads, discard {discard:.0%}, layers {start}–{last}",
        opacity=maps.opacity,
        colorbar_title="relevance",
    )
    view = f"rollout {fusion} discard{round(discard * 100)} layers{start}-{last}"
    maps.chart(figure, "explore_rollout_chart", "explore_rollout", view, relevance)
