"""Arena: which explanation holds up on your images, for your model — every method scored and ranked."""

from __future__ import annotations

import streamlit as st

from pages.views import arena, ui

st.title("Arena")
st.caption(
    "Every explanation method that fits the model, scored on your images by deletion, insertion and ROAD "
    "(each against random order) and by the cascading-randomisation sanity check, then ranked."
)

with st.sidebar:
    images, source = arena.image_source()
    st.subheader("Model")
    choice = ui.model_picker("arena", default_name="tf_efficientnet_lite0")
    loaded = ui.load_or_stop(choice)
    methods, settings = arena.settings_picker(loaded)

if not loaded.facts.has_classifier:
    st.info(
        f"{loaded.facts.name} has no classifier head: the arena follows a class's probability. Pick a model with one."
    )
    st.stop()
ui.untrained_warning(loaded)
table = arena.run_section(choice, loaded, images, methods, settings, source)
if table is not None:
    arena.render_table(table, choice)
