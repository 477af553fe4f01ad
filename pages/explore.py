"""Explore: the patch grid, raw attention per layer and head, attention rollout and predictions."""

from __future__ import annotations

import streamlit as st

from pages.views import explore, ui

explore.seed_from_link()

st.title("Explore")

with st.sidebar:
    picked_image = ui.image_picker("explore")
    choice = ui.model_picker("explore")
    opacity = st.slider("Map opacity", 0.1, 1.0, 0.6, 0.05, key=explore.OPACITY)

loaded = ui.load_or_stop(choice)
explore.seed_layers_from_link(loaded.facts)
ui.untrained_warning(loaded)
st.caption(ui.model_caption(loaded, choice.weights))
has_attention = loaded.facts.family != "cnn"
if has_attention:
    explore.render_attention(loaded, choice, picked_image, opacity)
else:
    explore.render_cnn(loaded, choice, picked_image)
explore.sync_link(choice, picked_image, opacity, attention=has_attention)
