"""Compare's shareable links: the photo, the view and each slot's model and weights live in the URL."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from pages.views import ui
from pages.views.compare.slots import (
    LINK_VIEWS,
    RAW_ROLLOUT,
    RAW_SINKS_CHOICE,
    THIRD_MODEL,
    VIEW_KEY,
    DisplayOptions,
    ModelSlot,
)
from vitviz.models import SUGGESTED_MODELS, WEIGHTS_SOURCES
from vitviz.serving import is_visitor_run

__all__ = [
    "read_link",
    "share_link",
]


def read_link() -> None:
    """Seeds the widgets from the URL once per session; anything unknown falls back, with one note."""
    params = ui.url_params_once("compare")
    if not params:
        return
    limits = ui.view_limits()
    notes = []
    ui.take_link_choice(params, "image", limits.images, "compare_photo", notes, " (not a built-in photo)")
    ui.take_link_choice(params, "view", LINK_VIEWS, VIEW_KEY, notes, " (use crop or whole)")
    for number in (1, 2, 3):
        model, weights = params.get(f"model{number}"), params.get(f"weights{number}")
        if model is not None:
            if model in dict(SUGGESTED_MODELS) or is_visitor_run(model):
                st.session_state[f"compare_{number}_model"] = model  # a run is picked by its name
            else:
                notes.append(f"model{number} {model[:40]!r} (not a suggested timm model or a finished run)")
        if weights is not None:
            if weights in limits.weights:
                st.session_state[f"compare_{number}_weights"] = weights
            else:
                notes.append(f"weights{number} {weights[:40]!r} (use bundled, hub or random)")
    if params.get("third") in ("0", "1"):
        st.session_state[THIRD_MODEL] = params["third"] == "1"
    ui.take_link_choice(params, "sinks", ("exclude", "raw"), RAW_SINKS_CHOICE, notes, " (use exclude or raw)")
    if RAW_SINKS_CHOICE in st.session_state:
        st.session_state[RAW_ROLLOUT] = st.session_state.pop(RAW_SINKS_CHOICE) == "raw"
    ui.url_notes(notes)


def share_link(slots: Sequence[ModelSlot], picked: ui.ImageChoice, options: DisplayOptions) -> None:
    """Makes the URL say what the page shows (built-in photos, suggested models and named weights,
    and runs by their names only)."""
    params = {"view": options.view, "third": "1" if len(slots) == 3 else "0"}
    if st.session_state.get("compare_image_source", "Built-in photo") == "Built-in photo":
        params["image"] = picked.name
    for slot in slots:
        if slot.choice.run is not None:
            params[f"model{slot.number}"] = slot.choice.run
        elif slot.choice.name in dict(SUGGESTED_MODELS) and slot.choice.weights in WEIGHTS_SOURCES:
            params[f"model{slot.number}"] = slot.choice.name
            params[f"weights{slot.number}"] = slot.choice.weights
    if options.raw_rollout:
        params["sinks"] = "raw"
    ui.sync_url(params)
