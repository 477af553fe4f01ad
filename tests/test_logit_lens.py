"""Logit lens: each layer read through the model's own norm and head; the last layer is the model's output."""

import copy

import numpy as np
import pytest
import timm
import torch

from tests.support import interventions as support
from tests.support.methods_helpers import frozen_loaded, fused_flags, hook_counts
from vitviz.forward.logit_lens import logit_lens, logit_lens_pixels
from vitviz.models import ModelError, load_model
from vitviz.predict import predict
from vitviz.preprocess import image_view


def average_pooled_vit():
    """A ViT whose head averages the patch tokens (global_pool="avg", fc_norm after pooling)."""
    torch.manual_seed(1)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, global_pool="avg", num_classes=7)
    return frozen_loaded(model.eval(), "avg-pooled vit")


def lens_models(tiny_models):
    return [support.classifier(tiny_models, key) for key in support.FAMILIES] + [average_pooled_vit()]


def test_the_last_layer_of_the_lens_is_the_models_own_output(tiny_models):
    image = support.noise_picture()
    for loaded in lens_models(tiny_models):
        pixels = image_view(image, loaded.facts).tensor
        lens = logit_lens_pixels(loaded, pixels)
        with torch.no_grad():
            output = loaded.model(pixels)[0]
        assert lens.num_layers == loaded.facts.num_layers
        np.testing.assert_allclose(
            lens.logits[-1], output.numpy(), rtol=0, atol=1e-5, err_msg=loaded.facts.name
        )
        assert lens.predictions[-1] == predict(loaded, [image_view(image, loaded.facts)])[0]


def test_each_layer_equals_the_model_cut_after_that_block(tiny_models):
    """A different route: a copy of the model with its later blocks removed, run as a whole."""
    image = support.noise_picture()
    for loaded in [support.classifier(tiny_models, "vit_rectangular"), average_pooled_vit()]:
        pixels = image_view(image, loaded.facts).tensor
        lens = logit_lens_pixels(loaded, pixels)
        for layer in range(loaded.facts.num_layers):
            cut = copy.deepcopy(loaded.model)
            cut.blocks = cut.blocks[: layer + 1]
            with torch.no_grad():
                expected = cut(pixels)[0].numpy()
            np.testing.assert_allclose(lens.logits[layer], expected, rtol=0, atol=1e-5)


def test_each_patch_token_is_read_through_the_norm_and_head_alone(tiny_models):
    loaded = support.classifier(tiny_models, "registers")  # 5 prefix tokens before the patches
    model, facts = loaded.model, loaded.facts
    pixels = image_view(support.noise_picture(), facts).tensor
    lens = logit_lens_pixels(loaded, pixels)
    cut = copy.deepcopy(model)
    cut.blocks = cut.blocks[:1]
    with torch.no_grad():
        tokens = cut.forward_features(pixels)[0, facts.num_prefix_tokens :]  # (P, C) after the final norm
        probabilities = model.head(tokens).softmax(dim=-1)
    rows, cols = facts.grid_size
    assert lens.patch_classes.shape == (facts.num_layers, rows, cols)
    # The lens and this cut model reach the head through matmuls of other shapes, which round
    # differently on some CPUs: a patch's class may differ from argmax only where two classes tie
    # within float32 rounding, so the lens's class must score the patch's top probability.
    chosen = torch.as_tensor(lens.patch_classes[0].ravel(), dtype=torch.long)
    chosen_probability = probabilities.gather(1, chosen[:, None])[:, 0]
    torch.testing.assert_close(chosen_probability, probabilities.max(dim=-1).values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        lens.patch_probabilities[0].ravel(), probabilities.max(dim=-1).values, atol=1e-6
    )


def test_the_lens_leaves_no_hooks_and_restores_nothing_it_did_not_touch(tiny_models):
    loaded = support.classifier(tiny_models, "hybrid")
    logit_lens(loaded, image_view(support.noise_picture(), loaded.facts))
    assert hook_counts(loaded.model) == (0, 0, 0, 0) and all(fused_flags(loaded.model))


def test_cnns_and_headless_models_have_no_lens(tiny_models):
    with pytest.raises(ModelError, match="CNN"):
        cnn = frozen_loaded(tiny_models["cnn"], "resnet")
        logit_lens(cnn, image_view(support.noise_picture(), cnn.facts))
    with pytest.raises(ModelError, match="no classifier head"):
        backbone = frozen_loaded(tiny_models["registers"], "dinov2")
        logit_lens(backbone, image_view(support.noise_picture(), backbone.facts))


@pytest.mark.slow
def test_dinov2_probe_lens_ends_on_its_prediction_and_its_patches_find_the_shape():
    probe = load_model(str(support.dinov2_probe_run()))
    image = support.shape_picture("star")
    lens = logit_lens(probe, image_view(image, probe.facts), topk=5)
    assert lens.predictions[-1] == predict(probe, [image_view(image, probe.facts)], topk=5)[0]
    assert lens.predictions[-1][0].label == "star"
    assert lens.patch_classes.shape == (12, 16, 16)
    assert lens.patch_probabilities.min() > 0.0 and lens.patch_probabilities.max() <= 1.0


def test_cli_lens_prints_each_layer_from_zero_with_predictions(tmp_path):
    picture = support.saved_picture(support.noise_picture(), tmp_path)
    status, payload, stderr = support.run_command(
        "lens",
        picture,
        "--model",
        "deit_tiny_distilled_patch16_224",
        "--weights",
        "random",
        "--topk",
        "2",
        "--json",
    )
    assert status == 0, stderr
    assert [entry["layer"] for entry in payload["layers"]] == list(range(12))
    assert all(len(entry["predictions"]) == 2 for entry in payload["layers"])
    assert set(payload["layers"][0]["predictions"][0]) == {"index", "label", "probability"}


@pytest.mark.slow
def test_cli_lens_last_layer_is_what_predict_prints(tmp_path):
    run = str(support.dinov2_probe_run())
    picture = support.saved_picture(support.shape_picture("circle"), tmp_path)
    status, payload, stderr = support.run_command("lens", picture, "--model", run, "--json")
    assert status == 0, stderr
    _, predicted, _ = support.run_command("predict", picture, "--model", run, "--json")
    assert payload["layers"][-1]["predictions"] == predicted[0]["predictions"]
