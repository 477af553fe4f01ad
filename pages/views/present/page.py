"""The Present page's frame: navigation, the slide on screen, and the link that names it."""

from __future__ import annotations

import html
from collections.abc import Callable

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from pages.views import ui
from pages.views.present.comparison_slide import render_compare
from pages.views.present.state import APP_RERUN, BUILT_IN, DARK, FULLSCREEN, SLIDE, SOURCE, VIEW, VIEW_SLIDES
from pages.views.present.story import Story, story
from pages.views.present.style import SLIDE_KEYS_JS, apply_style
from pages.views.present.transformer_slides import (
    render_attention,
    render_image,
    render_patches,
    render_prediction,
    render_rollout,
    render_tokens,
)
from vitviz.figures.story import SLIDE_KEYS, SlideKey
from vitviz.images import BUILTIN_PHOTOS
from vitviz.models import RUN_WEIGHTS, describe_weights

__all__ = [
    "SLIDE_RENDERERS",
    "navigation",
    "render_slide",
    "share_and_listen",
    "slides",
]

# Navigation -----------------------------------------------------------------------------------


def _step(delta: int) -> None:
    st.session_state[SLIDE] = min(max(0, st.session_state[SLIDE] + delta), len(SLIDE_KEYS) - 1)


def _toggle_fullscreen() -> None:
    # Runs before the rerun; app.py, which hides the navigation, runs only in a rerun of the app.
    if st.session_state[FULLSCREEN]:
        st.query_params["present"] = "1"
    elif "present" in st.query_params:
        del st.query_params["present"]
    st.session_state[APP_RERUN] = True


def navigation() -> DeltaGenerator:
    """Previous / Next, a place for the slide number, and the theme and presentation-mode toggles.

    Returns:
        The place where `render_slide` writes "n / 7".
    """
    index = st.session_state[SLIDE]
    with st.container(horizontal=True, vertical_alignment="center", gap="medium", key="present_nav"):
        st.button("◀ Previous", key="present_previous", on_click=_step, args=(-1,), disabled=index == 0)
        st.button(
            "Next ▶", key="present_next", on_click=_step, args=(1,), disabled=index == len(SLIDE_KEYS) - 1
        )
        progress = st.empty()
        st.toggle("Dark", key=DARK)
        st.toggle(
            "Presentation mode",
            key=FULLSCREEN,
            on_change=_toggle_fullscreen,
            help="Hides the sidebar and toolbar (URL ?present=1). Arrow keys ← → step.",
        )
    return progress


def render_slide(story: Story, progress: DeltaGenerator) -> None:
    """The slide number, title, caption and model line, then the slide's own figures."""
    progress.markdown(
        f'<div class="vv-progress"><b>{story.index + 1} / {len(SLIDE_KEYS)}</b></div>', unsafe_allow_html=True
    )
    st.markdown(f'<h1 class="vv-title">{html.escape(story.slide.title)}</h1>', unsafe_allow_html=True)
    st.markdown(f'<div class="vv-caption">{html.escape(story.slide.caption)}</div>', unsafe_allow_html=True)
    with st.container(key="present_source"):
        if story.pair is None:
            st.caption(f"{ui.model_caption(story.loaded, story.weights)} · {story.picked.name}")
        else:
            names = " and ".join(
                describe_weights(weights, model) if weights == RUN_WEIGHTS else model
                for model, weights in (story.pair.vit, story.pair.cnn)
            )
            st.caption(f"{names} · {story.picked.name}")
    if story.slide.key in VIEW_SLIDES:
        ui.view_picker(VIEW, horizontal=True)
    if story.pair is None:
        ui.untrained_warning(story.loaded)
    SLIDE_RENDERERS[story.slide.key](story)


@st.fragment
def slides() -> None:
    """The slide with its navigation: a step (Next, Back, a toggle, a picker) reruns only this part.

    A change the rest of the app must see (presentation mode hides app.py's navigation) reruns the
    whole app.
    """
    if st.session_state.pop(APP_RERUN, False):
        st.rerun()
    apply_style()
    progress = navigation()
    shown = story()
    render_slide(shown, progress)
    share_and_listen(shown)


def share_and_listen(story: Story) -> None:
    """Writes the slide, theme, model and photo into the URL, and lets the arrow keys step."""
    built_in = story.picked.name in BUILTIN_PHOTOS and st.session_state[SOURCE] == BUILT_IN
    ui.sync_url(
        {
            "slide": str(story.index + 1),
            "theme": "dark" if story.dark else "light",
            "model": story.model_name,
            "weights": story.weights,
            "view": story.view,
            **({"image": story.picked.name} if built_in else {}),
        }
    )
    st.html(SLIDE_KEYS_JS, unsafe_allow_javascript=True)


# Each slide of the story, by its key, with the one function that draws it.
SLIDE_RENDERERS: dict[SlideKey, Callable[[Story], None]] = {
    "image": render_image,
    "patches": render_patches,
    "tokens": render_tokens,
    "attention": render_attention,
    "rollout": render_rollout,
    "prediction": render_prediction,
    "compare": render_compare,
}
assert tuple(SLIDE_RENDERERS) == SLIDE_KEYS, "every slide of the story needs exactly one renderer"
