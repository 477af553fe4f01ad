"""`make run`'s entry point: `streamlit run app.py`, with the pages' heavy imports started beside it.

`streamlit run` has no start-up hook: a first visitor's first run imports torch, timm and the page
modules (seconds on a small CPU) only once the browser has connected and loaded its JavaScript. Here
those imports, and the load of the default model into the shared model cache (`ui.cached_model`),
start in a thread as the server starts, so they overlap the server's start and the browser's page
load. A page that arrives early waits for them rather than doing them twice: Python's import lock
holds back a second import, and Streamlit's per-key compute lock a second load of the same model.

    python -m pages.views.serve [streamlit run options]
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app.py"
_THREAD = "vitviz-warm-up"


def _warm_up() -> None:
    """The first page's imports, then its default model into the shared model cache."""
    from pages.views import explore, ui  # noqa: F401  (torch, timm, Plotly and the library)
    from vitviz.device import available_devices

    try:
        ui.cached_model(ui.DEFAULT_MODEL, "bundled", available_devices()[0])
    except Exception as error:  # the first page says what went wrong, in its own words
        print(
            f"vitviz: the default model was not loaded ahead of the first visitor: {error}", file=sys.stderr
        )


class _QuietWarmUp(logging.Filter):
    """Drops Streamlit's "missing ScriptRunContext" warning for the warm-up thread, which has none by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != _THREAD


# A media file's name is a hash of its bytes, so an image served under one name never changes.
_IMAGE_CACHING = "private, max-age=86400, immutable"


def _cache_media_images() -> None:
    """Lets the browser keep the images Streamlit serves as media files (the maps' photos).

    Streamlit sends its media files with no caching headers, so a chart that points at the same
    photo on every layer step (see `ui.plotly_chart`) would fetch it again each time. Images get
    `Cache-Control: private, max-age=86400, immutable` here; downloads and other media are left
    as they are. Streamlit builds its media routes in one function of its server's app module;
    if a later Streamlit moves it, the app still works and only the caching is lost.
    """
    try:
        from starlette.routing import Route
        from streamlit.web.server.starlette import starlette_app
    except ImportError:
        return
    build_routes = getattr(starlette_app, "create_media_routes", None)
    if build_routes is None or getattr(build_routes, "caches_images", False):
        return

    def cached_routes(*args: object, **kwargs: object) -> list:
        routes = build_routes(*args, **kwargs)
        return [_cached_images(route, Route) for route in routes]

    cached_routes.caches_images = True  # type: ignore[attr-defined]
    starlette_app.create_media_routes = cached_routes


def _cached_images(route: object, route_class: type) -> object:
    if not isinstance(route, route_class) or "GET" not in (route.methods or ()):
        return route
    endpoint = route.endpoint

    async def cached(request: object) -> object:
        response = await endpoint(request)
        if response.status_code == 200 and (response.media_type or "").startswith("image/"):
            response.headers["Cache-Control"] = _IMAGE_CACHING
        return response

    return route_class(route.path, cached, methods=sorted(route.methods), name=route.name)


def main(options: list[str]) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    # app.py navigates with st.navigation; said before any page module is imported, so that importing
    # `pages.views.ui` here never asks for the rerun it makes on a server that has not been told.
    PagesManager.uses_pages_directory = False
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_QuietWarmUp())
    _cache_media_images()
    threading.Thread(target=_warm_up, name=_THREAD, daemon=True).start()

    sys.argv = ["streamlit", "run", str(APP), *options]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
