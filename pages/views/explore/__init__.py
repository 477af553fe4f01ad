"""Streamlit glue of the Explore page: its sections (`render`), its shared links (`links`) and the
session-state keys both use (`keys`)."""

from pages.views.explore.keys import OPACITY, RAW_COLOURS, VIEW
from pages.views.explore.links import seed_from_link, seed_layers_from_link, sync_link, upload_link_note
from pages.views.explore.render import (
    ExplorePage,
    attention_maps_offered,
    keep_head_choice,
    render_attention,
    render_attention_maps,
    render_cnn,
    view_picker,
)

__all__ = [
    "OPACITY",
    "RAW_COLOURS",
    "VIEW",
    "ExplorePage",
    "attention_maps_offered",
    "keep_head_choice",
    "render_attention",
    "render_attention_maps",
    "render_cnn",
    "seed_from_link",
    "seed_layers_from_link",
    "sync_link",
    "upload_link_note",
    "view_picker",
]
