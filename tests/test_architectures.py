"""Every registered method on every family of timm architecture: a map that says something, or a refusal that says why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.architectures import ARCHITECTURES, build_architecture, textured_input
from vitviz.maths.rollout import attention_rollout, embed_class_attention
from vitviz.methods import (
    METHOD_NAMES,
    METHODS,
    ExplanationResult,
    MethodUnavailableError,
    available_methods,
    default_method,
)
from vitviz.methods.cam_library import LibraryCAM
from vitviz.methods.gradcam import GradCAM
from vitviz.models import LoadedModel

# (family, where the attention lives, what the head reads), as each model's modules say.
EXPECTED_FACTS: dict[str, tuple[str, str, str]] = {
    "vit": ("vit", "global", "token"),
    "deit_distilled": ("vit", "global", "token"),
    "registers": ("vit", "global", "token"),
    "clip": ("vit", "global", "token"),
    "siglip": ("vit", "global", "map"),
    "gap": ("vit", "global", "avg"),
    "eva": ("vit", "global", "avg"),
    "beit": ("vit", "global", "avg"),
    "flexivit": ("vit", "global", "token"),
    "cait": ("vit", "class-attention", "token"),
    "xcit": ("vit", "cross-covariance", "token"),
    "swin": ("hierarchical", "windowed", "avg"),
    "levit": ("hierarchical", "staged", "avg"),
    "pit": ("hierarchical", "staged", "token"),
    "mobilevit": ("conv-attention", "unfolded", "avg"),
    "fastvit": ("conv-attention", "staged", "avg"),
    "maxvit": ("conv-attention", "block-grid", "avg"),
    "hybrid_s16": ("hybrid", "global", "token"),
    "hybrid_r26": ("hybrid", "global", "token"),
    "resnet": ("cnn", "none", "avg"),
    "efficientnet": ("cnn", "none", "avg"),
    "convnext": ("cnn", "none", "avg"),
}
# The maps read from attention each family is offered: rollout needs one grid of global attention
# (or CaiT's class-attention rows over one); raw attention also reads Swin's, MaxViT's and MobileViT's
# layers on their own feature maps. Staged attention (LeViT, PiT, FastViT) and CNNs get neither.
ATTENTION_MAPS: dict[str, set[str]] = {
    **{key: {"rollout", "attention"} for key in EXPECTED_FACTS if EXPECTED_FACTS[key][1] == "global"},
    "cait": {"rollout", "attention"},
    "xcit": {"attention"},
    "swin": {"attention"},
    "maxvit": {"attention"},
    "mobilevit": {"attention"},
    **{key: set() for key in ("levit", "pit", "fastvit", "resnet", "efficientnet", "convnext")},
}
# Options that keep the sampling and per-channel methods quick on these tiny builds.
QUICK_OPTIONS = {"steps": 4, "samples": 4, "batch_size": 128, "perturbations_per_eval": 64}

_built: dict[str, LoadedModel] = {}


def flat_at_random_initialisation(key: str, method: str) -> bool:
    """The pairs whose map is flat on these random weights, each for a measured reason.

    - LeViT, every CAM: its downsampling attention has no residual and averages near-identical
      tokens, so every token of its last stage is the same (spread 0.0 measured).
    - MaxViT, FEM: the map of its random last stage (4×4) comes out flat (measured).
    """
    if key == "levit":
        return issubclass(METHODS[method], GradCAM | LibraryCAM)
    return (key, method) == ("maxvit", "fem")


def architecture(key: str) -> LoadedModel:
    """Each architecture built once per test session (module-level: parametrised tests share it)."""
    if key not in _built:
        _built[key] = build_architecture(key)
    return _built[key]


def test_every_family_of_the_issue_is_covered():
    assert set(EXPECTED_FACTS) == set(ARCHITECTURES) and len(ARCHITECTURES) >= 20


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_facts_say_what_the_model_really_is(key):
    facts = architecture(key).facts
    assert (facts.family, facts.attention, facts.head_pool) == EXPECTED_FACTS[key]
    if facts.attention != "none":  # a model with attention is never called a CNN
        assert facts.family != "cnn" and "CNN" not in facts.family_words.split(" (")[0]
        assert facts.num_heads > 0
    if facts.family in ("vit", "hybrid"):
        assert facts.grid_size is not None and facts.stage_grids == (facts.grid_size,)
        assert len(facts.prefix_tokens) == facts.num_prefix_tokens
    else:
        assert facts.grid_size is None and len(facts.stage_grids) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_a_listed_method_gives_a_finite_varying_map_and_any_other_is_refused_with_its_reason(key, method):
    loaded = architecture(key)
    facts = loaded.facts
    pixels = textured_input(*facts.input_size)
    reason = METHODS[method].unavailable_reason(facts)
    if method not in available_methods(facts):
        assert reason, f"{method} is not offered for {key} but gives no reason"
        assert facts.name in reason
        if facts.attention != "none":  # a refusal never calls a model with attention a CNN
            assert "is a CNN" not in reason
        with pytest.raises(MethodUnavailableError) as refused:
            METHODS[method](loaded, **QUICK_OPTIONS).explain(pixels)
        assert str(refused.value) == reason
        return
    assert reason is None
    result = METHODS[method](loaded, **QUICK_OPTIONS).explain(pixels)[0]
    assert np.isfinite(result.values).all()
    if flat_at_random_initialisation(key, method):
        # Flat for a reason of the random weights, not of the method: reported, never drawn.
        assert result.constant and result.constant_note and not result.normalised().any()
        return
    assert not result.constant, f"{method} on {key}: {result.constant_note}"
    assert result.grid_size[0] * result.grid_size[1] > 1


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_each_family_is_offered_exactly_the_attention_maps_that_read_its_attention(key):
    offered = set(available_methods(architecture(key).facts)) & {"rollout", "attention"}
    assert offered == ATTENTION_MAPS[key]


def test_cait_and_xcit_count_their_token_layers_and_class_attention_layers_apart():
    # The builds: CaiT with depth 2 and 1 class-attention layer, XCiT with depth 2 and its 2.
    assert (
        architecture("cait").facts.depth_words
        == "2 self-attention layers + 1 class-attention layer × 4 heads"
    )
    assert (
        architecture("xcit").facts.depth_words
        == "2 cross-covariance layers + 2 class-attention layers × 4 heads"
    )
    assert architecture("vit").facts.depth_words == "2 layers × 3 heads"
    assert (
        architecture("cait").facts.num_layers == 3
        and architecture("cait").facts.num_class_attention_layers == 1
    )


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_the_default_method_is_one_the_model_offers(key):
    facts = architecture(key).facts
    assert default_method(facts) in available_methods(facts)


# --- The answers given instead of a refusal, checked against numbers worked out here ----------


def test_class_attention_rollout_multiplies_the_self_attention_layers_then_the_class_row():
    # One self-attention layer A over 3 patches, then one class-attention row a over [class, patches]:
    # rollout's class row over the patches is 0.5 · a_patches @ (0.5 · I + 0.5 · A).
    generator = torch.Generator().manual_seed(0)
    self_attention = torch.rand(1, 1, 3, 3, generator=generator)
    self_attention = self_attention / self_attention.sum(dim=-1, keepdim=True)
    class_row = torch.tensor([[[[0.1, 0.2, 0.3, 0.4]]]])
    layers = embed_class_attention([self_attention], [class_row], num_prefix_tokens=1)
    rollout = attention_rollout(layers, num_prefix_tokens=1)
    expected = 0.5 * class_row[0, 0, 0, 1:] @ (0.5 * torch.eye(3) + 0.5 * self_attention[0, 0])
    torch.testing.assert_close(rollout[0, 0, 1:], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(1, 4), atol=1e-6, rtol=0)


def test_swin_raw_attention_is_each_window_assembled_onto_the_first_stage_grid():
    loaded = architecture("swin")
    result = METHODS["attention"](loaded).explain(textured_input(*loaded.facts.input_size))[0]
    assert result.grid_size == loaded.facts.stage_grids[0] == (28, 28)
    # Every 7×7 window's cells hold the attention its tokens receive, averaged over its queries: sum 1.
    windows = result.values.reshape(4, 7, 4, 7).sum(axis=(1, 3))
    np.testing.assert_allclose(windows, np.ones((4, 4)), atol=1e-5)
    assert "7×7 windows" in result.source


def test_refusals_name_what_the_model_is_and_what_the_method_needs():
    swin = architecture("swin").facts
    reason = METHODS["rollout"].unavailable_reason(swin)
    assert "global attention between every pair of tokens" in reason and "inside local windows" in reason
    assert "Raw attention shows its attention window by window instead" in reason
    maxvit = architecture("maxvit").facts
    reason = METHODS["rollout"].unavailable_reason(maxvit)
    assert "across a dilated grid" in reason and "window and grid attention on each layer's own" in reason
    mobilevit = architecture("mobilevit").facts
    reason = METHODS["rollout"].unavailable_reason(mobilevit)
    assert (
        "each pixel position inside a patch" in reason and "folded back onto each MobileViT block" in reason
    )
    # FastViT's attention is staged: nothing reads it on its own grid, and raw attention says so.
    fastvit = architecture("fastvit").facts
    assert fastvit.partitioned_layers == 0
    assert "global attention between every pair of tokens" in METHODS["attention"].unavailable_reason(fastvit)
    pit = architecture("pit").facts
    assert "class token alone" in METHODS["gradcam"].unavailable_reason(pit)
    levit = architecture("levit").facts
    assert levit.family_words.startswith("hierarchical transformer") and levit.num_heads > 0
    assert architecture("maxvit").facts.family_words == "convolution–attention hybrid"


def test_a_constant_map_is_reported_and_never_drawn_as_maximum_relevance():
    flat = ExplanationResult(
        np.full((3, 3), 0.25, np.float32), "chefer", 1, "x", (16.0, 16.0), (48, 48), "", False
    )
    assert flat.constant and "the same value (0.25) everywhere" in flat.constant_note
    assert not flat.normalised().any()
    zero = ExplanationResult(
        np.zeros((2, 2), np.float32), "gradcam", 1, "x", (16.0, 16.0), (32, 32), "", False
    )
    assert zero.constant and "all zero" in zero.constant_note
    varied = ExplanationResult(
        np.eye(2, dtype=np.float32), "gradcam", 1, "x", (16.0, 16.0), (32, 32), "", False
    )
    assert not varied.constant and varied.constant_note is None and varied.normalised().max() == 1.0


def test_a_nearly_flat_map_is_drawn_with_a_note_saying_how_small_its_differences_are():
    base = dict(
        method="rollout",
        target_index=None,
        target_label=None,
        stride_px=(16.0, 16.0),
        input_size=(32, 32),
        source="blocks",
        trained=False,
    )
    flat = ExplanationResult(values=np.array([[1.0, 1.02], [1.03, 1.0]], dtype=np.float32), **base)
    assert not flat.constant and flat.nearly_flat
    assert flat.note == flat.flat_note and "at most 2.9% of the largest value" in flat.flat_note
    contrasted = ExplanationResult(values=np.array([[0.2, 1.0], [0.5, 0.1]], dtype=np.float32), **base)
    assert not contrasted.nearly_flat and contrasted.note is None
    zero = ExplanationResult(values=np.zeros((2, 2), dtype=np.float32), **base)
    assert not zero.nearly_flat and zero.note == zero.constant_note
    assert zero.note.startswith("rollout: constant — no information")


def test_a_class_attention_layer_out_of_range_is_named_as_asked():
    loaded = architecture("cait")  # one class-attention layer
    pixels = textured_input(*loaded.facts.input_size)
    with pytest.raises(ValueError, match=r"^class-attention layer -2 outside -1\.\.0$"):
        METHODS["attention"](loaded, layer=-2).explain(pixels)
    assert (
        METHODS["attention"](loaded, layer=-1).explain(pixels)[0].source
        == "class-attention layer 0, mean of heads"
    )
