"""Real-browser helpers: `streamlit run` on loopback and headless Debian Chromium via Playwright."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Chromium's own network chatter is refused on closed machines; these flags keep it quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_app(timeout_s: float = 60.0, launcher: str = "pages.views.serve") -> Iterator[str]:
    """Runs the app as `make run` does, on a free loopback port; yields its URL; stops it afterwards.

    `launcher` is the module run with `python -m` (a benchmark may wrap `make run`'s own).
    """
    with served_on_loopback([sys.executable, "-m", launcher], cwd=REPO, timeout_s=timeout_s) as url:
        yield url


@contextmanager
def served_on_loopback(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> Iterator[str]:
    """Runs `command` (anything that ends in `streamlit run`'s options) headless on a free loopback
    port, in `cwd`, with `env` (default: this process's, the hub switched off); yields the URL once
    the server is healthy; stops it afterwards."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"} if env is None else env
    command = [
        *command,
        "--server.headless=true", "--server.address=127.0.0.1", f"--server.port={port}",
        "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if process.poll() is not None:  # it ended: its output says why (a live one's pipe would block)
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"streamlit did not become healthy:\n{output[-2000:]}")
        return False

    try:
        wait_for(healthy, timeout_s, "streamlit to become healthy", interval_s=0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def page_pause(page) -> Callable[[float], None]:
    """A pause for `wait_for` that lets the page's events run meanwhile (`time.sleep` would block them)."""
    return lambda seconds: page.wait_for_timeout(seconds * 1000)


def wait_until_quiet(page, busy: Callable[[], bool], timeout_s: float, quiet_s: float, failure: str) -> None:
    """Polls `busy` every 0.1 s until it has said False for `quiet_s` seconds in a row.

    Raises:
        TimeoutError: "`failure` for longer than the deadline", when `timeout_s` passes first.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        if busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        page.wait_for_timeout(100)
    raise TimeoutError(f"{failure} for longer than the deadline")


def wait_until_idle(page, timeout_s: float = 120.0, quiet_s: float = 0.8) -> None:
    """Waits until the app has stopped running its script (the status widget stays hidden)."""

    def running() -> bool:
        return any(
            page.locator(f'[data-testid="{test_id}"]').count() > 0
            for test_id in ("stStatusWidget", "stSkeleton")
        )

    wait_until_quiet(page, running, timeout_s, quiet_s, "the app kept running")


def open_and_wait(page, url: str, ready, timeout_ms: int = 120_000, quiet_s: float = 0.8) -> None:
    """Opens `url`, waits with a deadline for the `ready` locator to show, then for the run to end.

    Right after a navigation the page can be quiet before its first run has drawn anything, so
    quiet alone proves nothing: a named element of the finished page does. A page that redraws a
    live fragment every second needs a `quiet_s` shorter than that.
    """
    page.goto(url)
    ready.first.wait_for(timeout=timeout_ms)
    wait_until_idle(page, timeout_s=timeout_ms / 1000, quiet_s=quiet_s)


def reload_and_wait(page, ready, timeout_ms: int = 120_000, quiet_s: float = 0.8) -> None:
    """Reloads the page and waits as `open_and_wait` does."""
    page.reload()
    ready.first.wait_for(timeout=timeout_ms)
    wait_until_idle(page, timeout_s=timeout_ms / 1000, quiet_s=quiet_s)


def save_screenshot(page, name: str, element=None) -> Path:
    """A full-page screenshot (or one of `element`, scrolled into view) under artifacts/; also copied to
    $VITVIZ_SCREENSHOTS when that is set. An element shot shows what a full page misses where Streamlit
    scrolls inside the page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if element is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        element.scroll_into_view_if_needed()
        element.screenshot(path=str(path))
    folder = os.environ.get("VITVIZ_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        shutil.copy(path, os.path.join(folder, path.name))
    return path


def click_data_point(page, chart, x: float, y: float) -> None:
    """Clicks a Plotly chart at data coordinates (x, y), placed by Plotly's own axis mapping."""
    offset = chart.evaluate(
        """(gd, [x, y]) => {
            const layout = gd._fullLayout;
            return [layout.xaxis._offset + layout.xaxis.l2p(x), layout.yaxis._offset + layout.yaxis.l2p(y)];
        }""",
        [x, y],
    )
    box = chart.bounding_box()
    page.mouse.move(box["x"] + offset[0], box["y"] + offset[1])
    page.mouse.click(box["x"] + offset[0], box["y"] + offset[1])


def text_as_written(scope, text: str):
    """The elements of `scope` (a page or locator) showing `text`, also where a figure title's line
    was broken inside it: the app fits titles to their charts (`vitviz.figures.titles`), and Plotly
    draws each line apart, a zero-width space between them, the broken space gone."""
    pattern = "".join(r"[\s\u200b]*" if char == " " else re.escape(char) + "\u200b?" for char in text)
    return scope.get_by_text(re.compile(pattern))


def open_tab(page, label: str, expected_text: str, timeout_ms: int = 120_000) -> None:
    """Opens a tab and waits for a text that only that tab's finished run shows."""
    page.get_by_role("tab", name=label).click()
    text_as_written(page, expected_text).first.wait_for(timeout=timeout_ms)
    wait_until_idle(page)


def shows_once(page, text: str, timeout_ms: int = 30_000) -> None:
    """Waits until `text` is on the page, and asserts it is there once (Plotly draws titles late)."""
    text_as_written(page, text).first.wait_for(timeout=timeout_ms)
    assert text_as_written(page, text).count() == 1, f"{text!r} is on the page more than once"
