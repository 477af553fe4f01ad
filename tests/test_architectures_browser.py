"""In a real browser: Compare and Explore offer a Swin (and Compare a GAP-pooled ViT) exactly the methods that work on it; Explore shows MaxViT's and MobileViT's attention layer by layer."""

import pytest

from pages.views.compare import method_label
from tests.support.browser import open_and_wait, save_screenshot, shows_once, text_as_written, wait_until_idle
from vitviz.images import builtin_photo
from vitviz.methods import METHODS, available_methods, explanation_map
from vitviz.models import load_model
from vitviz.preprocess import image_view

pytestmark = pytest.mark.browser
TIMEOUT_MS = 240_000
SWIN, GAP = "swin_tiny_patch4_window7_224", "vit_base_patch16_gap_224"


def _type_model(page, slot: int, name: str) -> None:
    """In the sidebar's "Model N" box: another timm model by name, with random weights."""
    _type_random_model(
        page, page.locator('[data-testid="stExpander"]').filter(has_text=f"Model {slot}"), name
    )
    # The slot's caption in the main column names the model once it has loaded.
    page.get_by_text(f"{slot}. {name}", exact=True).first.wait_for(timeout=TIMEOUT_MS)
    wait_until_idle(page, timeout_s=TIMEOUT_MS / 1000)


def _type_random_model(page, picker, name: str) -> None:
    """In the model picker inside `picker`: "other timm model…", `name` typed, random weights chosen."""
    picker.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Model", exact=True)).click()
    page.get_by_role("option", name="other timm model…").click()
    wait_until_idle(page)
    box = picker.get_by_label("timm model or run name")
    box.fill(name)
    box.press("Enter")
    wait_until_idle(page, timeout_s=TIMEOUT_MS / 1000)
    weights = picker.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text("Weights", exact=True)
    )
    weights.wait_for(timeout=TIMEOUT_MS)
    weights.click()
    page.get_by_role("option", name="random (untrained)").click()


def _offered_methods(page, name: str) -> list[str]:
    """The options of the "Method for NAME" menu, read by opening it."""
    menu = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text(f"Method for {name}", exact=True)
    )
    menu.wait_for(timeout=TIMEOUT_MS)
    menu.click()
    page.get_by_role("option").first.wait_for(timeout=TIMEOUT_MS)
    # Read in one go: an option list read item by item can change under the reader.
    options = [text.strip() for text in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    page.get_by_role("option").first.wait_for(state="detached", timeout=TIMEOUT_MS)
    wait_until_idle(page)
    return options


def test_compare_offers_a_swin_and_a_gap_vit_exactly_the_methods_that_work(app_url, page):
    page.set_viewport_size({"width": 1440, "height": 2000})
    open_and_wait(page, f"{app_url}/compare", page.get_by_text("Predictions", exact=True), TIMEOUT_MS)
    _type_model(page, 1, SWIN)
    _type_model(page, 2, GAP)
    for name in (SWIN, GAP):
        expected = [method_label(method) for method in available_methods(load_model(name, "random").facts)]
        offered = _offered_methods(page, name)
        assert sorted(offered) == sorted(expected), (name, offered)
    assert "Attention rollout" not in _offered_methods(page, SWIN)  # windows, not global attention
    assert "Chefer et al. relevance" in _offered_methods(page, GAP)  # through the pooled patches
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "compare_swin_and_gap_vit")


def test_explore_picked_swin_shows_its_window_attention_and_why_not_rollout(app_url, page):
    page.set_viewport_size({"width": 1440, "height": 2000})
    open_and_wait(
        page, app_url, text_as_written(page, "cat (chelsea): 16 × 16 grid (rows × columns)"), TIMEOUT_MS
    )
    _type_random_model(page, page.locator('[data-testid="stSidebar"]'), SWIN)
    facts = load_model(SWIN, "random").facts
    refusal = METHODS["rollout"].unavailable_reason(facts)
    assert refusal is not None
    shows_once(page, f"Not shown: {refusal}", TIMEOUT_MS)
    # The map's title says what it was read from, as its caption does.
    source = "window block 0: attention received inside 7×7 windows on its 56×56 grid"
    page.locator('[data-testid="stPlotlyChart"]', has_text=source).wait_for(timeout=TIMEOUT_MS)
    shows_once(page, f"Read from {source}, mean of queries and heads.", TIMEOUT_MS)
    wait_until_idle(page, timeout_s=TIMEOUT_MS / 1000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "model=swin_tiny_patch4_window7_224" in page.url and "weights=random" in page.url
    save_screenshot(page, "explore_swin_window_attention")


@pytest.mark.parametrize(
    ("model", "heading"),
    [
        ("maxvit_rmlp_pico_rw_256", "Raw attention, window by window and grid by grid"),
        ("mobilevit_xxs", "Raw attention, folded back onto each block's map"),
    ],
)
def test_explore_by_link_shows_maxvit_and_mobilevit_attention_on_each_layers_own_map(
    app_url, page, model, heading
):
    page.set_viewport_size({"width": 1440, "height": 2000})
    open_and_wait(
        page, f"{app_url}/?model={model}&weights=random", page.get_by_text(heading, exact=True), TIMEOUT_MS
    )
    facts = load_model(model, "random").facts
    shows_once(page, f"Not shown: {METHODS['rollout'].unavailable_reason(facts)}", TIMEOUT_MS)
    first = explain_layer(model, 0)
    # The map's title names the layer (its source wrapped on lines below), the caption the whole source.
    page.locator('[data-testid="stPlotlyChart"]', has_text=first.split(":")[0]).wait_for(timeout=TIMEOUT_MS)
    shows_once(page, f"Read from {first}.", TIMEOUT_MS)
    # The next layer: MaxViT's grid attention of the same block, MobileViT's next transformer layer.
    picker = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.get_by_text("Attention layer", exact=True)
    )
    picker.click()
    page.get_by_role("option").nth(1).click()
    second = explain_layer(model, 1)
    page.locator('[data-testid="stPlotlyChart"]', has_text=second.split(":")[0]).wait_for(timeout=TIMEOUT_MS)
    shows_once(page, f"Read from {second}.", TIMEOUT_MS)
    wait_until_idle(page, timeout_s=TIMEOUT_MS / 1000)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, f"explore_{model}_own_grid_attention")


def explain_layer(model: str, layer: int) -> str:
    """What the page's raw attention map of that layer is read from, as the library says it."""
    loaded = load_model(model, "random")
    view = image_view(builtin_photo("cat (chelsea)"), loaded.facts)
    return explanation_map(loaded, view, "attention", layer=layer).source
