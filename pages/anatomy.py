"""Anatomy: what the ViT paper shows, on the loaded model — patches as words, Fig. 7, resolution, hybrids."""

from __future__ import annotations

import streamlit as st

import anatomy_views_a
from pages.views import ui

try:  # part B's views (resolution, hybrid stem, token norms, all heads, queries & keys)
    import anatomy_views_b
except ModuleNotFoundError as error:
    if error.name != "anatomy_views_b":  # a broken import inside the module must not pass as "missing"
        raise
    anatomy_views_b = None

COMPARE_RANDOM = "anatomy_compare_random"
TAB = "anatomy_tab"
TABS_B = ("Resolution", "Hybrid stem", "Token norms", "All heads", "Queries & keys")

st.title("Anatomy")

with st.sidebar:
    picked_image = ui.image_picker("anatomy")
    choice = ui.model_picker("anatomy")
    compare = st.toggle(
        "Compare with random weights",
        key=COMPARE_RANDOM,
        help="Shows every view a second time for an untrained twin: the same architecture and input size "
        "with random weights, so you can see what training changed.",
    )

loaded = ui.load_or_stop(choice)
facts = loaded.facts
ui.untrained_warning(loaded)
family = {"vit": "ViT", "hybrid": "hybrid (CNN stem + ViT)", "cnn": "CNN"}[facts.family]
tokens = (
    f" · {facts.grid_size[0]}×{facts.grid_size[1]} grid · {facts.num_patches} patches + "
    f"{facts.num_prefix_tokens} prefix = {facts.num_tokens} tokens · {facts.num_layers} layers × "
    f"{facts.num_heads} heads"
    if facts.grid_size is not None
    else ""
)
st.caption(
    f"**{facts.name}** · {family} · {ui.describe_weights(choice.weights)} · "
    f"{facts.input_size[0]}×{facts.input_size[1]} px input{tokens} · device {loaded.device}"
)

random_loaded = None
if compare and not loaded.trained:
    st.info("These weights are already random: there is nothing untrained to compare them with.")
elif compare:
    random_loaded = anatomy_views_a.cached_twin(choice.name, choice.weights, choice.device)

# Lazy tabs: only the open tab's views run, so a slow view never delays another.
tabs = st.tabs([*anatomy_views_a.TAB_LABELS, *TABS_B], key=TAB, on_change="rerun")
tabs_a, tabs_b = tabs[: len(anatomy_views_a.TAB_LABELS)], tabs[len(anatomy_views_a.TAB_LABELS) :]
anatomy_views_a.render_patches(tabs_a[0], loaded, random_loaded, picked_image)
anatomy_views_a.render_filters(tabs_a[1], loaded, random_loaded)
anatomy_views_a.render_position_embeddings(tabs_a[2], loaded, random_loaded)
anatomy_views_a.render_attention_distance(tabs_a[3], loaded, random_loaded)

if anatomy_views_b is not None:
    if any(tab.open is not False for tab in tabs_b):
        anatomy_views_b.render_tabs(tabs_b, loaded, random_loaded, picked_image)
else:
    for tab in tabs_b:
        if tab.open is not False:
            tab.info("Coming soon.")
