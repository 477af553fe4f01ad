"""Streamlit glue of the Compare page: model slots, predictions, maps on one scale, probes, faithfulness.

`slots` holds the compared models and the sidebar's settings, `explanations` the view, prediction
and map sections, `checks` the probes and faithfulness tabs, `links` the shareable URL.
"""

from __future__ import annotations

from pages.views.compare.checks import checks_section
from pages.views.compare.explanations import (
    explanations_section,
    headless_note,
    method_label,
    method_picker,
    predictions_section,
    views_section,
)
from pages.views.compare.links import read_link, share_link
from pages.views.compare.slots import (
    DisplayOptions,
    ModelSlot,
    display_options,
    model_pickers,
    opening_held_out,
    ready_slots,
)

__all__ = [
    "DisplayOptions",
    "ModelSlot",
    "checks_section",
    "display_options",
    "explanations_section",
    "headless_note",
    "method_label",
    "method_picker",
    "model_pickers",
    "opening_held_out",
    "predictions_section",
    "read_link",
    "ready_slots",
    "share_link",
    "views_section",
]
