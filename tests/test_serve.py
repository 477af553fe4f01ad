"""`make run`'s launcher: the first page's imports and default model are ready before a visitor asks,
and the photos it serves as media files are kept by the browser."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from starlette.requests import Request
from streamlit.runtime.media_file_storage import MediaFileKind
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.web.server.starlette import starlette_app

from pages.views import serve, ui
from pages.views.ui import caches
from vitviz.device import available_devices


def test_the_warm_up_leaves_the_default_model_in_the_shared_cache(monkeypatch):
    ui.shared_models().clear()
    loads = []
    real_load = caches.load_model
    monkeypatch.setattr(caches, "load_model", lambda *args: loads.append(args) or real_load(*args))
    serve._warm_up()
    assert loads == [(ui.DEFAULT_MODEL, "bundled", available_devices()[0])]
    # A first visitor's page asks for the same model: the cache answers, nothing loads again.
    loaded = ui.cached_model(ui.DEFAULT_MODEL, "bundled", available_devices()[0])
    assert len(loads) == 1 and loaded.facts.name == ui.DEFAULT_MODEL and loaded.trained


def test_the_launcher_runs_app_py_with_the_options_it_was_given(monkeypatch):
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    monkeypatch.setattr(PagesManager, "uses_pages_directory", PagesManager.uses_pages_directory)
    monkeypatch.setattr(starlette_app, "create_media_routes", starlette_app.create_media_routes)
    seen = {}
    monkeypatch.setattr(
        serve.threading, "Thread", lambda **kwargs: type("T", (), {"start": lambda self: None})()
    )
    monkeypatch.setattr(cli, "main", lambda: seen.setdefault("argv", list(serve.sys.argv)))
    monkeypatch.setattr(serve.sys, "argv", ["serve"])
    serve.main(["--server.port=8999"])
    assert seen["argv"] == ["streamlit", "run", str(serve.APP), "--server.port=8999"]
    assert serve.APP.name == "app.py" and serve.APP.exists()
    assert PagesManager.uses_pages_directory is False  # app.py's navigation, before any page imports ui


def _get(route, file_id: str):
    path = f"/media/{file_id}"
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "path_params": {"file_id": file_id},
    }
    # In a thread of its own: the suite's browser tests may leave an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, route.endpoint(Request(scope))).result()


def test_media_images_may_be_cached_by_the_browser_and_downloads_may_not(monkeypatch):
    monkeypatch.setattr(starlette_app, "create_media_routes", starlette_app.create_media_routes)
    serve._cache_media_images()
    serve._cache_media_images()  # a second call does not wrap twice
    storage = MemoryMediaFileStorage("/media")
    photo = storage.load_and_get_id(b"\xff\xd8 a photo", "image/jpeg", MediaFileKind.MEDIA)
    table = storage.load_and_get_id(b"a,b\n1,2\n", "text/csv", MediaFileKind.DOWNLOADABLE, "map.csv")
    routes = starlette_app.create_media_routes(storage, None)
    (route,) = [route for route in routes if "GET" in (route.methods or ())]
    served = _get(route, photo + ".jpg")
    assert served.status_code == 200 and served.body == b"\xff\xd8 a photo"
    # The name is a hash of the bytes: the same name always means the same photo.
    assert served.headers["Cache-Control"] == "private, max-age=86400, immutable"
    download = _get(route, table + ".csv")
    assert download.status_code == 200 and "Cache-Control" not in download.headers
    assert "attachment" in download.headers["Content-Disposition"]
