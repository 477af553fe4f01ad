"""Every page, opened by a hostile or broken link, answers with a message — never a traceback, never a
server path — and the app keeps serving the next visitor."""

import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.browser import REPO

PAGES = [
    "pages/explore.py",
    "pages/anatomy.py",
    "pages/compare.py",
    "pages/arena.py",
    "pages/finetune.py",
    "pages/present.py",
]

LONG = "x" * 300
HOSTILE_LINKS: dict[str, dict[str, str]] = {
    "non-ASCII digits": {"layer": "²", "head": "٣", "slide": "²", "start": "¹", "patch": "①,②"},
    "huge numbers": {"layer": "9" * 5000, "slide": "9" * 5000, "head": "-" + "9" * 400, "discard": "1e308"},
    "path traversal": {
        "run": "..",
        "model": "../../../etc/passwd",
        "weights": "/etc/passwd",
        "image": "../x",
    },
    "dot run": {"run": ".", "present": "1", "slide": "-1"},
    "very long values": {"model": LONG, "weights": LONG, "run": LONG, "image": LONG, "query": LONG},
    "control characters": {"model": "vit\x00\n", "run": "a/b", "weights": "~/.ssh/id_rsa"},
}

# Anything that would show where the server keeps its files.
_SERVER_PATH = re.compile(r"(/root|/work|/home|/etc/|/usr/|/tmp/|site-packages|\.cache)")


def _texts(app: AppTest) -> list[str]:
    texts = []
    for kind in ("error", "warning", "info", "caption", "markdown", "exception"):
        texts += [str(element.value) for element in app.get(kind)]
    return texts


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("link", list(HOSTILE_LINKS))
def test_a_hostile_link_gives_a_message_not_a_traceback(page, link, tmp_path, monkeypatch):
    monkeypatch.setenv("VITVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("VITVIZ_DATA_ROOT", raising=False)
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=240)
    for name, value in HOSTILE_LINKS[link].items():
        app.query_params[name] = value
    app.switch_page(page)
    app.run()
    assert not app.exception, [element.value for element in app.exception]
    slide_heading = any("<h1" in str(element.value) for element in app.markdown)  # Present draws its own
    assert app.title or slide_heading, "the page stopped before its title"
    # The visitor's own text may be quoted back; anything else that looks like a path is a leak.
    texts = _texts(app)
    for value in HOSTILE_LINKS[link].values():
        texts = [text.replace(repr(value), "").replace(value, "") for text in texts]
    leaked = [text for text in texts if _SERVER_PATH.search(text)]
    assert not leaked, leaked
