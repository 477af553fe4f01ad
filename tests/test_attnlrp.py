"""AttnLRP: the same maps as the lxt package on the same weights, conservation of the logit, refusals."""

import threading

import numpy as np
import pytest
import timm
import torch
from timm.layers import SwiGLUPacked

from tests.support.methods_helpers import frozen_loaded, hook_counts, model_input, parameters_untouched
from tests.support.torchvision_twin import pearson, twins_on_five_photos
from vitviz.methods import MethodUnavailableError, explain_pixels
from vitviz.methods.attnlrp import RelevanceRules, input_relevance

CLASSES = [0, 3, 5, 7, 9]  # a different class for each photo


@pytest.fixture(scope="module")
def twins():
    return twins_on_five_photos()


@pytest.mark.parametrize(("conv_gamma", "linear_gamma"), [(0.25, 0.05), (100.0, 1.0)])
def test_attnlrp_matches_lxt_on_the_same_weights_for_five_photos(twins, conv_gamma, linear_gamma):
    from tests.support.lxt_reference import lxt_relevance

    loaded, torchvision_vit, pixels = twins
    reference, reference_logits = lxt_relevance(torchvision_vit, pixels, CLASSES, conv_gamma, linear_gamma)
    ours, _ = input_relevance(loaded.model, pixels, torch.tensor(CLASSES), conv_gamma, linear_gamma)
    results = explain_pixels(
        loaded, pixels, "attnlrp", CLASSES, conv_gamma=conv_gamma, linear_gamma=linear_gamma
    )
    plain_gradient_input = _gradient_times_input(loaded.model, pixels, CLASSES)
    for index, result in enumerate(results):
        assert pearson(ours[index].numpy(), reference[index].numpy()) >= 0.99
        # The patch map is lxt's pixel relevance summed over each 16×16 patch.
        rows, cols = result.grid_size
        reference_cells = reference[index].reshape(rows, 16, cols, 16).sum(dim=(1, 3)).numpy()
        assert pearson(result.values, reference_cells) >= 0.99
        np.testing.assert_allclose(result.values.sum(), reference[index].sum().item(), rtol=1e-3, atol=1e-5)
        # The rules matter: plain gradient × input on the same model is another map.
        assert pearson(ours[index].numpy(), plain_gradient_input[index]) < 0.9
    # lxt explained the same logits timm computes.
    with torch.no_grad():
        timm_logits = loaded.model(pixels).gather(1, torch.tensor(CLASSES)[:, None])[:, 0]
    torch.testing.assert_close(reference_logits, timm_logits, rtol=1e-4, atol=1e-4)


def _gradient_times_input(model: torch.nn.Module, pixels: torch.Tensor, classes: list[int]) -> np.ndarray:
    start = pixels.clone().requires_grad_(True)
    logits = model(start)
    (gradient,) = torch.autograd.grad(logits.gather(1, torch.tensor(classes)[:, None]).sum(), start)
    return (gradient * start).sum(dim=1).detach().numpy()


def _without_absorbers(model: torch.nn.Module) -> torch.nn.Module:
    """Every bias, the position embedding and the prefix tokens set to zero: nothing but the input keeps relevance."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            on_transformer = not name.startswith("patch_embed.backbone")
            if on_transformer and (
                name.endswith("bias") or name in ("pos_embed", "cls_token", "dist_token", "reg_token")
            ):
                parameter.zero_()
        for block in getattr(model, "blocks", []):  # peaked attention and a spread of logits
            block.attn.qkv.weight.mul_(4.0)
            for scale in (getattr(block, "ls1", None), getattr(block, "ls2", None)):
                if hasattr(scale, "gamma"):
                    scale.gamma.fill_(1.0)  # DINOv2-style LayerScale starts at 1e-5: blocks would do nothing
    return model


@pytest.mark.parametrize("key", ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular"])
def test_attnlrp_input_relevance_sums_to_the_explained_logit(tiny_models, key):
    loaded = frozen_loaded(tiny_models[key], key, num_classes=10 if key == "registers" else None)
    _without_absorbers(loaded.model)
    pixels = model_input(loaded, batch=2)
    with torch.no_grad():
        logits = loaded.model(pixels)
    classes = [1, 2]
    results = explain_pixels(loaded, pixels, "attnlrp", classes)
    for result, logit in zip(results, logits[[0, 1], classes].tolist(), strict=True):
        # The stabilisers of the Gamma rule (1e-6 per denominator) are all the rules leave out.
        assert result.values.sum() == pytest.approx(logit, rel=1e-3, abs=1e-6)
        assert not result.constant


def test_attnlrp_keeps_the_models_outputs_and_leaves_it_as_it_was(twins):
    loaded, _, pixels = twins
    model = loaded.model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        plain = model(pixels)
    with torch.enable_grad(), RelevanceRules(model, 0.25, 0.05, embedding=True):
        under_rules = model(pixels.clone().requires_grad_(True))
    torch.testing.assert_close(under_rules, plain, rtol=1e-5, atol=1e-5)
    explain_pixels(loaded, pixels, "attnlrp", CLASSES)
    assert hook_counts(model) == (0, 0, 0, 0)
    assert parameters_untouched(model)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_attnlrp_explains_each_images_top_class_by_default(twins):
    loaded, _, pixels = twins
    with torch.no_grad():
        top = loaded.model(pixels).argmax(dim=-1).tolist()
    assert [result.target_index for result in explain_pixels(loaded, pixels, "attnlrp")] == top


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"global_pool": "map"}, "pools with attention"),
        ({"mlp_layer": SwiGLUPacked, "mlp_ratio": 8 / 3}, "GluMlp"),
    ],
)
def test_attnlrp_refuses_layers_it_has_no_rules_for(kwargs, reason):
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1, num_classes=3, **kwargs
    )
    loaded = frozen_loaded(model, "odd")
    with pytest.raises(MethodUnavailableError, match=reason):
        explain_pixels(loaded, model_input(loaded), "attnlrp", [0])
    assert hook_counts(loaded.model) == (0, 0, 0, 0)


def test_attnlrp_refuses_cnns_and_bad_gammas(tiny_models, twins):
    with pytest.raises(MethodUnavailableError, match="AttnLRP works on ViTs, hybrids"):
        explain_pixels(frozen_loaded(tiny_models["cnn"], "resnet"), torch.randn(1, 3, 64, 64), "attnlrp")
    loaded, _, pixels = twins
    for option, value in (("conv_gamma", -1), ("linear_gamma", "many"), ("linear_gamma", float("nan"))):
        with pytest.raises(ValueError, match=option):
            explain_pixels(loaded, pixels[:1], "attnlrp", **{option: value})


@pytest.mark.parametrize(("key", "reason"), [("eva", "eva.EvaAttention"), ("beit", "beit.Attention")])
def test_attnlrp_names_the_attention_it_has_no_rule_for(key, reason):
    from tests.support.architectures import build_architecture

    loaded = build_architecture(key)
    with pytest.raises(
        MethodUnavailableError, match=rf"block 0's attention is {reason}, not timm.layers.Attention"
    ):
        explain_pixels(loaded, model_input(loaded), "attnlrp", [0])


def test_another_threads_plain_gradient_is_untouched_while_attnlrp_runs(twins):
    """The rules are bound to the explaining thread: a plain gradient another visitor takes meanwhile on the
    same shared model is the plain gradient, not relevance."""
    loaded, _, pixels = twins
    image = pixels[:1]
    reference = _gradient_times_input(loaded.model, image, [0])
    done = threading.Event()
    failures: list[BaseException] = []

    def explain_repeatedly() -> None:
        try:
            for _ in range(3):
                explain_pixels(loaded, pixels, "attnlrp", CLASSES)
        except BaseException as error:  # reported by the main thread
            failures.append(error)
        finally:
            done.set()

    worker = threading.Thread(target=explain_repeatedly)
    worker.start()
    seen = 0
    while not done.is_set() or seen == 0:
        np.testing.assert_allclose(
            _gradient_times_input(loaded.model, image, [0]), reference, rtol=1e-4, atol=1e-6
        )
        seen += 1
    worker.join(timeout=120)
    assert not failures and not worker.is_alive()
    assert hook_counts(loaded.model) == (0, 0, 0, 0)
