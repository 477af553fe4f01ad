"""Streamlit glue of the Explore page: its sections (`render`), its shared links (`links`) and the
session-state keys both use (`keys`), all reached from here by the page script."""

from pages.views.explore import links, render
from pages.views.explore.keys import OPACITY, RAW_COLOURS, VIEW
from pages.views.explore.links import *  # noqa: F403 - the page's face re-exports each module's names
from pages.views.explore.render import *  # noqa: F403

__all__ = ["OPACITY", "RAW_COLOURS", "VIEW", *links.__all__, *render.__all__]
