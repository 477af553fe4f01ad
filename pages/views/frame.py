"""The app's frame, around whichever page runs: the tab's title and icon, and Plotly fetched early.

Kept apart from `ui` on purpose: it imports neither torch nor the library, so app.py sends its first
messages to the browser before any page starts importing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import streamlit as st
from PIL import Image

__all__ = ["configure_page", "plotly_fetched_early"]


def _patch_grid_icon() -> Image.Image:
    """The tab icon, drawn here so that no icon is fetched from the network: an image cut into patches."""
    pixels = np.full((32, 32, 3), 255, dtype=np.uint8)
    colours = [(214, 39, 40), (31, 119, 180), (255, 127, 14), (44, 160, 44)]
    for row in range(2):
        for col in range(2):
            pixels[2 + row * 15 : 15 + row * 15, 2 + col * 15 : 15 + col * 15] = colours[row * 2 + col]
    return Image.fromarray(pixels)


def configure_page() -> None:
    st.set_page_config(
        page_title="vitviz — see how Vision Transformers work", page_icon=_patch_grid_icon(), layout="wide"
    )


@contextmanager
def plotly_fetched_early() -> Iterator[None]:
    """At a session's first run, a blank chart first, which makes the browser fetch Plotly's JavaScript.

    The browser loads Plotly's 4.7 MB only when a chart first arrives, which on a cold start is seconds
    after the page script began importing torch and timm; sent first, it loads meanwhile. The blank
    chart is removed once the page inside has run.
    """
    if "plotly_fetched" in st.session_state:
        yield
        return
    st.session_state["plotly_fetched"] = True
    import plotly.graph_objects as go

    slot = st.sidebar.empty()
    blank = go.Figure(layout={"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}})
    blank.update_xaxes(visible=False)
    blank.update_yaxes(visible=False)
    slot.plotly_chart(blank, key="plotly_early", config={"displayModeBar": False, "staticPlot": True})
    try:
        yield
    finally:
        slot.empty()
