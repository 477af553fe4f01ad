"""The Present page's look for a room: its theme and presentation-mode CSS, and the arrow-key script."""

from __future__ import annotations

import streamlit as st

from pages.views.present.state import DARK, FULLSCREEN

__all__ = [
    "COLOURS",
    "DARK_CSS",
    "FULLSCREEN_CSS",
    "SLIDE_KEYS_JS",
    "THEME_CSS",
    "apply_style",
]

# The page's look, all in one place. Theme colours arrive as CSS variables set on every run, so
# the rules themselves never change: large type for a room, the theme's colours, and in
# presentation mode no sidebar or toolbar.
COLOURS = {  # (background, text, muted) per theme, dark first
    True: ("#0e1117", "#f3f4f8", "#c4c8d4"),
    False: ("#ffffff", "#1b1f2a", "#454b5a"),
}
THEME_CSS = """
.stApp, [data-testid="stAppViewContainer"], [data-testid="stHeader"] {
    background-color: var(--vv-background); color: var(--vv-text);
}
[data-testid="stMain"] h1, [data-testid="stMain"] h2, [data-testid="stMain"] h3, [data-testid="stMain"] p,
[data-testid="stMain"] li, [data-testid="stMain"] label, [data-testid="stMain"] td, [data-testid="stMain"] th {
    color: var(--vv-text);
}
[data-testid="stMain"] h1.vv-title { font-size: 2.7rem; padding: 0.2rem 0 0.4rem 0; }
[data-testid="stMain"] .vv-caption {
    font-size: 1.45rem; line-height: 1.45; color: var(--vv-muted); margin-bottom: 0.6rem;
}
[data-testid="stMain"] .vv-progress { font-size: 1.2rem; color: var(--vv-muted); min-width: 4rem; }
[data-testid="stMain"] .st-key-present_source [data-testid="stCaptionContainer"] { opacity: 1; }
[data-testid="stMain"] .st-key-present_source p {
    font-size: 0.95rem; color: var(--vv-muted); margin-bottom: 0.4rem;
}
[data-testid="stMain"] .vv-shapes td, [data-testid="stMain"] .vv-shapes th {
    font-size: 1.2rem; padding: 0.35rem 0.8rem;
}
[data-testid="stMain"] .vv-shapes td:nth-child(2) { white-space: nowrap; }
[data-testid="stMain"] .vv-shapes td:nth-child(3) { font-size: 1rem; }
[data-testid="stMain"] button p { font-size: 1.1rem; }
[data-testid="stMain"] .st-key-present_view [data-testid="stRadio"] {
    display: flex; flex-direction: row; align-items: center; gap: 1rem;
}
"""
DARK_CSS = """
[data-testid="stMain"] [data-testid^="stBaseButton"], [data-testid="stMain"] [data-baseweb="select"] > div,
[data-testid="stMain"] [data-testid="stFileUploaderDropzone"], [data-testid="stMain"] [data-testid="stExpander"] details {
    background-color: #262a36; color: var(--vv-text); border-color: #4a5062;
}
[data-testid="stSidebar"] { background-color: #161a24; }
[data-testid="stSidebar"] span, [data-testid="stSidebar"] p { color: var(--vv-text); }
.stApp button[aria-label^="Help for"], .stApp button[aria-label^="Help for"] svg {
    color: var(--vv-muted) !important; stroke: var(--vv-muted) !important;  /* Streamlit sets a dark grey */
}
"""
FULLSCREEN_CSS = """
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"], [data-testid="stHeader"], [data-testid="stToolbar"],
[data-testid="stDecoration"] { display: none !important; }
[data-testid="stMainBlockContainer"] { padding-top: 1.2rem; max-width: 100%; }
"""
# Arrow keys click Next / Previous. st.html runs in the page itself (no iframe); the handler
# replaces any earlier one; keys meant for text boxes, radios and sliders are left to them.
SLIDE_KEYS_JS = """
<script>
(() => {
  const keys = {ArrowRight: "present_next", PageDown: "present_next", ArrowLeft: "present_previous", PageUp: "present_previous"};
  if (window.__vitvizSlideKeys) document.removeEventListener("keydown", window.__vitvizSlideKeys);
  window.__vitvizSlideKeys = (event) => {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    const typing = target && (target.isContentEditable || ["TEXTAREA", "SELECT"].includes(target.tagName)
      || (target.tagName === "INPUT" && target.type !== "checkbox") || target.getAttribute("role") === "slider");
    if (typing) return;
    const key = keys[event.key];
    const buttons = key ? [...document.querySelectorAll(`.st-key-${key} button`)] : [];
    const button = buttons.find((candidate) => candidate.offsetParent !== null);
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  };
  document.addEventListener("keydown", window.__vitvizSlideKeys);
})();
</script>
"""


def apply_style() -> None:
    """The page's CSS for the session's theme and mode."""
    dark, fullscreen = st.session_state.get(DARK, False), st.session_state.get(FULLSCREEN, False)
    background, text, muted = COLOURS[dark]
    variables = f":root {{ --vv-background: {background}; --vv-text: {text}; --vv-muted: {muted}; }}"
    css = variables + THEME_CSS + (DARK_CSS if dark else "") + (FULLSCREEN_CSS if fullscreen else "")
    st.html(f"<style>{css}</style>")
