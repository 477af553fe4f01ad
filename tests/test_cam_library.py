"""pytorch-grad-cam's CAMs in the registry: the model's own grid, hooks only on the tap, agreement, ROAD."""

import threading

import numpy as np
import pytest
import pytorch_grad_cam.base_cam
import torch
from torch import nn

from tests.support.floats import assert_same_up_to_float32_rounding
from tests.support.interventions import (
    dinov2_probe_run,
    noise_picture,
    run_command,
    saved_picture,
    shape_picture,
)
from tests.support.methods_helpers import (
    frozen_loaded,
    fused_flags,
    hand_made_loaded,
    hook_counts,
    parameters_untouched,
)
from vitviz.capture import LayerTap
from vitviz.methods import (
    METHOD_NAMES,
    available_methods,
    explain_pixels,
)
from vitviz.methods.cam_library import LIBRARY_CAMS, LibraryGradCAM, LibraryGradCAMPlusPlus
from vitviz.methods.faithfulness import road, road_rows
from vitviz.models import load_model
from vitviz.preprocess import image_view

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
    assert len(routed) == 1 and not torch.allclose(inside, clean)
    assert_same_up_to_float32_rounding(seen[0], clean)  # the other thread was not routed
    assert hook_counts(model) == (0, 0, 0, 0)


def _norm_act_cnn(fused: bool) -> nn.Module:
    """conv → norm → ReLU6 twice, then pooled logits: with timm's fused `BatchNormAct2d` or as plain layers."""
    from timm.layers import BatchNormAct2d

    def norm_act(channels: int) -> list[nn.Module]:
        if fused:
            return [BatchNormAct2d(channels, act_layer=nn.ReLU6)]
        return [nn.BatchNorm2d(channels), nn.ReLU6()]

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        *norm_act(8),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        *norm_act(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    for module in model.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_fullgrad_reads_fused_norm_activation_biases_before_the_activation():
    """On timm's fused BatchNormAct2d the map equals the library's own FullGrad on the same network built
    from plain BatchNorm2d + ReLU6 (which its exact-type search does find)."""
    from pytorch_grad_cam import FullGrad

    from vitviz.methods.cam_library import bias_layers

    fused, plain = _norm_act_cnn(fused=True), _norm_act_cnn(fused=False)
    plain.load_state_dict(dict(zip(plain.state_dict(), fused.state_dict().values(), strict=True)))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused(pixels), plain(pixels))
    assert len(bias_layers(fused)) == 2 and all(
        isinstance(hooked, nn.Identity) for hooked, _ in bias_layers(fused)
    )
    cam = FullGrad(model=plain, target_layers=[])
    try:
        expected = cam(pixels.clone(), None)  # (2, 32, 32) per pixel, each image's top class
    finally:
        cam.activations_and_grads.release()
    loaded = hand_made_loaded(fused, (32, 32), num_classes=5)
    results = explain_pixels(loaded, pixels, "fullgrad")
    for result, per_pixel in zip(results, expected, strict=True):
        cells = torch.from_numpy(per_pixel).reshape(1, 1, 32, 1, 32).mean(dim=(2, 4))[0]  # one 32-px cell
        np.testing.assert_allclose(result.values, cells.numpy(), rtol=1e-4, atol=1e-6)
    assert hook_counts(fused) == (0, 0, 0, 0) and parameters_untouched(fused)
    assert results[0].source == "input and 2 bias layers, mean per 32×32 px cell"


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_channel_by_channel_cams_print_no_progress_bar(tiny_models, method, capfd):
    """The library wraps their channel batches in tqdm, which drew a bar on stderr for every map."""
    loaded = classifier(tiny_models, "vit")
    explain_pixels(loaded, pixels_for(loaded), method, batch_size=4)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_class_agnostic_cams_explain_a_model_without_a_head(tiny_models):
    headless = frozen_loaded(tiny_models["registers"], "dinov2")  # DINOv2 style: no classifier
    offered = set(available_methods(headless.facts))
    assert offered >= CLASS_AGNOSTIC and "hirescam" not in offered
    result = explain_pixels(headless, pixels_for(headless), "eigencam")[0]
    assert result.values.shape == headless.facts.grid_size and result.target_index is None


# --- ROAD ---------------------------------------------------------------------------------------


def test_road_gives_probabilities_per_removed_fraction_beside_one_random_order_and_keeps_the_random_state(
    tiny_models,
):
    loaded = classifier(tiny_models, "vit")
    image = noise_picture()
    state = torch.get_rng_state()
    first, second = road(
        loaded, image_view(image, loaded.facts), ["gradcam", "eigencam"], percentiles=(80, 20, 50)
    )
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_allclose(first.removed, [0.2, 0.5, 0.8])
    for result in (first, second):
        for curve in (result.most_relevant_first, result.least_relevant_first, result.random_order):
            assert curve.shape == (3,) and ((curve >= 0.0) & (curve <= 1.0)).all()
        assert result.score == pytest.approx(
            np.mean(result.least_relevant_first - result.most_relevant_first) / 2
        )
    again = road(loaded, image_view(image, loaded.facts), ["gradcam"], percentiles=(80, 20, 50))[0]
    # Exact: the same function on the same data in one process runs the same kernels.
    np.testing.assert_array_equal(again.most_relevant_first, first.most_relevant_first)
    # One random order per model and image: every method is read beside the same baseline.
    np.testing.assert_array_equal(first.random_order, second.random_order)
    np.testing.assert_array_equal(again.random_order, first.random_order)
    rows = road_rows([first, second])
    assert [row["method"] for row in rows] == ["Grad-CAM", "EigenCAM"]
    assert rows[0]["random-order ROAD"] == round(float(first.random_order.mean()), 4)
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        road(loaded, image_view(image, loaded.facts), ["gradcam"], percentiles=(0, 50))


# --- Real weights: the bundled EfficientNet-Lite0 and a probe on the bundled DINOv2 ------------


@pytest.fixture(scope="module")
def efficientnet():
    return load_model("tf_efficientnet_lite0", "bundled")


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["hirescam", "gradcam-elementwise", "xgradcam", "layercam", "eigencam", "fullgrad"]
)
def test_efficientnet_cams_on_the_cat_lie_on_the_cat(efficientnet, method):
    """As for vitviz's Grad-CAM: on the whole photo (the centre crop holds only the cat), columns 1–4
    of the 7×7 map hold the cat's face and column 6 is background."""
    from vitviz.images import builtin_photo

    whole = image_view(builtin_photo("cat (chelsea)"), efficientnet.facts, "whole").tensor
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
        pixels = image_view(image, loaded.facts).tensor
        own = explain_pixels(loaded, pixels, mine)[0]
        theirs = library(loaded).explain(pixels)[0]
        assert own.target_index == theirs.target_index and own.values.shape == theirs.values.shape
        r = np.corrcoef(own.values.ravel(), theirs.values.ravel())[0, 1]
        assert r >= 0.99, (loaded.facts.name, mine, r)


# Measured on the probe's star (the probe says star): Pearson r of each map with the occlusion map.
# XGrad-CAM (−0.37), Eigen-Grad-CAM (−0.65) and EigenCAM (−0.61) came out inverted on the first probe
# (a principal component has no sign; XGrad-CAM's weights divide by activations of either sign); the
# rest agreed with occlusion at 0.67–0.83 on the probe trained by AdamW epochs, and at 0.57–0.69 on
# the probe fitted to its optimum by L-BFGS (another head: its maps are other maps), hence 0.5.
AGREE_WITH_OCCLUSION = {
    "hirescam", "gradcam-elementwise", "layercam", "shapleycam", "seg-eigencam", "scorecam", "ablationcam",
    "kpca-cam", "fem",
}  # fmt: skip


@pytest.mark.slow
def test_every_cam_on_a_trained_dinov2_probe_explains_its_prediction_on_the_token_grid():
    """The CAM zoo on real weights: a probe trained offline on the built-in shapes over the bundled DINOv2.
    Score-CAM and Ablation-CAM run 384 forwards each (one per channel): about 2 minutes here under load."""
    from vitviz.predict import predict

    probe = load_model(str(dinov2_probe_run()))
    star = shape_picture("star")
    assert predict(probe, [image_view(star, probe.facts)], topk=1)[0][0].label == "star"
    pixels = image_view(star, probe.facts).tensor
    occlusion = explain_pixels(probe, pixels, "occlusion")[0].values.ravel()
    assert set(available_methods(probe.facts)) >= set(LIBRARY_NAMES) - {"fullgrad"}
    for name in LIBRARY_NAMES:
        if name == "fullgrad":  # CNNs only
            continue
        result = explain_pixels(probe, pixels, name)[0]
        assert result.values.shape == probe.facts.grid_size == (16, 16), name
        assert np.isfinite(result.values).all() and result.values.std() > 0.05, name
        assert result.target_label == (None if name in CLASS_AGNOSTIC else "star"), name
        if name in AGREE_WITH_OCCLUSION:
            r = np.corrcoef(result.values.ravel(), occlusion)[0, 1]
            assert r >= 0.5, (name, r)
    assert hook_counts(probe.model) == (0, 0, 0, 0) and parameters_untouched(probe.model)


@pytest.mark.slow
def test_efficientnet_gradcam_is_faithful_by_road_on_the_coffee(efficientnet):
    """Imputing the pixels Grad-CAM ranks highest lowers the espresso probability more than
    imputing the lowest-ranked ones."""
    from vitviz.images import builtin_photo

    (result,) = road(
        efficientnet,
        image_view(builtin_photo("coffee"), efficientnet.facts),
        ["gradcam"],
        percentiles=(25, 50, 75),
    )
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
