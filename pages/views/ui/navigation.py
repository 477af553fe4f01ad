"""Hands a deep link on a freshly started server to app.py's navigation."""

from __future__ import annotations

import streamlit as st

__all__ = ["use_app_navigation"]


def use_app_navigation() -> None:
    """Makes a deep link such as /anatomy run through app.py even on a freshly started server.

    Streamlit assumes an app with a pages/ folder uses its old folder-based navigation until some
    session has run st.navigation; until then a deep link runs the page script alone, without
    app.py's page config and menu. The first page to import `pages.views.ui` calls this: it switches
    that assumption off (a private flag of Streamlit's) and reruns, so app.py's navigation takes over.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
