"""Explore: the photo and the view the model sees, the patch grid, raw attention, rollout and predictions."""

from __future__ import annotations

import streamlit as st

from pages.views import explore, ui

explore.seed_from_link()
explore.keep_head_choice()

st.title("Explore")

with st.sidebar:
    picked_image = ui.image_picker("explore")
    choice = ui.model_picker("explore")
    view = explore.view_picker(choice)
    if explore.OPACITY not in st.session_state:  # a shared link may have set it already
        st.session_state[explore.OPACITY] = 0.6
    opacity = st.slider("Map opacity", 0.1, 1.0, step=0.05, key=explore.OPACITY)
    raw_colours = st.toggle(
        "raw colour values",
        key=explore.RAW_COLOURS,
        help="Colour bars span each map's full range, unclipped.",
    )

explore.upload_link_note()
loaded = ui.load_or_stop(choice)
seen = ui.cached_view(
    choice.name, choice.weights, choice.device, picked_image.digest, picked_image.image, view
)
explore.seed_layers_from_link(loaded.facts, seen)
ui.untrained_warning(loaded)
st.caption(ui.model_caption(loaded, choice.weights, seen=seen))
page = explore.ExplorePage(loaded, choice, picked_image, view, opacity, raw_colours)
has_attention = loaded.facts.global_attention
if has_attention:
    explore.render_attention(page)
elif explore.attention_maps_offered(loaded.facts):
    explore.render_attention_maps(page)
else:
    explore.render_cnn(page)
explore.sync_link(choice, picked_image, opacity, loaded.facts)
