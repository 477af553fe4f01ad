"""A link straight to a page works on a server no session has visited yet."""

import pytest

from tests.support.browser import open_and_wait, save_screenshot, streamlit_app

pytestmark = pytest.mark.browser


def test_deep_link_on_a_fresh_server_runs_through_the_app_navigation(chromium):
    with streamlit_app() as url:  # its own server: the shared one has been visited already
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        open_and_wait(page, f"{url}/anatomy", page.locator("h1", has_text="Anatomy"))
        menu = page.locator('[data-testid="stSidebarNav"]').inner_text()
        # app.py's menu (titled pages), not Streamlit's folder listing ("app", "anatomy", ...).
        assert "Explore" in menu and "app" not in menu.split()
        save_screenshot(page, "deep_link_anatomy")
        page.close()
