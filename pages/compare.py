"""Compare: two or three models' predictions, maps on one colour scale, robustness probes, faithfulness."""

from __future__ import annotations

import streamlit as st

from pages.views import compare, ui

st.title("Compare")
st.caption(
    "The same picture through two or three models: do they predict the same, and do they look at "
    "the same places? Everything is computed on one view of the picture, drawn below."
)

compare.read_link()
with st.sidebar:
    picked_image = ui.image_picker("compare", held_out=compare.opening_held_out())
    choices = compare.model_pickers()
    options = compare.display_options()

slots = compare.ready_slots(choices)
views = compare.views_section(slots, picked_image, options.view)
predictions = compare.predictions_section(slots, picked_image, options)
methods, classes = compare.explanations_section(slots, predictions, picked_image, options, views)
compare.checks_section(slots, methods, picked_image, classes, options.view)
compare.share_link(slots, picked_image, options)
