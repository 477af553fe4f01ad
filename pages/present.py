"""Present: the ViT paper told as a story, one large slide at a time, for an audience."""

from __future__ import annotations

from pages.views import present, ui

link_notes = present.seed_session()
present.apply_style()
progress = present.navigation()
ui.url_notes(link_notes)

story = present.story()
present.render_slide(story, progress)
present.share_and_listen(story)
