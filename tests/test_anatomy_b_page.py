"""AppTest of the Anatomy page's views 5–9 on every model family, with and without the untrained twin."""

import pytest
import safetensors.torch
import timm
import torch
from streamlit.testing.v1 import AppTest

from tests.support.anatomy_apptest import figure_titles, open_anatomy, open_tab, page_texts

TABS_B = ("Resolution", "Hybrid stem", "Token norms", "All heads", "Queries & keys")
TIMEOUT_S = 240


def _open(at: AppTest, tab: str) -> AppTest:
    """Opens a tab; views 5-9 must also show no error message."""
    open_tab(at, tab)
    assert not at.error, [e.value for e in at.error]
    return at


def _anatomy(model: str | None = None, weights: str | None = None, path: str | None = None) -> AppTest:
    return open_anatomy(model, weights, path, timeout_s=TIMEOUT_S)


def _has_title(at: AppTest, fragment: str) -> bool:
    return any(fragment in title for title in figure_titles(at))


@pytest.fixture(scope="module")
def hybrid_checkpoint(tmp_path_factory) -> str:
    """Seeded tiny hybrid weights saved as a file: "trained" weights, so the twin has something to differ from."""
    path = tmp_path_factory.mktemp("checkpoints") / "vit_tiny_r_s16_p8_224.safetensors"
    torch.manual_seed(1)
    safetensors.torch.save_file(timm.create_model("vit_tiny_r_s16_p8_224").state_dict(), str(path))
    return str(path)


def test_bundled_dinov2_shows_all_five_views():
    at = _anatomy()
    assert [tab.label for tab in at.tabs][-5:] == list(TABS_B)

    _open(at, "Resolution")
    at.select_slider(key="anatomy_b_resolution_size").set_value("336×336").run()
    texts = page_texts(at)
    assert "16×16 = 256 patches + 1 prefix = **257 tokens**" in texts
    assert "24×24 = 576 patches + 1 prefix = **577 tokens**" in texts
    assert _has_title(at, "Position embedding interpolated (24×24, 3 PCs)")
    assert _has_title(at, "336×336 px: rollout, 12 layers")
    assert "no classifier head" in texts

    _open(at, "Hybrid stem")
    assert "is a plain ViT" in page_texts(at)

    _open(at, "Token norms")
    assert "No patch exceeds 2× the median norm" in page_texts(at)
    assert _has_title(at, "Patch-token norm, before final norm")
    at.radio(key="anatomy_b_norms_place").set_value("after the final norm (forward_features output)").run()
    assert not at.exception
    assert _has_title(at, "Patch-token norm, after final norm")

    _open(at, "All heads")
    assert _has_title(at, "All heads: attention from class token")
    assert _has_title(at, "Layer 11, head 0: attention from class token")

    _open(at, "Queries & keys")
    assert _has_title(at, "Layer 11, head 0: 257 queries and 257 keys (PCA)")
    assert "reproduces the model's attention of this head" in page_texts(at)


def test_all_heads_follow_the_chosen_head_and_clicked_patch():
    at = _anatomy()
    _open(at, "All heads")
    at.session_state["anatomy_b_heads_selected"] = (2, 4)
    at.session_state["anatomy_b_heads_patch"] = (5, 9)
    at.radio(key="anatomy_b_heads_query").set_value("clicked patch").run()
    assert not at.exception
    assert _has_title(at, "All heads: attention from patch (5, 9)")
    assert _has_title(at, "Layer 2, head 4: attention from patch (5, 9)")


def test_dinov2_with_its_untrained_twin_labels_every_random_view():
    at = _anatomy()
    at.toggle(key="anatomy_compare_random").set_value(True)
    at.session_state["anatomy_b_resolution_size"] = "168×168"  # small, so the twin runs quickly too
    for tab in TABS_B:
        _open(at, tab)
        if tab == "Hybrid stem":
            continue
        assert any("random (untrained)" in title for title in figure_titles(at)), tab
        assert [element.value for element in at.subheader][-2:] == ["bundled (offline)", "random (untrained)"]
    at.toggle(key="anatomy_compare_random").set_value(False)
    _open(at, "Queries & keys")
    assert not any("random (untrained)" in title for title in figure_titles(at))


def test_tiny_random_vit_shows_every_view_and_t_sne():
    at = _anatomy("vit_tiny_patch16_224", "random")
    _open(at, "Resolution")
    assert "14×14 = 196 patches + 1 prefix = **197 tokens**" in page_texts(at)
    for tab in TABS_B[1:]:
        _open(at, tab)
    at.radio(key="anatomy_b_qk_method").set_value("t-SNE (slower)").run()
    assert not at.exception
    assert _has_title(at, "197 queries and 197 keys (t-SNE (slower))")
    assert "only neighbourhoods mean something" in page_texts(at)


def test_hybrid_stem_with_its_untrained_twin(hybrid_checkpoint):
    at = _anatomy("vit_tiny_r_s16_p8_224", path=hybrid_checkpoint)
    at.toggle(key="anatomy_compare_random").set_value(True)
    _open(at, "Hybrid stem")
    texts = page_texts(at)
    # 224 px → stem ÷4 → 56×56 cells → 8×8-cell patches → 7×7 tokens, 32 px apart.
    assert "**64×56×56** feature map" in texts
    assert "`Conv2d(64 → 192, kernel 8×8, stride 8×8)`" in texts
    assert "**7×7 = 49 tokens** of width 192" in texts
    assert "**32×32 input px**" in texts
    assert _has_title(at, "Stem output: mean and the 6 most varying channels · random (untrained)")
    for tab in ("Resolution", "Token norms", "All heads", "Queries & keys"):
        _open(at, tab)


def test_a_cnn_gets_a_note_in_every_view():
    at = _anatomy("tf_efficientnet_lite0", "bundled")
    for tab in TABS_B:
        _open(at, tab)
        assert "tf_efficientnet_lite0 is a CNN" in page_texts(at), tab
