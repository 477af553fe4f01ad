"""Anatomy: what the ViT paper shows, on the loaded model — patches as words, Fig. 7, resolution, hybrids."""

from __future__ import annotations

import streamlit as st

from pages.views import anatomy, ui

anatomy.seed_from_link()
st.title("Anatomy")

with st.sidebar:
    picked_image = ui.image_picker("anatomy")
    choice = ui.model_picker("anatomy")
    view = ui.view_picker(anatomy.VIEW)
    compare = st.toggle(
        "Compare with random weights",
        key=anatomy.COMPARE_RANDOM,
        help="Shows every tab a second time for an untrained twin: the same architecture and input size "
        "with random weights, so you can see what training changed.",
    )

loaded = ui.load_or_stop(choice)
ui.untrained_warning(loaded)
st.caption(ui.model_caption(loaded, choice.weights))
anatomy.render_tabs(anatomy.model_sides(choice, loaded, compare, view), picked_image)
