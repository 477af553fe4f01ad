"""Anatomy's shared links: the URL seeds the view, the open tab and the heads off; the page writes them back."""

from __future__ import annotations

import streamlit as st

from pages.views import ui
from pages.views.anatomy.head_ablation import (
    ABLATED,
    ABLATED_LAYERS,
    ABLATION_MODE,
    ABLATION_MODES,
    _head_label,
)
from pages.views.anatomy.kit import RAW_COLOURS, _raw_colours
from pages.views.anatomy.tabs import TAB, TABS
from vitviz.images import BUILTIN_PHOTOS
from vitviz.maths.ablation import parse_heads
from vitviz.models import ModelFacts
from vitviz.preprocess import VIEW_LABELS

__all__ = ["LINK_PARAMS", "UPLOAD_SOURCE", "VIEW", "seed_from_link"]

VIEW = "anatomy_view"  # the sidebar's view picker: crop or whole image
LINK_PARAMS = "anatomy_link_params"  # a link's parameters, kept until the model's sizes can check them
UPLOAD_SOURCE = "upload"  # the link parameter `source` when the picture was an upload


def seed_from_link() -> None:
    """At a session's first run, before the sidebar's widgets exist: the view from the URL.

    The rest of the link waits in the session until `render_tabs` knows the model's sizes. A link
    made from an uploaded picture does not apply its view to another picture.
    """
    params = ui.url_params_once("anatomy")
    if not params:
        return
    st.session_state[LINK_PARAMS] = params
    if params.get("source") != UPLOAD_SOURCE and params.get("view") in VIEW_LABELS:
        st.session_state[VIEW] = params["view"]


def _read_link(facts: ModelFacts) -> None:
    """Seeds the open tab, the ablation and the colour rule from a shared link, once per session."""
    params = st.session_state.pop(LINK_PARAMS, None)
    if not params:
        return
    notes = []
    if params.get("source") == UPLOAD_SOURCE:
        notes.append("the uploaded picture it was made from (a link cannot carry it) and its view")
    elif "view" in params and params["view"] not in VIEW_LABELS:
        notes.append(f"view {params['view'][:20]!r}")
    ui.take_link_choice(params, "tab", TABS, TAB, notes)
    if params.get("raw") == "1":
        st.session_state[RAW_COLOURS] = True
    if "off" in params and facts.num_layers and facts.num_heads:
        try:
            parse_heads(params["off"], facts.num_layers, facts.num_heads)  # validates every item
            items = [item.strip() for item in params["off"].split(",") if item.strip()]
            st.session_state[ABLATED_LAYERS] = [int(item) for item in items if item.isdigit()]
            st.session_state[ABLATED] = [
                _head_label(head)
                for item in items
                if not item.isdigit()
                for head in parse_heads(item, facts.num_layers, facts.num_heads)
            ]
        except ValueError as error:
            notes.append(f"heads off ({error})")
    if "ablation" in params:
        modes = {mode: label for label, mode in ABLATION_MODES.items()}
        if params["ablation"] in modes:
            st.session_state[ABLATION_MODE] = modes[params["ablation"]]
        else:
            notes.append(f"ablation {params['ablation'][:20]!r}")
    ui.url_notes(notes)


def _write_link(picked: ui.ImageChoice) -> None:
    """Makes the URL say the open tab, the view and the main choices, so a copied link reopens them."""
    params = {"tab": str(st.session_state.get(TAB, next(iter(TABS))))}
    view = st.session_state.get(VIEW, "crop")
    if view != "crop":
        params["view"] = str(view)
    if picked.name not in BUILTIN_PHOTOS:
        params["source"] = UPLOAD_SOURCE
    if _raw_colours():
        params["raw"] = "1"
    off = [*st.session_state.get(ABLATED, []), *map(str, st.session_state.get(ABLATED_LAYERS, []))]
    if off:
        params["off"] = ",".join(off)
    mode = ABLATION_MODES.get(st.session_state.get(ABLATION_MODE, ""))
    if mode is not None and mode != "zero":
        params["ablation"] = mode
    ui.sync_url(params, keep=("present", "model", "weights", "image"))
