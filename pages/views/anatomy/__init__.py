"""Streamlit glue of the Anatomy page: eleven tabs on a model, each beside its untrained twin on request.

Tabs 1–4 follow the ViT paper (patches as words, Fig. 7's filters, position embeddings and
attention distance); tabs 5–9 go further (resolution, hybrid stem, token norms, all heads, queries
and keys); tabs 10–11 intervene (logit lens, sanity check). Every tab draws the same list of
`ModelSide`s: the chosen model, and its twin. One module per tab, over the shared `kit`; `tabs`
lists them in menu order, `link` reads and writes shared links; long work (the head ranking, the
sanity check) runs as background jobs followed by `pages.views.background`. Names with a leading
underscore are private to this package. Cached computations take the model unhashed (`_loaded`);
the side's `key` names it.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from pages.views import ui
from pages.views.anatomy.kit import RAW_COLOURS, ModelSide, _cached_view, _cnn_note, model_sides
from pages.views.anatomy.link import VIEW, _read_link, _write_link, seed_from_link
from pages.views.anatomy.tabs import INTRODUCTIONS, TAB, TABS
from vitviz.figures.common import photo_view_figure
from vitviz.figures.scales import CLIP_PERCENTILE

__all__ = ["COMPARE_RANDOM", "TABS", "VIEW", "ModelSide", "model_sides", "render_tabs", "seed_from_link"]

COMPARE_RANDOM = "anatomy_compare_random"  # sidebar toggle: show the untrained twin beside the model


def render_tabs(sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """The eleven tabs, lazily: only the open tab runs, so a slow tab never delays another.

    Args:
        sides: from `model_sides`; the first is the chosen model (shared: never mutated).
        picked: the image every tab runs on, each in the sides' one view of it.
    """
    facts = sides[0].loaded.facts
    _read_link(facts)
    st.toggle(
        "Raw colour scale",
        key=RAW_COLOURS,
        help=f"Off: the maps' colours stop at the {CLIP_PERCENTILE:g}th percentile, so one outlier token "
        "does not wash the rest out (the colour bar says so). On: minimum to maximum.",
    )
    _view_note(sides[0], picked)
    tabs = st.tabs(list(TABS), key=TAB, on_change="rerun")
    for tab, name in zip(tabs, TABS, strict=True):
        if _is_open(tab):
            with tab:
                _render_tab(name, sides, picked)
    _write_link(picked)


@st.fragment
def _render_tab(name: str, sides: list[ModelSide], picked: ui.ImageChoice) -> None:
    """One tab as a fragment: its sliders and clicks rerun this tab alone, not the photo or the sidebar."""
    tab = TABS[name]
    if tab.cnn_reason is None or not _cnn_note(sides[0].loaded.facts, tab.cnn_reason):
        if name in INTRODUCTIONS:
            st.markdown(INTRODUCTIONS[name])
        tab.render(sides, picked)
    _write_link(picked)  # a fragment's rerun skips the page's own call


def _view_note(side: ModelSide, picked: ui.ImageChoice) -> None:
    """The photo with the view's box on it, once above the tabs: every map below lies over that view."""
    view = _cached_view(side.key, picked.digest, side.view, side.loaded.facts, picked.image)
    photo_column, note_column = st.columns([1, 4])
    with photo_column:
        figure = photo_view_figure(view.photo, [("", view.box)], longest=240)
        ui.plotly_chart(figure, key="anatomy_view_photo", share=0.2, theme=None)
        st.caption("What the model sees (cyan box)")
    with note_column:
        label = view.label
        note = f" — {view.note}" if view.note else ""
        st.caption(
            f"Every map, prediction and probe on this page is computed on one view of the photo: {label}"
            f"{note}. The cyan box marks it on the photo; change it under View in the sidebar."
        )


def _is_open(tab: DeltaGenerator) -> bool:
    """Lazy tabs (on_change="rerun") say whether they are open; tabs without state always run."""
    return getattr(tab, "open", None) is not False
