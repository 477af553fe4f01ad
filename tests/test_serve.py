"""`make run`'s launcher: the first page's imports and default model are ready before a visitor asks."""

from pages.views import serve, ui
from vitviz.device import available_devices


def test_the_warm_up_leaves_the_default_model_in_the_shared_cache(monkeypatch):
    ui.cached_model.clear()
    loads = []
    real_load = ui.load_model
    monkeypatch.setattr(ui, "load_model", lambda *args: loads.append(args) or real_load(*args))
    serve._warm_up()
    assert loads == [(ui.DEFAULT_MODEL, "bundled", available_devices()[0])]
    # A first visitor's page asks for the same model: the cache answers, nothing loads again.
    loaded = ui.cached_model(ui.DEFAULT_MODEL, "bundled", available_devices()[0])
    assert len(loads) == 1 and loaded.facts.name == ui.DEFAULT_MODEL and loaded.trained


def test_the_launcher_runs_app_py_with_the_options_it_was_given(monkeypatch):
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    monkeypatch.setattr(PagesManager, "uses_pages_directory", PagesManager.uses_pages_directory)
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
