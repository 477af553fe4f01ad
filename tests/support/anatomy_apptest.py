"""AppTest helpers for the Anatomy page: open it on a model, open a tab, read its texts and titles."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from pages.views.ui import OTHER_MODEL, WEIGHTS_FILE
from tests.support.browser import REPO
from tests.support.sent_charts import sent_spec


def open_anatomy(
    model: str | None = None,
    weights: str | None = None,
    path: str | None = None,
    timeout_s: float = 180,
) -> AppTest:
    """The Anatomy page after its first run, on the chosen model, weights source or weights file."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout_s)
    at.switch_page("pages/anatomy.py")
    at.run()
    if model is not None:
        at.selectbox(key="anatomy_model").set_value(OTHER_MODEL).run()
        at.text_input(key="anatomy_model_name").set_value(model).run()
    if path is not None:
        at.selectbox(key="anatomy_weights").set_value(WEIGHTS_FILE).run()
        at.text_input(key="anatomy_weights_path").set_value(path).run()
    elif weights is not None:
        at.selectbox(key="anatomy_weights").set_value(weights).run()
    assert not at.exception, at.exception
    return at


def open_tab(at: AppTest, tab: str) -> AppTest:
    """Runs the page with `tab` open (tabs render lazily); no exception allowed."""
    at.session_state["anatomy_tab"] = tab
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_texts(at: AppTest) -> str:
    """Every markdown, caption, info and warning text of the page, one per line."""
    parts = [element.value for element in [*at.markdown, *at.caption, *at.info, *at.warning]]
    return "\n".join(str(part) for part in parts)


def figure_titles(at: AppTest) -> list[str]:
    """The titles of the tabs' Plotly figures (not the photo with the view's box above the tabs)."""
    titles = []
    for chart in at.get("plotly_chart"):
        if chart.proto.id and "anatomy_view_photo" in chart.proto.id:
            continue
        title = sent_spec(chart).get("layout", {}).get("title", {})
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles
