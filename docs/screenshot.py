"""Makes the README's screenshot, docs/explore.png, from the app as it is now (`make docs` runs it).

The app is served as `make run` serves it (its launcher, with .streamlit/config.toml: no Deploy
button), on loopback with the hub switched off and a runs folder of its own; headless Debian
Chromium opens Explore on the built-in cat, waits for the rollout map, and photographs the page
from the top down to the rollout.

    .venv/bin/python docs/screenshot.py [--out docs/explore.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, open_and_wait, streamlit_app  # noqa: E402

DEADLINE_MS = 240_000
VIEWPORT = {"width": 1400, "height": 2400}  # tall: Streamlit scrolls inside its own frame
READY = "Rollout of layers"  # the rollout map's title: the last figure of the page's first screen


def make_screenshot(out: Path) -> Path:
    """Serves the app, opens Explore, and saves the page down to the end of the rollout map."""
    from playwright.sync_api import sync_playwright

    os.environ["VITVIZ_RUNS_DIR"] = tempfile.mkdtemp(prefix="vitviz-docs-runs-")
    with streamlit_app(timeout_s=120) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        open_and_wait(page, url, page.get_by_text(READY), DEADLINE_MS, quiet_s=2.0)
        errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        if errors.count():
            raise SystemExit(f"the page shows an error, not saved: {errors.first.inner_text()[:300]}")
        rollout = page.locator('[data-testid="stPlotlyChart"]', has_text=READY).last
        bottom = rollout.bounding_box()
        height = int(bottom["y"] + bottom["height"]) + 8
        out.parent.mkdir(parents=True, exist_ok=True)
        clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
        page.screenshot(path=str(out), clip=clip)
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "explore.png")
    print(make_screenshot(parser.parse_args().out))


if __name__ == "__main__":
    main()
