"""Fine-tune: train a new head (or more) on your images in a worker, watch it learn, compare attention."""

from __future__ import annotations

import streamlit as st

from pages.views import finetune, ui

st.title("Fine-tune")

with st.sidebar:
    data = finetune.data_picker()
    st.subheader("Model")
    choice = ui.model_picker("finetune")
    settings = finetune.training_settings()

summary = finetune.data_section(data, settings)
finetune.start_section(data, summary, choice, settings)
finetune.pair_section(data, summary, settings, choice.device)
finetune.few_shot_section(data, summary, settings, choice.device)
finetune.runs_section(choice.device)
