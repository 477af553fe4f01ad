"""Compare: two or three models' predictions, maps on one colour scale, robustness probes, faithfulness."""

from __future__ import annotations

import streamlit as st

from pages.views import compare, ui

st.title("Compare")
st.caption(
    "The same picture through two or three models: do they predict the same, and do they look at "
    "the same places? Maps are made on the whole picture resized to each model's input."
)

with st.sidebar:
    picked_image = ui.image_picker("compare")
    choices = compare.model_pickers()
    options = compare.display_options()

slots = compare.ready_slots(choices)
predictions = compare.predictions_section(slots, picked_image, options.topk)
methods, class_index = compare.explanations_section(slots, predictions, picked_image, options)
compare.checks_section(slots, methods, picked_image, class_index)
