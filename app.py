"""vitviz: the Streamlit app's entry point; each page lives in pages/."""

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator


def _patch_grid_icon() -> Image.Image:
    """The tab icon, drawn here so that no icon is fetched from the network: an image cut into patches."""
    pixels = np.full((32, 32, 3), 255, dtype=np.uint8)
    colours = [(214, 39, 40), (31, 119, 180), (255, 127, 14), (44, 160, 44)]
    for row in range(2):
        for col in range(2):
            pixels[2 + row * 15 : 15 + row * 15, 2 + col * 15 : 15 + col * 15] = colours[row * 2 + col]
    return Image.fromarray(pixels)


st.set_page_config(
    page_title="vitviz — see how Vision Transformers work", page_icon=_patch_grid_icon(), layout="wide"
)

# One line per page, in menu order; Explore opens first. Material icons ship with Streamlit,
# so they render on machines without an emoji font.
PAGES = [
    st.Page("pages/explore.py", title="Explore", icon=":material/visibility:", default=True),
    st.Page("pages/anatomy.py", title="Anatomy", icon=":material/biotech:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
    st.Page("pages/present.py", title="Present", icon=":material/slideshow:"),
]

# ?present=1 on any page's URL opens presentation mode: the Present page, with no navigation shown.
presenting = st.query_params.get("present") == "1"
page = st.navigation(PAGES, position="hidden" if presenting else "sidebar")
if presenting and page.url_path != "present":
    st.switch_page("pages/present.py", query_params=st.query_params.to_dict())


def _plotly_early() -> DeltaGenerator | None:
    """At a session's first run, a blank chart that makes the browser fetch and start Plotly's JavaScript.

    The browser loads Plotly's 4.7 MB only when a chart first arrives, which on a cold start is
    seconds after the page script began importing torch and timm; sent first, it loads meanwhile.
    The caller removes it once the page has run.
    """
    if "plotly_fetched" in st.session_state:
        return None
    st.session_state["plotly_fetched"] = True
    import plotly.graph_objects as go

    slot = st.sidebar.empty()
    blank = go.Figure(layout={"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}})
    blank.update_xaxes(visible=False)
    blank.update_yaxes(visible=False)
    slot.plotly_chart(blank, key="plotly_early", config={"displayModeBar": False, "staticPlot": True})
    return slot


early = _plotly_early()
try:
    page.run()
finally:
    if early is not None:
        early.empty()
