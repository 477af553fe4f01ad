"""In a real browser at 1280 and 1440 px wide: no page showing a run with a long name scrolls sideways,
and no figure's text (titles, subtitles, colour-bar titles) runs out of its figure."""

import pytest

from tests.support.browser import open_and_wait, save_screenshot, streamlit_app, wait_until_idle
from tests.support.pairs import hand_made_pair
from tests.support.run_folders import TINY_RUN_CONFIG, hand_made_run

pytestmark = pytest.mark.browser
TIMEOUT_MS = 120_000
WIDTHS = (1280, 1440)
SLIDE_WIDTH = 1440  # Present's slides are laid out for a 1440 × 1000 screen
# The longest name a run may have, as one word: the worst case for wrapping.
LONG_TITLE = "W" * 60

# What the page's document and its own scrolling parts (main area, sidebar) hold beyond their width.
OVERFLOW = """() => {
    const parts = {document: document.documentElement};
    for (const id of ["stMain", "stSidebarContent", "stAppViewContainer"]) {
        const found = document.querySelector(`[data-testid="${id}"]`);
        if (found) parts[id] = found;
    }
    return Object.fromEntries(Object.entries(parts).map(([name, part]) => [name, part.scrollWidth - part.clientWidth]));
}"""

# Each piece of a Plotly figure's text that reaches past any edge of its figure (where the figure's
# SVG cuts it off; a colour bar's upright title runs past the top and bottom): its first 60 characters.
CLIPPED_FIGURE_TEXT = """() => {
    const clipped = [];
    for (const plot of document.querySelectorAll(".js-plotly-plot")) {
        const figure = plot.getBoundingClientRect();
        if (figure.width === 0) continue;
        for (const text of plot.querySelectorAll("svg text")) {
            const box = text.getBoundingClientRect();
            // Upward, a text's box reaches above its glyphs by its font's line gap (3 px measured
            // on a 12-px title hung from the top): 4 px of it are not a cut.
            const outside = box.right > figure.right + 1 || box.left < figure.left - 1
                || box.bottom > figure.bottom + 1 || box.top < figure.top - 4;
            if (box.width > 0 && outside) {
                clipped.push(text.textContent.slice(0, 60));
            }
        }
    }
    return clipped;
}"""


@pytest.fixture(scope="module")
def served_long_run(tmp_path_factory):
    """A server whose runs folder holds one finished run with the longest name a run may have."""
    runs = tmp_path_factory.mktemp("runs")
    run = hand_made_run(runs, config={**TINY_RUN_CONFIG, "title": LONG_TITLE})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITVIZ_RUNS_DIR", str(runs))  # the app below inherits it
        patch.delenv("VITVIZ_DATA_ROOT", raising=False)
        with streamlit_app() as url:
            yield url, run


@pytest.fixture(scope="module")
def served_long_pair(tmp_path_factory):
    """A server whose runs folder holds a trained pair whose two runs have the longest names a run may have."""
    runs = tmp_path_factory.mktemp("pair-runs")
    hand_made_pair(runs, "20250101-000000-pair", 1_700_000_000.0, titles=("V" * 60, "C" * 60))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITVIZ_RUNS_DIR", str(runs))
        patch.delenv("VITVIZ_DATA_ROOT", raising=False)
        with streamlit_app() as url:
            yield url


def assert_fits_at_every_width(page, drawn, name: str, widths: tuple[int, ...] = WIDTHS) -> None:
    """At each width: the page scrolls sideways nowhere and no figure's text runs out of its figure."""
    for width in widths:
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_function(f"() => window.innerWidth === {width}", timeout=10_000)
        wait_until_idle(page)
        drawn.first.wait_for(timeout=TIMEOUT_MS)  # measured on the drawn page, not a blank one
        save_screenshot(page, f"run_overflow_{name}_{width}")
        overflow = page.evaluate(OVERFLOW)
        assert all(extra <= 1 for extra in overflow.values()), f"{name} at {width} px: {overflow}"
        clipped = page.evaluate(CLIPPED_FIGURE_TEXT)
        assert not clipped, f"{name} at {width} px: figure text cut off: {clipped}"


# Each page with the run picked: by a link that names it by its folder name, or else (None) in the
# page's first Model menu; and what shows once the page is drawn with it.
PAGES = {
    "explore": ("/?model={run}", "Weights: fine-tuned run"),
    # Not the first tab: Patches as words fails on timm's test_vit (dynamic image size), a known issue.
    "anatomy": ("/anatomy?tab=Position+embeddings", None),
    "compare": ("/compare", None),
    "finetune": ("/finetune?run={run}", "Run WWWW"),
}


def pick_run_in_the_model_menu(page, label: str) -> None:
    menu = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Model", exact=True)).first
    menu.wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)
    menu.click()
    page.get_by_role("option", name=label).click()
    page.get_by_text("Weights: fine-tuned run").first.wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page)


@pytest.mark.parametrize("name", list(PAGES))
def test_no_page_with_a_long_named_run_overflows_sideways(served_long_run, chromium, name):
    url, run = served_long_run
    path, ready = PAGES[name]
    context = chromium.new_context(viewport={"width": WIDTHS[0], "height": 1000})
    page = context.new_page()
    try:
        if ready is None:
            page.goto(url + path)
            pick_run_in_the_model_menu(page, f"run: {'W' * 31}… (test_vit, probe)")
        else:
            open_and_wait(page, url + path.format(run=run.name), page.get_by_text(ready), TIMEOUT_MS)
        # The run as the page's main area names it: the model's facts line, or the open run's heading.
        drawn = page.locator('[data-testid="stMain"]').get_by_text(
            "Run WWWW" if name == "finetune" else "test_vit · ViT · fine-tuned run WWWW"
        )
        drawn.first.wait_for(timeout=TIMEOUT_MS)
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.first.inner_text()[:2000]
        assert "W" * 33 not in page.inner_text("body")  # the name is cut wherever it is written out
        if name != "finetune":  # the run's own page names its folder in the details; the others need not
            assert run.name not in page.locator('[data-testid="stMain"]').inner_text()
        assert_fits_at_every_width(page, drawn, name)
    finally:
        context.close()


def test_present_s_pair_slide_with_long_named_runs_overflows_nowhere(served_long_pair, chromium):
    context = chromium.new_context(viewport={"width": SLIDE_WIDTH, "height": 1000})
    page = context.new_page()
    try:
        open_and_wait(page, served_long_pair + "/present?slide=7", page.get_by_text("CNN: top 5"), TIMEOUT_MS)
        drawn = page.locator(".js-plotly-plot")
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.first.inner_text()[:2000]
        assert "V" * 33 not in page.inner_text("body") and "C" * 33 not in page.inner_text("body")
        assert_fits_at_every_width(page, drawn, "present_pair", (SLIDE_WIDTH,))
    finally:
        context.close()
