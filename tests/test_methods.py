"""Explanation methods: hand-computed Grad-CAM, Chefer and grad-rollout recomputed step by step, Captum."""

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.methods_helpers import (
    frozen_loaded,
    fused_flags,
    hand_made_loaded,
    hook_counts,
    model_input,
    parameters_untouched,
)
from vitviz.capture import attention_modules
from vitviz.methods import (
    METHOD_NAMES,
    MethodUnavailableError,
    available_methods,
    default_method,
    explain_pixels,
    explanation_map,
)
from vitviz.models import LoadedModel
from vitviz.preprocess import image_view

ATTENTION_FAMILIES = ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular"]


def classifier(tiny_models, key: str) -> LoadedModel:
    """A frozen copy with a classifier head (the register model, DINOv2 style, gets a 10-class one)."""
    return frozen_loaded(tiny_models[key], key, num_classes=10 if key == "registers" else None)


def sharpened(loaded: LoadedModel) -> LoadedModel:
    """Peakier attention, different in every layer, and a larger head, on the (copied) model.

    At random init every layer's attention is nearly uniform and the gradients tiny, so a map
    barely depends on which gradient meets which layer; these weights make the pairing matter.
    """
    with torch.no_grad():
        for index, block in enumerate(loaded.model.blocks):
            block.attn.qkv.weight.mul_(3 + index)
            for scale in (getattr(block, "ls1", None), getattr(block, "ls2", None)):
                if hasattr(scale, "gamma"):
                    scale.gamma.fill_(1.0)  # DINOv2-style LayerScale starts at 1e-5: blocks would do nothing
        heads = loaded.model.get_classifier()  # DeiT distilled has two: class and distillation
        for head in heads if isinstance(heads, tuple) else (heads,):
            head.weight.mul_(50)
    return loaded


# --- Grad-CAM on a two-layer conv net whose CAM is worked out by hand -------------------------


class TwoLayerConvNet(nn.Module):
    """conv1 (1→2, 1×1) → ReLU → conv2 (2→2, 1×1) → ReLU → mean over space → linear (no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.conv2.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 1.0]]).reshape(2, 2, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# x = [[1, -2], [3, 0]]: conv1 + ReLU gives c0 = [[1, 0], [3, 0]], c1 = [[0, 2], [0, 0]];
# conv2 + ReLU gives A0 = c0 = [[1, 0], [3, 0]] and A1 = 0.5·c0 + c1 = [[0.5, 2], [1.5, 0]].
TOY_INPUT = torch.tensor([[1.0, -2.0], [3.0, 0.0]]).reshape(1, 1, 2, 2)


@pytest.fixture
def toy() -> LoadedModel:
    return hand_made_loaded(TwoLayerConvNet(), (2, 2), num_classes=2)


@pytest.mark.parametrize(
    ("class_index", "expected"),
    [
        # logit_0 = mean(A0) + 2·mean(A1): α = (1/4, 2/4); ReLU(0.25·A0 + 0.5·A1)
        (0, [[0.5, 1.0], [1.5, 0.0]]),
        # logit_1 = −mean(A0) + mean(A1): α = (−1/4, 1/4); ReLU(−0.25·A0 + 0.25·A1)
        (1, [[0.0, 0.5], [0.0, 0.0]]),
    ],
)
def test_gradcam_matches_the_hand_computed_cam(toy, class_index, expected):
    result = explain_pixels(toy, TOY_INPUT, "gradcam", [class_index])[0]
    np.testing.assert_allclose(result.values, expected, atol=1e-6)
    assert result.target_index == class_index and result.source == "forward_features"
    assert result.stride_px == (1.0, 1.0)


def test_gradcam_plus_plus_matches_its_closed_form(toy):
    # The gradient is constant per channel (g0 = 1/4, g1 = 1/2) and each map sums to 4, so
    # α_k = 4·g·g²/(2g² + 4g³): α0 = 1/3, α1 = 1/2, and the CAM is ReLU(A0/3 + A1/2).
    result = explain_pixels(toy, TOY_INPUT, "gradcam++", [0])[0]
    np.testing.assert_allclose(result.values, [[1 / 3 + 0.25, 1.0], [1.0 + 0.75, 0.0]], atol=1e-5)


def test_gradcam_on_a_named_intermediate_layer(toy):
    # At conv1's output (before ReLU) for class 0 the gradients are g0 = [[.5, 0], [.5, 0]] and
    # g1 = [[0, .5], [0, 0]] (ReLU masks of both layers), so α = (1/4, 1/8) and the CAM is
    # ReLU(x/4 − x/8) on x = [[1, −2], [3, 0]].
    result = explain_pixels(toy, TOY_INPUT, "gradcam", [0], layer="conv1")[0]
    np.testing.assert_allclose(result.values, [[0.125, 0.0], [0.375, 0.0]], atol=1e-6)
    assert result.source == "conv1"
    assert hook_counts(toy.model) == (0, 0, 0, 0)
    assert parameters_untouched(toy.model)


def test_gradcam_explains_each_image_of_a_batch_for_its_own_class(toy):
    batch = torch.cat([TOY_INPUT, TOY_INPUT])
    first, second = explain_pixels(toy, batch, "gradcam", [0, 1])
    np.testing.assert_allclose(first.values, [[0.5, 1.0], [1.5, 0.0]], atol=1e-6)
    np.testing.assert_allclose(second.values, [[0.0, 0.5], [0.0, 0.0]], atol=1e-6)


def test_gradcam_unknown_layer_and_bad_class_are_clear_errors(toy):
    with pytest.raises(ValueError, match="no module named 'nope'"):
        explain_pixels(toy, TOY_INPUT, "gradcam", layer="nope")
    with pytest.raises(ValueError, match=r"class 5 outside 0\.\.1"):
        explain_pixels(toy, TOY_INPUT, "gradcam", [5])


# --- Chefer and gradient-weighted rollout, recomputed from A and ∇A captured here -------------


def _attention_and_gradients_by_backward(loaded: LoadedModel, pixels: torch.Tensor, classes: list[int]):
    """A and ∇A through `retain_grad` and `.backward()`: a different route from the library's."""
    model = loaded.model
    modules = attention_modules(model)
    captured: list[torch.Tensor] = []

    def keep(_module, inputs, _output):
        inputs[0].retain_grad()
        captured.append(inputs[0])

    handles = [module.attn_drop.register_forward_hook(keep) for module in modules]
    flags = [module.fused_attn for module in modules]
    try:
        for module in modules:
            module.fused_attn = False
        start = pixels.clone().requires_grad_(True)
        logits = model(start)
        logits[torch.arange(len(classes)), torch.tensor(classes)].sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in zip(modules, flags, strict=True):
            module.fused_attn = flag
    return [a.detach().numpy() for a in captured], [a.grad.numpy() for a in captured]


def _read_out(relevance: np.ndarray, loaded: LoadedModel) -> np.ndarray:
    facts = loaded.facts
    prefix = facts.num_prefix_tokens
    if prefix and facts.global_pool == "token":
        row = relevance[0, prefix:]
    else:
        row = relevance[prefix:, prefix:].mean(axis=0)
    return row.reshape(facts.grid_size)


def _chefer_by_hand(attentions, gradients, image: int) -> np.ndarray:
    tokens = attentions[0].shape[-1]
    relevance = np.eye(tokens)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = np.maximum(gradient[image] * attention[image], 0.0).mean(axis=0)  # (N, N)
        relevance = relevance + weighted @ relevance
    return relevance


def _grad_rollout_by_hand(attentions, gradients, image: int) -> np.ndarray:
    tokens = attentions[0].shape[-1]
    rollout = np.eye(tokens)
    for attention, gradient in zip(attentions, gradients, strict=True):
        fused = np.maximum((gradient[image] * attention[image]).mean(axis=0), 0.0)
        mixed = 0.5 * fused + 0.5 * np.eye(tokens)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed @ rollout
    return rollout


@pytest.mark.parametrize("key", ATTENTION_FAMILIES)
@pytest.mark.parametrize(
    ("method", "by_hand"), [("chefer", _chefer_by_hand), ("grad-rollout", _grad_rollout_by_hand)]
)
def test_gradient_attention_methods_match_a_step_by_step_recomputation(tiny_models, key, method, by_hand):
    loaded = sharpened(classifier(tiny_models, key))
    pixels = model_input(loaded, batch=2)
    classes = [3, 7]
    attentions, gradients = _attention_and_gradients_by_backward(loaded, pixels, classes)
    results = explain_pixels(loaded, pixels, method, classes)
    for image, result in enumerate(results):
        expected = _read_out(by_hand(attentions, gradients, image), loaded)
        assert result.values.shape == loaded.facts.grid_size
        np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-7)
        assert result.target_index == classes[image]
    # The check can tell a wrong pairing: each layer with the reversed layers' gradients differs.
    reversed_pairs = _read_out(by_hand(attentions, gradients[::-1], 0), loaded)
    assert np.abs(results[0].values - reversed_pairs).max() > 0.05 * np.abs(results[0].values).max()


def test_chefer_batched_equals_one_image_at_a_time(tiny_models):
    loaded = frozen_loaded(tiny_models["deit_distilled"], "deit")
    pixels = model_input(loaded, batch=3, seed=1)
    together = explain_pixels(loaded, pixels, "chefer", [1, 2, 3])
    alone = [explain_pixels(loaded, pixels[i : i + 1], "chefer", [c])[0] for i, c in enumerate([1, 2, 3])]
    for batched, single in zip(together, alone, strict=True):
        np.testing.assert_allclose(batched.values, single.values, rtol=1e-4, atol=1e-7)


def test_chefer_default_class_is_each_images_top_class(tiny_models):
    loaded = frozen_loaded(tiny_models["vit"], "vit")
    pixels = model_input(loaded, batch=2, seed=2)
    with torch.inference_mode():
        top = loaded.model(pixels).argmax(dim=-1).tolist()
    assert [result.target_index for result in explain_pixels(loaded, pixels, "chefer")] == top


# --- Grad-CAM on token grids ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "layer", "grid"),
    [
        ("vit", None, (4, 4)),
        ("deit_distilled", None, (4, 4)),
        ("registers", None, (4, 4)),
        ("vit_rectangular", None, (3, 4)),
        ("hybrid", None, (24, 24)),  # the CNN stem's own map (stride 4 on a 96-px input)
        ("hybrid", "tokens", (3, 3)),  # the token grid, by the model's grid_size
        ("cnn", None, (2, 2)),  # resnet18 at 64 px: forward_features at stride 32
    ],
)
def test_gradcam_reads_the_grid_from_the_model(tiny_models, key, layer, grid):
    loaded = classifier(tiny_models, key)
    pixels = model_input(loaded) if key != "cnn" else torch.randn(1, 3, 64, 64)
    options = {"layer": layer} if layer else {}
    result = explain_pixels(loaded, pixels, "gradcam", [0], **options)[0]
    assert result.values.shape == grid
    assert result.values.min() >= 0.0 and np.isfinite(result.values).all()
    assert result.stride_px == (pixels.shape[2] / grid[0], pixels.shape[3] / grid[1])


def test_gradcam_on_token_features_of_a_class_token_head_says_why_it_is_empty(tiny_models):
    loaded = frozen_loaded(tiny_models["vit"], "vit")
    with pytest.raises(ValueError, match="use the layer 'tokens'"):
        explain_pixels(loaded, model_input(loaded), "gradcam", [0], layer="features")


# --- Captum: Integrated Gradients and Occlusion on a linear model -----------------------------


class LinearModel(nn.Module):
    """logits = W · flatten(x): every attribution of a linear model is known exactly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def _linear_case(seed: int, images: int) -> tuple[torch.Tensor, object, torch.Tensor]:
    """A 3-class linear model on 4×4 pictures: its weights, the model, and `images` random pictures."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 3 * 4 * 4, generator=generator)
    loaded = hand_made_loaded(LinearModel(weight), (4, 4), num_classes=3)
    return weight, loaded, torch.randn(images, 3, 4, 4, generator=generator)


@pytest.mark.parametrize("method", ["integrated-gradients", "occlusion"])
def test_captum_methods_on_a_linear_model_give_each_cells_contribution(method):
    weight, loaded, pixels = _linear_case(seed=0, images=2)
    results = explain_pixels(loaded, pixels, method, [2, 0], cell_px=2, steps=4)
    for image, (result, target) in enumerate(zip(results, [2, 0], strict=True)):
        # From the zero baseline, a cell's share is Σ over its pixels and channels of x · w.
        contribution = (pixels[image] * weight[target].reshape(3, 4, 4)).sum(dim=0)  # (4, 4)
        expected = contribution.reshape(2, 2, 2, 2).sum(dim=(1, 3)).numpy()
        np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-5)
        assert result.stride_px == (2.0, 2.0)
    assert parameters_untouched(loaded.model)


@pytest.mark.parametrize(
    "method", ["integrated-gradients", "occlusion", "saliency", "smoothgrad", "gradient-shap"]
)
def test_captum_methods_sum_over_the_token_grid_of_a_vit(tiny_models, method):
    loaded = classifier(tiny_models, "registers")
    result = explain_pixels(loaded, model_input(loaded), method, [4], steps=4, samples=4)[0]
    assert result.values.shape == loaded.facts.grid_size and np.isfinite(result.values).all()


@pytest.mark.parametrize("method", ["saliency", "smoothgrad"])
def test_saliency_and_smoothgrad_of_a_linear_model_are_its_weights_per_cell(method):
    # The gradient of a linear model is its weight row wherever the input (or noise) is.
    weight, loaded, pixels = _linear_case(seed=1, images=1)
    result = explain_pixels(loaded, pixels, method, [1], cell_px=2, samples=3)[0]
    per_pixel = weight[1].reshape(3, 4, 4).abs().amax(dim=0)  # max over colours of |∂score/∂x|
    np.testing.assert_allclose(
        result.values, per_pixel.reshape(2, 2, 2, 2).sum(dim=(1, 3)).numpy(), rtol=1e-5
    )
    assert parameters_untouched(loaded.model)


def test_gradient_shap_of_a_linear_model_shares_the_rise_from_its_baselines_and_is_seeded():
    # Each draw attributes w · (x − b) for a baseline b of {mean colour, a noise image}: the cells
    # add up to f(x) minus a mix of f(0) and f(noise), and the same seed gives the same map.
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(2, 3 * 4 * 4, generator=generator)
    loaded = hand_made_loaded(LinearModel(weight), (4, 4), num_classes=2)
    pixels = torch.randn(1, 3, 4, 4, generator=generator)
    first = explain_pixels(loaded, pixels, "gradient-shap", [0], cell_px=2, samples=8)[0]
    again = explain_pixels(loaded, pixels, "gradient-shap", [0], cell_px=2, samples=8)[0]
    # Exact: the same call with the same seed in one process runs the same kernels on the same data.
    np.testing.assert_array_equal(first.values, again.values)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        noise = torch.randn(1, 3, 4, 4)  # the noise baseline the method draws from seed 0
    score = float(pixels.flatten() @ weight[0])
    rises = sorted([score, score - float(noise.flatten() @ weight[0])])
    assert rises[0] - 1e-4 <= float(first.values.sum()) <= rises[1] + 1e-4


# --- What is offered, and what stays untouched ------------------------------------------------


def test_methods_offered_by_family_and_head(tiny_models):
    vit = frozen_loaded(tiny_models["vit"]).facts
    cnn = frozen_loaded(tiny_models["cnn"]).facts
    headless = frozen_loaded(tiny_models["registers"]).facts  # DINOv2 style: no classifier head
    assert available_methods(vit) == [name for name in METHOD_NAMES if name != "fullgrad"]
    class_agnostic_cams = ["eigencam", "kpca-cam", "fem"]
    cnn_cams = [
        "hirescam",
        "gradcam-elementwise",
        "xgradcam",
        "layercam",
        "eigengradcam",
        "shapleycam",
        "seg-eigencam",
        "scorecam",
        "ablationcam",
    ]
    assert available_methods(cnn) == [
        "gradcam", "gradcam++", *cnn_cams, *class_agnostic_cams, "fullgrad",
        "integrated-gradients", "occlusion", "saliency", "smoothgrad", "gradient-shap",
    ]  # fmt: skip
    assert "fullgrad" not in available_methods(vit)  # FullGrad reads conv and batch-norm biases
    assert available_methods(headless) == ["rollout", "attention", *class_agnostic_cams]
    assert default_method(vit) == "rollout" and default_method(cnn) == "gradcam"


def test_unavailable_methods_say_why(tiny_models):
    cnn = frozen_loaded(tiny_models["cnn"], "resnet")
    with pytest.raises(MethodUnavailableError, match="works on ViTs, hybrids; resnet is a CNN"):
        explain_pixels(cnn, torch.randn(1, 3, 64, 64), "chefer")
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        explain_pixels(cnn, torch.randn(1, 3, 64, 64), "magic")


@pytest.mark.parametrize("key", [*ATTENTION_FAMILIES, "cnn"])
def test_every_method_leaves_no_hooks_no_grads_and_restores_fused_attention(tiny_models, key):
    for frozen in (True, False):
        # The fixture's parameters require grad; the app's models do not. Neither gets a .grad.
        model = tiny_models[key]
        loaded = (
            frozen_loaded(model, key)
            if frozen
            else LoadedModel(model, frozen_loaded(model, key).facts, "random", torch.device("cpu"), None)
        )
        before = (hook_counts(loaded.model), fused_flags(loaded.model))
        pixels = model_input(loaded) if key != "cnn" else torch.randn(1, 3, 64, 64)
        for method in available_methods(loaded.facts):
            explain_pixels(loaded, pixels, method, steps=2, cell_px=32, samples=2, batch_size=256)
        assert (hook_counts(loaded.model), fused_flags(loaded.model)) == before
        assert parameters_untouched(loaded.model, requires_grad=not frozen)


def test_hooks_are_removed_when_the_forward_raises(tiny_models):
    loaded = frozen_loaded(tiny_models["vit"], "vit")
    wrong_size = torch.randn(1, 3, 40, 40)
    for method in ("gradcam", "chefer"):
        with pytest.raises((AssertionError, RuntimeError)):
            explain_pixels(loaded, wrong_size, method, [0])
        assert hook_counts(loaded.model) == (0, 0, 0, 0)
        assert all(fused_flags(loaded.model))


def test_inference_mode_input_is_accepted(tiny_models):
    loaded = frozen_loaded(tiny_models["hybrid"], "hybrid")
    with torch.inference_mode():
        pixels = model_input(loaded)
    result = explain_pixels(loaded, pixels, "grad-rollout", [1])[0]
    assert result.values.shape == (3, 3)


# --- Real weights -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def efficientnet():
    from vitviz.models import load_model

    return load_model("tf_efficientnet_lite0", "bundled")


def test_efficientnet_gradcam_on_the_cat_lies_on_the_cat(efficientnet):
    """Measured: the 7×7 map's columns 1–4 (x ≈ 64–322 of 451 px) hold the cat's face; column 6
    (x ≈ 387–451) is the blurred background on the right. The face cells average about six times
    the background column (0.66 vs 0.12 of the map's maximum)."""
    from vitviz.images import builtin_photo

    # The whole photo (not the default centre crop, which holds only the cat) has background to miss.
    whole = image_view(builtin_photo("cat (chelsea)"), efficientnet.facts, "whole").tensor
    result = explain_pixels(efficientnet, whole, "gradcam")[0]
    assert result.target_label.startswith(("Egyptian cat", "tabby", "tiger cat"))
    values = result.normalised()
    cat, background = values[:, 1:5].mean(), values[:, 6].mean()
    assert cat > 3 * background, (cat, background)
    for parameter in efficientnet.model.parameters():
        assert parameter.grad is None and not parameter.requires_grad


def test_efficientnet_occlusion_map_is_faithful_on_the_coffee(efficientnet):
    """Occlusion with 56-px windows (16 forwards). Per window the logit drops are noisy (greying
    some cup windows raises the espresso logit), so the check is on what the map is for: greying
    the patches it ranks first lowers the espresso probability far faster than restoring them
    raises it back (measured at five fractions: deletion area 0.25, insertion area 0.74)."""
    from vitviz.images import builtin_photo
    from vitviz.methods.faithfulness import faithfulness

    image = builtin_photo("coffee")
    result = explanation_map(efficientnet, image_view(image, efficientnet.facts), "occlusion", cell_px=56)
    assert result.values.shape == (4, 4) and result.target_index == 967  # espresso
    (scores,) = faithfulness(
        efficientnet,
        image_view(image, efficientnet.facts),
        ["occlusion"],
        fractions=(0.0, 0.25, 0.5, 0.75, 1.0),
        method_options={"occlusion": {"cell_px": 56}},
    )
    assert scores.deletion_auc < 0.5 * scores.insertion_auc, (scores.deletion_auc, scores.insertion_auc)
