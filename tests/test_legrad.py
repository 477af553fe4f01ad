"""LeGrad: the same maps as TorchCAM's LeGrad on the same weights, batching, layers, every ViT family."""

import numpy as np
import pytest
import torch

from tests.support.methods_helpers import frozen_loaded, hook_counts, model_input, parameters_untouched
from tests.support.tiny_models import TRANSFORMER_KEYS
from tests.support.torchvision_twin import pearson, twins_on_five_photos
from vitviz.methods import explain_pixels

CLASSES = [0, 3, 5, 7, 9]


@pytest.fixture(scope="module")
def twins():
    return twins_on_five_photos()


def torchcam_legrad(
    torchvision_vit, pixels: torch.Tensor, classes: list[int], start_layer: int = 0
) -> list[np.ndarray]:
    """TorchCAM's LeGrad over the torchvision ViT's blocks from `start_layer` on, one image at a time."""
    from torchcam.methods import LeGrad as TorchCamLeGrad

    maps = []
    for image, class_index in zip(pixels, classes, strict=True):
        with TorchCamLeGrad(torchvision_vit, list(torchvision_vit.encoder.layers)[start_layer:]) as extractor:
            scores = torchvision_vit(image[None])
            maps.append(extractor(class_index, scores)[0][0].numpy())
    return maps


@pytest.mark.parametrize("start_layer", [0, 1])
def test_legrad_matches_torchcam_on_the_same_weights_for_five_photos(twins, start_layer):
    loaded, torchvision_vit, pixels = twins
    reference = torchcam_legrad(torchvision_vit, pixels, CLASSES, start_layer)
    results = explain_pixels(loaded, pixels, "legrad", CLASSES, start_layer=start_layer)
    chefer = explain_pixels(loaded, pixels, "chefer", CLASSES, start_layer=start_layer)
    for result, expected, other in zip(results, reference, chefer, strict=True):
        assert result.grid_size == expected.shape == (6, 6)
        assert pearson(result.values, expected) >= 0.99
        assert pearson(other.values, expected) < 0.9  # another method on the same model is another map


def test_legrad_batched_equals_one_image_at_a_time(twins):
    loaded, _, pixels = twins
    batched = explain_pixels(loaded, pixels, "legrad", CLASSES)
    for index, result in enumerate(batched):
        alone = explain_pixels(loaded, pixels[index : index + 1], "legrad", [CLASSES[index]])[0]
        np.testing.assert_allclose(result.values, alone.values, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_legrad_maps_each_family_on_its_grid_and_leaves_the_model_as_it_was(tiny_models, key):
    loaded = frozen_loaded(tiny_models[key], key, num_classes=10 if key == "registers" else None)
    pixels = model_input(loaded, batch=2)
    results = explain_pixels(loaded, pixels, "legrad", [1, 2])
    for result in results:
        assert result.grid_size == loaded.facts.grid_size
        assert (result.values >= 0).all() and np.isfinite(result.values).all()
        assert not result.constant
    assert hook_counts(loaded.model) == (0, 0, 0, 0)
    assert parameters_untouched(loaded.model)


def test_legrad_says_which_layers_are_out_of_range(twins):
    loaded, _, pixels = twins
    with pytest.raises(ValueError, match=r"start layer 3 outside 0\.\.2"):
        explain_pixels(loaded, pixels[:1], "legrad", [0], start_layer=3)
