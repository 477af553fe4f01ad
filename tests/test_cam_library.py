"""pytorch-grad-cam's CAMs in the registry: the model's own grid, hooks only on the tap, agreement, ROAD."""

import threading

import numpy as np
import pytest
import pytorch_grad_cam.base_cam
import torch
from torch import nn

from tests.support.interventions import (
    dinov2_probe_run,
    noise_picture,
    run_command,
    saved_picture,
    shape_picture,
)
from tests.support.methods_helpers import frozen_loaded, fused_flags, hook_counts, parameters_untouched
from vitviz.capture import LayerTap
from vitviz.methods import (
    METHOD_NAMES,
    MethodUnavailableError,
    available_methods,
    explain_pixels,
)
from vitviz.methods.cam_library import LIBRARY_CAMS, LibraryGradCAM, LibraryGradCAMPlusPlus
from vitviz.methods.faithfulness import road, road_rows
from vitviz.models import load_model
from vitviz.preprocess import explanation_tensor

FAMILIES = ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular", "cnn"]
LIBRARY_NAMES = [method.name for method in LIBRARY_CAMS]
CLASS_AGNOSTIC = {"eigencam", "kpca-cam", "fem"}
# Small inputs: Score-CAM and Ablation-CAM run one forward per channel (512 for ResNet-18).
CNN_INPUT = (1, 3, 64, 64)


def classifier(tiny_models, key: str):
    return frozen_loaded(tiny_models[key], key, num_classes=10 if key == "registers" else None)


def pixels_for(loaded, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if loaded.facts.family == "cnn":
        return torch.randn(*CNN_INPUT, generator=generator)
    return torch.randn(1, 3, *loaded.facts.input_size, generator=generator)


def test_every_library_cam_is_in_the_one_registry():
    assert set(LIBRARY_NAMES) <= set(METHOD_NAMES)
    assert {"hirescam", "scorecam", "xgradcam", "eigencam", "layercam", "ablationcam"} <= set(LIBRARY_NAMES)
    assert {"gradcam-elementwise", "eigengradcam", "fullgrad"} <= set(LIBRARY_NAMES)
    assert "library-gradcam" not in METHOD_NAMES  # the reference copies are not offered twice


@pytest.mark.parametrize("key", FAMILIES)
def test_each_cam_is_read_on_the_models_own_grid_and_leaves_the_model_as_it_was(tiny_models, key):
    loaded = classifier(tiny_models, key)
    facts = loaded.facts
    pixels = pixels_for(loaded)
    # ViTs: the token grid from grid_size and num_prefix_tokens (3×4 for the 48×64 model, 5
    # prefix tokens for the register model); hybrids: the CNN stem's map; CNNs: the last features.
    expected = {"hybrid": (24, 24), "cnn": (2, 2)}.get(key, facts.grid_size)
    before = (hook_counts(loaded.model), fused_flags(loaded.model))
    for name in LIBRARY_NAMES:
        if name not in available_methods(facts):
            assert name == "fullgrad" and facts.family != "cnn"
            continue
        result = explain_pixels(loaded, pixels, name, batch_size=128)[0]
        shape = expected if name != "fullgrad" else (2, 2)
        assert result.values.shape == shape, name
        assert np.isfinite(result.values).all() and result.values.min() >= 0.0 and result.values.max() <= 1.0
        assert (result.target_index is None) == (name in CLASS_AGNOSTIC), name
    assert (hook_counts(loaded.model), fused_flags(loaded.model)) == before
    assert parameters_untouched(loaded.model)


def test_the_library_hooks_only_the_tap_never_the_shared_model(tiny_models, monkeypatch):
    loaded = classifier(tiny_models, "vit")
    hooked: list[nn.Module] = []
    original = pytorch_grad_cam.base_cam.ActivationsAndGradients

    def recording(model, target_layers, *args, **kwargs):
        hooked.extend(target_layers)
        return original(model, target_layers, *args, **kwargs)

    monkeypatch.setattr(pytorch_grad_cam.base_cam, "ActivationsAndGradients", recording)
    for name in ("hirescam", "ablationcam", "eigencam"):
        explain_pixels(loaded, pixels_for(loaded), name, [3], batch_size=256)
    shared = {id(module) for module in loaded.model.modules()}
    assert hooked and not any(id(module) in shared for module in hooked)


def test_an_explicit_class_is_explained_and_each_image_of_a_batch_gets_its_own(tiny_models):
    loaded = classifier(tiny_models, "deit_distilled")
    pixels = torch.cat([pixels_for(loaded, 0), pixels_for(loaded, 1)])
    first, second = explain_pixels(loaded, pixels, "layercam", [7, 2])
    assert (first.target_index, second.target_index) == (7, 2)
    alone = explain_pixels(loaded, pixels[1:], "layercam", [2])[0]
    np.testing.assert_allclose(second.values, alone.values, atol=1e-5)


def test_hooks_are_removed_when_the_forward_raises(tiny_models):
    loaded = classifier(tiny_models, "vit")
    for name in ("hirescam", "scorecam"):
        with pytest.raises((AssertionError, RuntimeError)):
            explain_pixels(loaded, torch.randn(1, 3, 40, 40), name, [0])
        assert hook_counts(loaded.model) == (0, 0, 0, 0)


def test_a_tap_routes_only_the_entering_threads_forwards(tiny_models):
    loaded = classifier(tiny_models, "vit")
    model = loaded.model
    pixels = pixels_for(loaded)
    with torch.no_grad():
        clean = model(pixels)
    routed: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []

    def double(tensor: torch.Tensor) -> torch.Tensor:
        routed.append(tensor)
        return tensor * 2

    def plain_forward() -> None:
        with torch.no_grad():
            seen.append(model(pixels))

    with LayerTap(model, model.blocks[0], double):
        with torch.no_grad():
            inside = model(pixels)
        other = threading.Thread(target=plain_forward)
        other.start()
        other.join(timeout=60)
    assert len(routed) == 1 and torch.equal(seen[0], clean) and not torch.allclose(inside, clean)
    assert hook_counts(model) == (0, 0, 0, 0)


def test_fullgrad_needs_plain_biased_layers_and_says_so(tiny_models):
    efficientnet_like = frozen_loaded(tiny_models["cnn"], "resnet")
    assert explain_pixels(efficientnet_like, pixels_for(efficientnet_like), "fullgrad")[0].values.shape == (
        2,
        2,
    )
    import timm

    lite = frozen_loaded(timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), "lite0")
    with pytest.raises(MethodUnavailableError, match="no plain Conv2d / BatchNorm2d layer with a bias"):
        explain_pixels(lite, torch.randn(*CNN_INPUT), "fullgrad")
    assert hook_counts(lite.model) == (0, 0, 0, 0)


def test_class_agnostic_cams_explain_a_model_without_a_head(tiny_models):
    headless = frozen_loaded(tiny_models["registers"], "dinov2")  # DINOv2 style: no classifier
    offered = set(available_methods(headless.facts))
    assert offered >= CLASS_AGNOSTIC and "hirescam" not in offered
    result = explain_pixels(headless, pixels_for(headless), "eigencam")[0]
    assert result.values.shape == headless.facts.grid_size and result.target_index is None


# --- ROAD ---------------------------------------------------------------------------------------


def test_road_gives_probabilities_per_removed_fraction_and_keeps_the_random_state(tiny_models):
    loaded = classifier(tiny_models, "vit")
    image = noise_picture()
    state = torch.get_rng_state()
    first, second = road(loaded, image, ["gradcam", "eigencam"], percentiles=(80, 20, 50))
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_allclose(first.removed, [0.2, 0.5, 0.8])
    for result in (first, second):
        for curve in (result.most_relevant_first, result.least_relevant_first):
            assert curve.shape == (3,) and ((curve >= 0.0) & (curve <= 1.0)).all()
        assert result.score == pytest.approx(
            np.mean(result.least_relevant_first - result.most_relevant_first) / 2
        )
    again = road(loaded, image, ["gradcam"], percentiles=(80, 20, 50))[0]
    np.testing.assert_array_equal(again.most_relevant_first, first.most_relevant_first)
    assert [row["method"] for row in road_rows([first, second])] == ["Grad-CAM", "EigenCAM"]
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        road(loaded, image, ["gradcam"], percentiles=(0, 50))


# --- Real weights: the bundled EfficientNet-Lite0 and a probe on the bundled DINOv2 ------------


@pytest.fixture(scope="module")
def efficientnet():
    return load_model("tf_efficientnet_lite0", "bundled")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hirescam", "gradcam-elementwise", "xgradcam", "layercam", "eigencam"])
def test_efficientnet_cams_on_the_cat_lie_on_the_cat(efficientnet, method):
    """As for vitviz's Grad-CAM: on the whole photo (the centre crop holds only the cat), columns 1–4
    of the 7×7 map hold the cat's face and column 6 is background."""
    from vitviz.images import builtin_photo

    whole = explanation_tensor(builtin_photo("cat (chelsea)"), efficientnet.facts, "whole")
    result = explain_pixels(efficientnet, whole, method)[0]
    values = result.normalised()
    cat, background = values[:, 1:5].mean(), values[:, 6].mean()
    assert cat > 2 * background, (method, cat, background)
    assert hook_counts(efficientnet.model) == (0, 0, 0, 0) and parameters_untouched(efficientnet.model)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mine", "library"), [("gradcam", LibraryGradCAM), ("gradcam++", LibraryGradCAMPlusPlus)]
)
def test_hand_written_cams_agree_with_the_librarys_on_real_weights(efficientnet, mine, library):
    """The condition for keeping vitviz's own Grad-CAM and Grad-CAM++: Pearson r ≥ 0.99 with the
    library's on the bundled EfficientNet (cat) and on a ViT (the DINOv2 probe, a star)."""
    from vitviz.images import builtin_photo

    probe = load_model(str(dinov2_probe_run()))
    for loaded, image in ((efficientnet, builtin_photo("cat (chelsea)")), (probe, shape_picture("star"))):
        pixels = explanation_tensor(image, loaded.facts)
        own = explain_pixels(loaded, pixels, mine)[0]
        theirs = library(loaded).explain(pixels)[0]
        assert own.target_index == theirs.target_index and own.values.shape == theirs.values.shape
        r = np.corrcoef(own.values.ravel(), theirs.values.ravel())[0, 1]
        assert r >= 0.99, (loaded.facts.name, mine, r)


@pytest.mark.slow
def test_efficientnet_gradcam_is_faithful_by_road_on_the_coffee(efficientnet):
    """Imputing the pixels Grad-CAM ranks highest lowers the espresso probability more than
    imputing the lowest-ranked ones."""
    from vitviz.images import builtin_photo

    (result,) = road(efficientnet, builtin_photo("coffee"), ["gradcam"], percentiles=(25, 50, 75))
    assert result.target_index == 967  # espresso
    assert result.least_relevant_first.mean() > result.most_relevant_first.mean(), result
    assert result.score > 0


# --- The command line takes its choices from the registry ---------------------------------------

NEW_METHODS = [*LIBRARY_NAMES, "saliency", "smoothgrad", "gradient-shap"]


@pytest.mark.parametrize("method", NEW_METHODS)
def test_explain_saves_a_map_for_every_new_method(tmp_path, method):
    picture = saved_picture(noise_picture(), tmp_path)
    out = tmp_path / "map.npy"
    # timm's own test models (160 px, 64 / 96 channels): Score-CAM and Ablation-CAM stay quick.
    model = "test_resnet" if method == "fullgrad" else "test_vit"
    status, text, stderr = run_command(
        "explain", picture, "--model", model, "--weights", "random", "--method", method, "--out", str(out)
    )
    assert status == 0, stderr
    saved = np.load(out)
    assert saved.shape == ((5, 5) if model == "test_resnet" else (10, 10)) and np.isfinite(saved).all()
    assert text.startswith(f"saved {method} map")
