"""Present: the ViT paper told as a story, one large slide at a time, for an audience."""

from __future__ import annotations

from pages.views import present, ui

link_notes = present.seed_session()
ui.url_notes(link_notes)
present.slides()  # navigation and the slide on screen: a step reruns only them
