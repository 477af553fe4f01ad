"""Explore's shared links: the view a URL names, seeded before the widgets exist, and the URL kept in step."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from pages.views import ui
from pages.views.explore.keys import (
    CLICKED_PATCH,
    HEAD,
    OPACITY,
    PARTITIONED_LAYER,
    QUERY_KIND,
    QUERY_PATCH,
    RAW_COLOURS,
    RAW_ROLLOUT,
    VIEW,
    class_query,
)
from vitviz.images import BUILTIN_PHOTOS
from vitviz.methods.base import reads_partitions
from vitviz.models import SUGGESTED_MODELS, ModelFacts
from vitviz.preprocess import VIEW_LABELS, ImageView
from vitviz.serving import is_visitor_run
from vitviz.share import ViewState, parse_view_state, view_state_params

__all__ = ["seed_from_link", "seed_layers_from_link", "sync_link", "upload_link_note"]

LINK_PARAMS = "explore_link_params"  # a link's parameters, kept until the model's sizes can check them
FROM_UPLOAD = "explore_link_from_upload"  # the link was made from an uploaded picture
UPLOAD_SOURCE = "upload"  # the link parameter `source` when the picture was an upload


def seed_from_link() -> None:
    """At a session's first run: model, weights, photo, view and options from the URL, before their widgets exist.

    A link made from an uploaded picture cannot carry the picture: the page says so, and the link's
    view and patch (which belonged to that picture) are not applied to another one.
    """
    link = ui.url_params_once("explore")
    if link is None:
        return
    state = parse_view_state(link, ui.view_limits())[0]
    # What the link does not name is left to the pickers, which default to what loads on this server.
    if "model" not in link:
        pass
    elif state.model in [name for name, _ in SUGGESTED_MODELS] or is_visitor_run(state.model):
        st.session_state["explore_model"] = state.model  # a run is picked by its name
    else:
        st.session_state["explore_model"] = ui.OTHER_MODEL
        st.session_state["explore_model_name"] = state.model
    if "weights" in link:
        st.session_state["explore_weights"] = state.weights
    if state.image is not None:
        st.session_state["explore_image_source"] = "Built-in photo"
        st.session_state["explore_photo"] = state.image
    st.session_state[OPACITY] = state.opacity
    st.session_state["explore_fusion"] = state.fusion
    st.session_state["explore_discard"] = state.discard
    st.session_state[RAW_ROLLOUT] = state.sinks == "raw"
    st.session_state[RAW_COLOURS] = state.colours == "raw"
    from_upload = link.get("source") == UPLOAD_SOURCE
    st.session_state[FROM_UPLOAD] = from_upload
    if not from_upload and link.get("view") in VIEW_LABELS:
        st.session_state[VIEW] = link["view"]
    st.session_state[LINK_PARAMS] = link


def upload_link_note() -> None:
    """Says, once, that the opened link was made from an uploaded picture this session does not have."""
    if st.session_state.pop(FROM_UPLOAD, False):
        st.info(
            "This link was made from an uploaded picture, which a link cannot carry: showing the "
            "default photo instead, without the link's view or clicked patch."
        )


def seed_layers_from_link(facts: ModelFacts, seen: ImageView) -> None:
    """Layer, head, query and rollout start from the first run's link, once the model's sizes checked them.

    The link's patch is checked against the view's grid (in the aspect-kept view, not the model's
    own). For a model whose raw attention is read layer by layer on each layer's own map (MaxViT,
    MobileViT), the link's layer is the one its layer picker shows. One note names whatever the link
    asked for that this app or model cannot show.
    """
    if LINK_PARAMS not in st.session_state:
        return
    limits = ui.view_limits()
    if facts.global_attention:
        grid_size = seen.grid_size
        limits = replace(limits, num_layers=facts.num_layers, num_heads=facts.num_heads, grid_size=grid_size)
    elif reads_partitions(facts):
        limits = replace(limits, num_layers=facts.partitioned_layers)
    link = st.session_state.pop(LINK_PARAMS)
    from_upload = link.get("source") == UPLOAD_SOURCE
    state, notes = parse_view_state(link, limits)
    ui.url_notes(notes)
    if reads_partitions(facts) and state.layer is not None:
        st.session_state[PARTITIONED_LAYER] = state.layer
    if not facts.global_attention:
        return
    if state.layer is not None:
        st.session_state["explore_layer"] = state.layer
    if state.head is not None:  # None is the "mean of heads" option, the widget's default
        st.session_state[HEAD] = state.head
    st.session_state["explore_start_layer"] = state.start_layer
    if from_upload:  # that patch was on another picture
        st.session_state[QUERY_PATCH] = None
        return
    st.session_state[QUERY_PATCH] = state.patch
    st.session_state[QUERY_KIND] = CLICKED_PATCH if state.query == "patch" else class_query(facts)


def sync_link(choice: ui.ModelChoice, picked: ui.ImageChoice, opacity: float, facts: ModelFacts) -> None:
    """Writes what the page shows into the URL, so that copying the link shares this view.

    A model with one grid of global attention shares its layer, head, query and rollout; one read
    layer by layer on each layer's own map shares the layer its picker shows; a CNN neither.
    """
    session = st.session_state
    state = ViewState(
        model=choice.name,
        weights=choice.weights,
        image=picked.name if picked.name in BUILTIN_PHOTOS else None,
        layer=session.get("explore_layer"),
        head=session.get(HEAD),
        query="patch" if session.get(QUERY_KIND) == CLICKED_PATCH else "class",
        patch=session.get(QUERY_PATCH),
        fusion=session.get("explore_fusion", "mean"),
        discard=session.get("explore_discard", 0.0),
        start_layer=session.get("explore_start_layer", 0),
        opacity=opacity,
        sinks="raw" if session.get(RAW_ROLLOUT, False) else "exclude",
        colours="raw" if session.get(RAW_COLOURS, False) else "clipped",
    )
    params = view_state_params(state, attention=facts.global_attention)
    if reads_partitions(facts) and PARTITIONED_LAYER in session:
        params["layer"] = str(session[PARTITIONED_LAYER])
    params["view"] = session.get(VIEW, "crop")
    if picked.name not in BUILTIN_PHOTOS:
        params["source"] = UPLOAD_SOURCE
    ui.sync_url(params)
