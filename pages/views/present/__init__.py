"""Streamlit glue of the Present page: the story's session state, its look for a room, one renderer per slide.

`state` holds the session's keys and what a link seeds, `style` the page's look, `story` what every
slide draws from, `transformer_slides` and `comparison_slide` the renderers, `page` the frame.
"""

from __future__ import annotations

from pages.views.present.page import SLIDE_RENDERERS, navigation, render_slide, share_and_listen, slides
from pages.views.present.state import seed_session
from pages.views.present.story import Story, story
from pages.views.present.style import apply_style

__all__ = [
    "SLIDE_RENDERERS",
    "Story",
    "apply_style",
    "navigation",
    "render_slide",
    "seed_session",
    "share_and_listen",
    "slides",
    "story",
]
