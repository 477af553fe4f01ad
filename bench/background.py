"""Background work against a visitor: a probe fine-tune started on the Fine-tune page while Explore's
layer slider steps, both in headless Chromium against the app as `make run` serves it.

One server (`make run`'s launcher, headless on loopback, its runs in a fresh folder) and one browser.
Explore opens in one tab; its layer slider is stepped between the last two layers, one press every
`--interval` seconds (or as soon as the previous step's run has ended, if that is later), and each
step's time to the new figure is read on the browser's own clock (`performance.now()`, from the key
press until the figure's title is in the page; see `bench/interactions.py`). The phases:

1. before: `--steps` steps, no background work;
2. during: a second tab opens the Fine-tune page and clicks "Start fine-tuning" with the page's
   defaults (built-in shapes, probe, the default model; `--max-images` fills "Max images" first),
   which is how a visitor starts one: `start_run` in the server, the worker command, its thread
   count and priority. The tab is closed (the run is detached) and Explore steps until the run's
   status.json says it has ended;
3. after: `--steps` steps again, no background work.

The probe's wall time is read from the run's own files, as the Fine-tune page reads them: from
config.json's `created` (written by `start_run`) to the `updated` time of the status.json that says
"finished". While it runs, the worker's `/proc` entry is sampled: OS threads, nice value, CPU seconds.

Usage: `python bench/background.py [--steps 20] [--interval 0.5] [--max-images N] [--no-write]
[--screenshot PNG]`.
The result is printed and written into BENCHMARKS.md between `<!-- background:begin -->` and
`<!-- background:end -->` (with `--max-images`, a development run, it is only printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import cpu_model  # noqa: E402
from bench.interactions import DEADLINE_MS, Browser, explore_title, load_average, write_section  # noqa: E402
from tests.support.browser import open_and_wait, streamlit_app, wait_until_idle  # noqa: E402
from vitviz.runs import CONFIG_FILE, WORKER_PID_FILE, read_status  # noqa: E402

LAYER_SLIDER = 'input[type="range"][aria-label="Layer"]'
LAST_LAYER = 11  # the default model's (bundled DINOv2 ViT-S/14) last layer, where Explore opens
HEAD, SOURCE = "mean of heads", "class token"
RUN_ENDED_QUIET_MS = 200  # no websocket message for this long, and no running indicator: the run is over
PROBE_DEADLINE_S = 600


@dataclass
class Step:
    figure_ms: float  # key press until the new figure's title is in the page
    idle_ms: float | None  # key press until the run's last websocket message


@dataclass
class WorkerSample:
    """The worker process as /proc shows it at one moment."""

    threads: int
    policies: set[str]  # the scheduling policy of each of its threads, e.g. {"SCHED_IDLE"}
    nice: int
    cpu_s: float  # user + system CPU seconds so far
    at: float  # time.time() of the sample


# What status.json's message starts with in each stage of a probe, in order (vitviz.finetune.trainer).
STAGES = {
    "loading": "worker up (Python, torch and timm imported)",
    "features": "first batch of features",
    "epoch": "features done, head epochs",
    "finished": "finished",
}


@dataclass
class Probe:
    folder: Path
    samples: list[WorkerSample] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # stage -> status.json's `updated` when first seen

    def ended(self) -> bool:
        status = read_status(self.folder)
        stage = next((stage for stage in STAGES if status.message.startswith(stage)), None)
        if stage is not None and stage not in self.stages:
            self.stages[stage] = status.updated
        return status.state in {"finished", "failed", "stopped"}

    def sample_worker(self) -> None:
        sample = _worker_sample(self.folder)
        if sample is not None:
            self.samples.append(sample)

    def created(self) -> float:
        return float(json.loads((self.folder / CONFIG_FILE).read_text())["created"])

    def timeline(self) -> str:
        """When each stage was first seen, in seconds after the start (status.json is written ≤ 2×/s)."""
        created = self.created()
        return "; ".join(f"{STAGES[stage]} by {at - created:.1f} s" for stage, at in self.stages.items())

    def wall_s(self) -> float:
        """From `start_run` writing config.json to the status.json that ended the run (its own clock)."""
        return read_status(self.folder).updated - self.created()


POLICIES = {0: "SCHED_OTHER", 1: "SCHED_FIFO", 2: "SCHED_RR", 3: "SCHED_BATCH", 5: "SCHED_IDLE"}


def _stat_fields(path: Path) -> list[str]:
    """A /proc stat line's fields from the state on (field 3): the command name may hold spaces."""
    return path.read_text().rsplit(")", 1)[1].split()


def _worker_sample(folder: Path) -> WorkerSample | None:
    """Threads, their scheduling policies, nice value and CPU seconds of the run's worker, or None
    once it has gone."""
    try:
        pid = int((folder / WORKER_PID_FILE).read_text())
        fields = _stat_fields(Path(f"/proc/{pid}/stat"))
        policies = {
            POLICIES.get(int(_stat_fields(task / "stat")[38]), "other")
            for task in Path(f"/proc/{pid}/task").iterdir()
        }
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return WorkerSample(
        threads=int(fields[17]),
        policies=policies,
        nice=int(fields[16]),
        cpu_s=(int(fields[11]) + int(fields[12])) / ticks,
        at=time.time(),
    )


class Explorer:
    """Explore in the browser's tab, its layer slider stepped between the last two layers."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.page = browser.page
        browser.open(url, explore_title(LAST_LAYER, HEAD, SOURCE))
        self.layer = LAST_LAYER
        self.last_press = 0.0

    def step(self, interval_s: float) -> Step:
        """One press of the arrow key, `interval_s` after the previous one at the earliest."""
        key, target = (
            ("ArrowLeft", LAST_LAYER - 1) if self.layer == LAST_LAYER else ("ArrowRight", LAST_LAYER)
        )
        time.sleep(max(0.0, self.last_press + interval_s - time.monotonic()))
        self.page.evaluate(
            "title => { const vv = window.__vv; vv.frames = []; vv.input = null; vv.figureAt = null;"
            " vv.whenTitle(title, 'figureAt'); }",
            explore_title(target, HEAD, SOURCE),
        )
        self.last_press = time.monotonic()
        self.page.locator(LAYER_SLIDER).press(key)
        self.page.wait_for_function(
            "quiet => { const vv = window.__vv; return vv.figureAt !== null"
            " && performance.now() - (vv.frames.at(-1)?.[0] ?? 0) >= quiet"
            " && !document.querySelector('[data-testid=\"stStatusWidget\"]'); }",
            arg=RUN_ENDED_QUIET_MS,
            polling=50,
            timeout=DEADLINE_MS,
        )
        start, figure, last = self.page.evaluate(
            "() => [window.__vv.input, window.__vv.figureAt, window.__vv.frames.at(-1)?.[0] ?? null]"
        )
        assert start is not None, "the key press did not reach the page"
        self.layer = target
        return Step(figure_ms=figure - start, idle_ms=None if last is None else last - start)


def start_probe_on_page(browser: Browser, url: str, runs: Path, max_images: int | None) -> Probe:
    """Opens the Fine-tune page in a second tab, clicks "Start fine-tuning" with its defaults, closes the tab."""
    page = browser.context.new_page()
    try:
        start = page.get_by_role("button", name="Start fine-tuning")
        open_and_wait(page, f"{url}/finetune", page.get_by_text("5 classes · 300 images", exact=False))
        if max_images is not None:
            limit = page.get_by_label("Max images (0 = all)")
            limit.fill(str(max_images))
            limit.press("Enter")
            page.get_by_text(f"(max images: {max_images} of 300)", exact=False).wait_for(timeout=DEADLINE_MS)
            wait_until_idle(page)
        existing = set(runs.iterdir())
        start.click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = [
                folder for folder in set(runs.iterdir()) - existing if (folder / CONFIG_FILE).is_file()
            ]
            if started:
                return Probe(started[0])
            time.sleep(0.1)
        raise TimeoutError("the Fine-tune page started no run within 60 s")
    finally:
        page.close()


def summary(steps: list[Step]) -> str:
    figures = [step.figure_ms for step in steps]
    if not figures:
        return "no steps"
    p90 = statistics.quantiles(figures, n=10, method="inclusive")[-1] if len(figures) > 1 else figures[0]
    return (
        f"{statistics.median(figures):.0f} ms median, {p90:.0f} ms p90, "
        f"{min(figures):.0f}–{max(figures):.0f} ms over {len(figures)} steps"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps before and after the probe (each)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between key presses, at least")
    parser.add_argument("--max-images", type=int, default=None, help="a shorter probe, for development")
    parser.add_argument("--no-write", action="store_true", help="print the result, leave BENCHMARKS.md alone")
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="a PNG of Explore after 5 steps of the probe"
    )
    arguments = parser.parse_args()

    from playwright.sync_api import sync_playwright

    runs = Path(tempfile.mkdtemp(prefix="vitviz-background-runs-"))
    os.environ["VITVIZ_RUNS_DIR"] = str(runs)  # the server, and so its workers, write runs there
    load_before = load_average()
    phases: dict[str, list[Step]] = {"before": [], "during": [], "after": []}
    with sync_playwright() as playwright, streamlit_app(timeout_s=120) as url:
        browser = Browser(playwright)
        try:
            explorer = Explorer(browser, url)
            for _ in range(2):  # unmeasured: the first steps fill the caches of both layers
                explorer.step(arguments.interval)
            for _ in range(arguments.steps):
                phases["before"].append(explorer.step(arguments.interval))
            print("before:", summary(phases["before"]), flush=True)
            probe = start_probe_on_page(browser, url, runs, arguments.max_images)
            deadline = time.monotonic() + PROBE_DEADLINE_S
            while not probe.ended():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the probe ran past {PROBE_DEADLINE_S} s")
                probe.sample_worker()
                phases["during"].append(explorer.step(arguments.interval))
                if arguments.screenshot is not None and len(phases["during"]) == 5:
                    browser.page.screenshot(path=str(arguments.screenshot), full_page=True)
            print("during:", summary(phases["during"]), flush=True)
            for _ in range(arguments.steps):
                phases["after"].append(explorer.step(arguments.interval))
            print("after:", summary(phases["after"]), flush=True)
        finally:
            browser.close()
    load_after = load_average()

    status = read_status(probe.folder)
    wall_s = probe.wall_s()
    last = probe.samples[-1] if probe.samples else None
    worker = (
        f"the worker ran at nice {last.nice}, {max(s.threads for s in probe.samples)} OS threads at most, "
        f"its threads' scheduling policy at the last sample {', '.join(sorted(last.policies))} (at the first "
        f"{', '.join(sorted(probe.samples[0].policies))}), and had used {last.cpu_s:.1f} CPU seconds by its last sample, {last.at - probe.samples[0].at:.0f} s after "
        "the first"
        if last
        else "the worker was never seen in /proc"
    )
    images = "all 300 images" if arguments.max_images is None else f"--max-images {arguments.max_images}"
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; the server as `make run` starts it (OMP_NUM_THREADS "
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after; Explore's layer slider stepped 11 ↔ 10 every ≥ {arguments.interval} s; "
        "phases in this order: before, during, after.",
        "",
        "| what | measured |",
        "|---|---|",
        f"| probe on `builtin:shapes` ({images}, the page's defaults), start → {status.state} | "
        f"**{wall_s:.1f} s** (target < 30 s: {'met' if wall_s < 30 and status.state == 'finished' else 'missed'}) |",
        f"| layer step → new figure, before the probe | {summary(phases['before'])} |",
        f"| layer step → new figure, during the probe | {summary(phases['during'])} |",
        f"| layer step → new figure, after the probe | {summary(phases['after'])} |",
        "",
        f"The probe ({status.message}): {worker}. Stages, as status.json showed them while Explore "
        f"stepped: {probe.timeline()}.",
    ]
    print("\n".join(lines))
    if not arguments.no_write and arguments.max_images is None:
        write_section("background", lines)


if __name__ == "__main__":
    main()
