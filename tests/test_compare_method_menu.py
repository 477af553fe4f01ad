"""Compare's method menu offers exactly the methods the library lists for the model: Swin and a GAP ViT."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.architectures import build_architecture
from vitviz.methods import available_methods, default_method


def _menu_script(key: str) -> None:
    """The page's own method picker on one tiny architecture (run by AppTest in its own script)."""
    from pages.views.compare import ModelSlot, method_picker
    from pages.views.ui import ModelChoice
    from tests.support.architectures import ARCHITECTURES, build_architecture

    loaded = build_architecture(key)
    method_picker(ModelSlot(1, ModelChoice(ARCHITECTURES[key][0], "random", "cpu"), loaded, None))


@pytest.mark.parametrize("key", ["swin", "gap"])
def test_the_menu_offers_exactly_what_the_library_lists_and_opens_on_its_default(key):
    at = AppTest.from_function(_menu_script, kwargs={"key": key}, default_timeout=120).run()
    assert not at.exception
    facts = build_architecture(key).facts
    box = at.selectbox(key="compare_1_method")
    assert list(box.options) and len(box.options) == len(available_methods(facts))
    assert box.value == default_method(facts)
    if key == "swin":  # window attention is offered; rollout, which needs global attention, is not
        assert box.value == "attention"
        assert not any("rollout" in option.lower() for option in box.options)
    else:
        assert box.value == "rollout"
