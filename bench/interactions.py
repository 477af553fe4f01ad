"""How fast the app answers a visitor: headless Chromium against `streamlit run`, one row per interaction.

Each repetition starts a fresh server (the flags of `make run`, headless on loopback) and drives one
browser through Explore (cold start, layer step, head, a patch click, a new built-in photo, warm
reload), Present (Next, warm) and Compare (cold, warm by reload, warm through the app's
navigation). For every interaction it measures, on the browser's own clock (`performance.now()`):

- to the new figure: from the input event (key or pointer down; the navigation for page loads) until
  the figure that shows the change is in the page (a MutationObserver sees its title);
- until idle: from the same input until the last websocket message of the run (Streamlit's "script
  finished"), i.e. the running indicator could go;
- sent: bytes of the websocket frames the browser received for the interaction (CDP's
  `Network.webSocketFrameReceived`), plus the media files (the maps' photos) it fetched from the
  server for it (`Network.loadingFinished`; a photo taken from the browser's cache adds nothing).

- server's runs: the server's own time for the interaction, measured inside it (the launcher
  wrapped by `bench/timed_serve.py`): every script run it caused (a fragment's rerun alone, or the
  whole page), Streamlit's post-run collection included; and that time against one plain forward
  of the model shown, measured in a fresh process.

Cold start adds where its time goes: server start until healthy, the JavaScript fetched (files,
bytes, when the last one arrived) and, in a separate fresh process, the import of the page modules
and the model load.

Usage: `python bench/interactions.py [--quick] [--repetitions N] [--no-post-script-gc] [--no-write]`.
The table is printed and written into BENCHMARKS.md between the two marker comments of its section
(replacing the table there); `--no-post-script-gc` serves with `runner.postScriptGC = false` and writes
its own section, so both can be compared.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import cpu_model  # noqa: E402
from bench.timed_serve import RUN_TIMES  # noqa: E402
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, click_data_point, streamlit_app  # noqa: E402

DEADLINE_MS = 240_000
QUIET_S = 1.0  # no websocket message for this long, and no running indicator: the run is over
PHOTOS = ["coffee", "astronaut", "rocket", "motorcycle", "china", "flower", "camera (greyscale)"]
GRID_CLICK = (5, 9)  # the patch clicked (row, col)

# Installed in every document before the app's own scripts: timestamps every websocket message and
# every key or pointer press, and records when a figure title containing localStorage's
# "vv-nav-title" first appears after a navigation (for page loads, where no input event exists).
PROBE = """
(() => {
  const vv = window.__vv = {input: null, frames: [], figureAt: null, navigationAt: null};
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => { vv.input = performance.now(); }, true);
  }
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        const data = event.data;
        vv.frames.push([performance.now(), data.byteLength ?? data.size ?? data.length]);
      });
    }
  };
  const titles = () => Array.from(document.querySelectorAll(".gtitle, .annotation-text, h1.vv-title"), (node) => node.textContent);
  vv.whenTitle = (wanted, slot) => {
    const check = () => {
      if (vv[slot] === null && titles().some((text) => text.includes(wanted))) {
        vv[slot] = performance.now();
        return true;
      }
      return false;
    };
    if (check()) return;
    const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
    observer.observe(document, {subtree: true, childList: true, characterData: true});
  };
  const wanted = localStorage.getItem("vv-nav-title");
  if (wanted) vv.whenTitle(wanted, "navigationAt");
})();
"""


@dataclass
class Sample:
    figure_ms: float | None = None
    idle_ms: float | None = None
    sent_bytes: int | None = None
    server_ms: float | None = (
        None  # the server's script runs for the interaction, post-run collection included
    )
    notes: dict[str, float] = field(default_factory=dict)


@dataclass
class Rows:
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, row: str, sample: Sample) -> None:
        self.samples.setdefault(row, []).append(sample)
        print(f"  {row}: {_describe(sample)}", flush=True)


def _describe(sample: Sample) -> str:
    parts = []
    if sample.figure_ms is not None:
        parts.append(f"figure {sample.figure_ms:.0f} ms")
    if sample.idle_ms is not None:
        parts.append(f"idle {sample.idle_ms:.0f} ms")
    if sample.sent_bytes is not None:
        parts.append(f"{sample.sent_bytes / 1000:.0f} KB")
    if sample.server_ms is not None:
        parts.append(f"server {sample.server_ms:.0f} ms")
    parts += [f"{name} {value:.0f}" for name, value in sample.notes.items()]
    return ", ".join(parts)


# The server and the browser --------------------------------------------------------------------


class ServerRuns:
    """The server's own record of its script runs (`bench/timed_serve.py`): kind and seconds of each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def _lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []

    def mark(self) -> None:
        self.seen = len(self._lines())

    def since_mark_ms(self) -> float | None:
        """Milliseconds of all runs that ended since `mark()`; None if there was none."""
        runs = self._lines()[self.seen :]
        return sum(float(line.split()[2]) for line in runs) * 1000 if runs else None


@contextmanager
def serve(post_script_gc: bool, run_times: Path):
    """`make run`'s launcher with every script run timed, headless on a free loopback port.

    Yields (url, started, healthy): `time.perf_counter()` when the process was started and when
    its health endpoint first answered (polled every 0.2 s).
    """
    os.environ["STREAMLIT_RUNNER_POST_SCRIPT_GC"] = "true" if post_script_gc else "false"
    os.environ[RUN_TIMES] = str(run_times)
    started = time.perf_counter()
    with streamlit_app(timeout_s=120, launcher="bench.timed_serve") as url:
        yield url, started, time.perf_counter()


class Browser:
    """One Chromium page with the probe installed and CDP counting the websocket bytes received."""

    def __init__(self, playwright) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(viewport={"width": 1500, "height": 1400})
        self.context.add_init_script(PROBE)
        self.page = self.context.new_page()
        self.page.set_default_timeout(DEADLINE_MS)
        self.received = 0
        self.runs: ServerRuns | None = None
        self._media_requests: set[str] = set()
        cdp = self.context.new_cdp_session(self.page)
        cdp.on("Network.webSocketFrameReceived", self._count)
        cdp.on("Network.requestWillBeSent", self._note_media)
        cdp.on("Network.loadingFinished", self._count_media)
        cdp.send("Network.enable")

    def _count(self, event: dict) -> None:
        response = event["response"]
        payload = response.get("payloadData", "")
        # Binary frames (opcode 2) arrive base64-encoded; text frames as they are.
        self.received += len(base64.b64decode(payload)) if response.get("opcode") == 2 else len(payload)

    def _note_media(self, event: dict) -> None:
        if urlparse(event["request"]["url"]).path.startswith("/media/"):
            self._media_requests.add(event["requestId"])

    def _count_media(self, event: dict) -> None:
        """A photo served as a media file counts too; one the browser took from its cache adds 0 bytes."""
        if event["requestId"] in self._media_requests:
            self.received += int(event.get("encodedDataLength", 0))

    def close(self) -> None:
        self.browser.close()

    def open(self, url: str, wanted_title: str) -> Sample:
        """Navigates to `url` and measures until a figure titled `wanted_title` is drawn."""
        self.expect_title_after_navigation(url, wanted_title)
        self._start_counting()
        self.page.goto(url, wait_until="commit")
        return self._after_navigation()

    def reload(self, wanted_title: str) -> Sample:
        self._start_counting()
        self.page.evaluate("title => localStorage.setItem('vv-nav-title', title)", wanted_title)
        self.page.reload(wait_until="commit")
        return self._after_navigation()

    def expect_title_after_navigation(self, url: str, wanted_title: str) -> None:
        # localStorage belongs to the origin: set it from a cheap page of the same server.
        health = _health(url)
        if not self.page.url.startswith(health.removesuffix("/_stcore/health")):
            self.page.goto(health)
        self.page.evaluate("title => localStorage.setItem('vv-nav-title', title)", wanted_title)

    def _after_navigation(self) -> Sample:
        self.page.wait_for_function(
            "() => window.__vv && window.__vv.navigationAt !== null", timeout=DEADLINE_MS
        )
        self._wait_until_idle()
        figure = self.page.evaluate("() => window.__vv.navigationAt")
        sample = Sample(figure_ms=figure, idle_ms=self._last_frame(), sent_bytes=self.received)
        sample.server_ms = self.runs.since_mark_ms() if self.runs else None
        self.page.evaluate("() => localStorage.removeItem('vv-nav-title')")
        return sample

    def interact(self, action, wanted_title: str) -> Sample:
        """Runs `action` (a key or pointer press) and measures until a figure titled `wanted_title`."""
        self.page.evaluate(
            "title => { const vv = window.__vv; vv.frames = []; vv.input = null; vv.figureAt = null;"
            " vv.whenTitle(title, 'figureAt'); }",
            wanted_title,
        )
        self._start_counting()
        action()
        self.page.wait_for_function("() => window.__vv.figureAt !== null", timeout=DEADLINE_MS)
        self._wait_until_idle()
        start, figure = self.page.evaluate("() => [window.__vv.input, window.__vv.figureAt]")
        assert start is not None, "the action pressed no key and no pointer"
        last = self._last_frame()
        return Sample(
            figure_ms=figure - start,
            idle_ms=None if last is None else last - start,
            sent_bytes=self.received,
            server_ms=self.runs.since_mark_ms() if self.runs else None,
        )

    def _start_counting(self) -> None:
        self.received = 0
        if self.runs:
            self.runs.mark()

    def _last_frame(self) -> float | None:
        frames = self.page.evaluate("() => window.__vv.frames")
        return frames[-1][0] if frames else None

    def _wait_until_idle(self) -> None:
        """No websocket message for QUIET_S and no running indicator, with a deadline."""
        deadline = time.monotonic() + DEADLINE_MS / 1000
        while time.monotonic() < deadline:
            quiet_ms, running = self.page.evaluate(
                "() => [performance.now() - (window.__vv.frames.at(-1)?.[0] ?? 0),"
                " document.querySelector('[data-testid=\"stStatusWidget\"]') !== null]"
            )
            if quiet_ms >= QUIET_S * 1000 and not running:
                return
            time.sleep(0.1)
        raise TimeoutError("the app kept running past the deadline")

    def javascript(self) -> dict[str, float]:
        """The JavaScript this document fetched: files, kilobytes, when the last one had arrived (ms)."""
        return self.page.evaluate(
            """() => {
                const scripts = performance.getEntriesByType("resource").filter((entry) => entry.name.endsWith(".js"));
                return {
                    "js files": scripts.length,
                    "js KB": scripts.reduce((sum, entry) => sum + entry.encodedBodySize, 0) / 1000,
                    "last js ms": Math.max(0, ...scripts.map((entry) => entry.responseEnd)),
                    "plotly js ms": scripts.find((entry) => entry.name.includes("PlotlyChart"))?.responseEnd ?? 0,
                };
            }"""
        )


def _health(url: str) -> str:
    scheme, _, host = url.split("/", 3)[:3]
    return f"{scheme}//{host}/_stcore/health"


# One repetition ------------------------------------------------------------------------------


def explore_title(layer: int, head: str, source: str) -> str:
    return f"Layer {layer}, {head}: attention from {source}"


def one_repetition(playwright, rows: Rows, repetition: int, post_script_gc: bool) -> None:
    browser = Browser(playwright)
    try:
        run_times = Path(tempfile.mkdtemp()) / "runs.txt"
        with serve(post_script_gc, run_times) as (url, started, healthy):
            browser.runs = ServerRuns(run_times)
            page = browser.page
            browser.expect_title_after_navigation(url, explore_title(11, "mean of heads", "class token"))
            before_goto = time.perf_counter()
            cold = browser.open(url, explore_title(11, "mean of heads", "class token"))
            offset_ms = (before_goto - started) * 1000
            first_message = page.evaluate("() => window.__vv.frames[0]?.[0] ?? 0")
            cold.notes = {"healthy ms": (healthy - started) * 1000, **browser.javascript()}
            cold.notes["last js ms"] += offset_ms
            cold.notes["plotly js ms"] += offset_ms
            cold.notes["first message ms"] = first_message + offset_ms
            cold.figure_ms = (cold.figure_ms or 0) + offset_ms
            cold.idle_ms = None
            rows.add("Explore: cold start (server start → first map)", cold)

            layer = page.locator('input[type="range"][aria-label="Layer"]')
            layer.focus()
            rows.add(
                "Explore: layer slider one step",
                browser.interact(
                    lambda: layer.press("ArrowLeft"), explore_title(10, "mean of heads", "class token")
                ),
            )

            def pick_head() -> None:
                page.locator(".st-key-explore_head").click()
                page.get_by_role("option", name="head 3", exact=True).click()

            rows.add("Explore: head", browser.interact(pick_head, explore_title(10, "head 3", "class token")))

            grid = page.locator('[data-testid="stPlotlyChart"]', has_text="patches of").locator(
                ".js-plotly-plot"
            )
            row, col = GRID_CLICK
            rows.add(
                "Explore: click a patch",
                browser.interact(
                    lambda: click_data_point(page, grid, (col + 0.5) * 14 - 0.5, (row + 0.5) * 14 - 0.5),
                    f"attention from patch ({row}, {col})",
                ),
            )

            photo = PHOTOS[repetition % len(PHOTOS)]

            def pick_photo() -> None:
                page.locator(".st-key-explore_photo").click()
                page.get_by_role("option", name=photo, exact=True).click()

            rows.add("Explore: new built-in photo", browser.interact(pick_photo, f"{photo}: 16×16 patches"))
            rows.add(
                "Explore: warm reload",
                browser.reload("attention from"),
            )

            present(browser, url, rows)
            rows.add("Compare: default page, cold", browser.open(f"{url}/compare", "Grad-CAM ·"))
            rows.add("Compare: default page, warm", browser.reload("Grad-CAM ·"))
            # As a visitor gets there: from another page, through the app's navigation (no reload).
            sidebar = page.locator('[data-testid="stSidebarNav"]')
            browser.interact(lambda: sidebar.get_by_role("link", name="Explore").click(), "attention from")
            rows.add(
                "Compare: warm, through the app's navigation",
                browser.interact(lambda: sidebar.get_by_role("link", name="Compare").click(), "Grad-CAM ·"),
            )
    finally:
        browser.close()


def present(browser: Browser, url: str, rows: Rows) -> None:
    """Present's Next from the first slide to the second, after one unmeasured pass warmed both."""
    from tests.support.slides import SLIDE_TITLES

    page = browser.page
    browser.open(f"{url}/present", SLIDE_TITLES[0])
    next_button = page.locator(".st-key-present_next").get_by_role("button")
    previous_button = page.locator(".st-key-present_previous").get_by_role("button")
    browser.interact(next_button.click, SLIDE_TITLES[1])
    browser.interact(previous_button.click, SLIDE_TITLES[0])
    rows.add("Present: Next slide (warm)", browser.interact(next_button.click, "16×16 patches of 14 px"))


# Where the cold start goes, in a fresh process ---------------------------------------------------

BREAKDOWN = """
import time
start = time.perf_counter()
import streamlit
streamlit_s = time.perf_counter() - start
import torch, timm
torch_s = time.perf_counter() - start - streamlit_s
import pages.views.explore
pages_s = time.perf_counter() - start - streamlit_s - torch_s
from vitviz.models import load_model
loaded_at = time.perf_counter()
loaded = load_model("vit_small_patch14_dinov2", "bundled", "cpu")
load_s = time.perf_counter() - loaded_at
from vitviz.images import builtin_photo
from vitviz.preprocess import image_view
pixels = image_view(builtin_photo("cat (chelsea)"), loaded.facts).tensor
forwards = []
with torch.inference_mode():
    for _ in range(12):
        started = time.perf_counter()
        loaded.model(pixels)
        forwards.append(time.perf_counter() - started)
forward_s = sorted(forwards[2:])[5]
print(f"{streamlit_s:.3f} {torch_s:.3f} {pages_s:.3f} {load_s:.3f} {forward_s:.4f}")
"""


def cold_breakdown() -> dict[str, float]:
    """Seconds to import streamlit, torch + timm, the Explore page's modules, to load the model, and of
    one plain forward of it on the default photo (the upper median of 10, after 2 to warm up)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    output = subprocess.run(
        [sys.executable, "-c", BREAKDOWN], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    names = [
        "import streamlit",
        "import torch + timm",
        "import the page modules",
        "load the model",
        "plain forward",
    ]
    return dict(zip(names, (float(value) for value in output[-5:]), strict=True))


# The table -----------------------------------------------------------------------------------


def _statistic(values: list[float], unit: str, scale: float = 1.0) -> str:
    values = [value / scale for value in values]
    median = statistics.median(values)
    digits = 1 if unit == "s" else 0
    text = f"{median:,.{digits}f} {unit}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text


def table(rows: Rows, forward_ms: float) -> list[str]:
    lines = [
        "| interaction | to the new figure | until idle | sent per interaction | server's runs | "
        "server ÷ plain forward |",
        "|---|---|---|---|---|---|",
    ]
    for row, samples in rows.samples.items():
        cold = "cold start" in row or "cold" in row
        cells = []
        for name in ("figure_ms", "idle_ms"):
            values = [getattr(sample, name) for sample in samples if getattr(sample, name) is not None]
            cells.append(
                _statistic(values, "s", 1000)
                if cold and values
                else _statistic(values, "ms")
                if values
                else ""
            )
        sent = [sample.sent_bytes for sample in samples if sample.sent_bytes is not None]
        cells.append(_statistic(sent, "KB", 1000) if sent else "")
        server = [sample.server_ms for sample in samples if sample.server_ms is not None]
        cells.append(_statistic(server, "ms") if server else "")
        cells.append(f"{statistics.median(server) / forward_ms:.2f}×" if server and not cold else "")
        lines.append(f"| {row} | {' | '.join(cells)} |")
    return lines


def cold_notes(rows: Rows) -> list[str]:
    samples = rows.samples.get("Explore: cold start (server start → first map)", [])
    if not samples:
        return []
    notes = {name: statistics.median(sample.notes[name] for sample in samples) for name in samples[0].notes}
    return [
        f"Cold start, medians: the server answered its health check after {notes['healthy ms'] / 1000:.1f} s; "
        f"the browser fetched {notes['js files']:.0f} JavaScript files ({notes['js KB']:,.0f} KB), "
        f"the last {notes['last js ms'] / 1000:.1f} s after the server started (Plotly's chunk at "
        f"{notes['plotly js ms'] / 1000:.1f} s); the app's first message "
        f"(its script running) arrived at {notes['first message ms'] / 1000:.1f} s."
    ]


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument(
        "--no-post-script-gc",
        action="store_true",
        help="serve with runner.postScriptGC = false (the full collection after each run switched off)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    arguments = parser.parse_args()
    repetitions = arguments.repetitions or (2 if arguments.quick else 5)
    post_script_gc = not arguments.no_post_script_gc

    from playwright.sync_api import sync_playwright

    load_before = load_average()
    breakdown = cold_breakdown()
    forward_ms = breakdown["plain forward"] * 1000
    print("cold start pieces (fresh process):", {name: f"{value:.2f} s" for name, value in breakdown.items()})
    rows = Rows()
    with sync_playwright() as playwright:
        for repetition in range(repetitions):
            print(f"repetition {repetition + 1} of {repetitions}", flush=True)
            one_repetition(playwright, rows, repetition, post_script_gc)
    load_after = load_average()

    gc_words = "on (Streamlit's default)" if post_script_gc else "off (`runner.postScriptGC = false`)"
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, OMP_NUM_THREADS "
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; post-run collection {gc_words}; "
        f"medians of {repetitions} (range in brackets), each repetition on a freshly started server; "
        f"1-minute load average {load_before:.2f} before, {load_after:.2f} after.",
        "",
        *table(rows, forward_ms),
        "",
        *cold_notes(rows),
        "In a fresh process: "
        + ", ".join(f"{name} {value:.1f} s" for name, value in breakdown.items() if name != "plain forward")
        + f"; one plain forward of the model shown (bundled DINOv2, 224 px, the default photo) {forward_ms:.1f} ms.",
        "The server's runs are timed inside the server (`bench/timed_serve.py`): every script run the "
        "interaction caused, a fragment's rerun or the whole page, with Streamlit's post-run collection.",
    ]
    print("\n".join(lines))
    if not arguments.no_write:
        marker = "interactions" if post_script_gc else "interactions-no-post-script-gc"
        write_section(marker, lines)


def write_section(marker: str, lines: list[str]) -> None:
    """Replaces the text between `<!-- marker:begin -->` and `<!-- marker:end -->` in BENCHMARKS.md."""
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"wrote the table into {path.name} ({marker})")


if __name__ == "__main__":
    main()
