"""One view per (image, model): the eval transform's crop by default, the whole photo on request."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vitviz.forward.attention import record_attention
from vitviz.models import LoadedModel, model_facts
from vitviz.predict import predict
from vitviz.preprocess import image_view


def _loaded(model: torch.nn.Module, name: str) -> LoadedModel:
    return LoadedModel(model, model_facts(name, model), "random", torch.device("cpu"), None)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _timm_eval_tensor(image: Image.Image, loaded: LoadedModel) -> torch.Tensor:
    facts = loaded.facts
    transform = timm.data.create_transform(
        input_size=(3, *facts.input_size),
        interpolation=facts.interpolation,
        mean=facts.mean,
        std=facts.std,
        crop_pct=facts.crop_pct,
        is_training=False,
    )
    return transform(image.convert("RGB")).unsqueeze(0)


@pytest.mark.parametrize("key", ["vit", "hybrid", "cnn", "vit_rectangular"])
@pytest.mark.parametrize("size", [(451, 300), (300, 451), (97, 97), (800, 200)])
def test_the_crop_view_is_exactly_timms_eval_transform(tiny_models, key, size):
    loaded = _loaded(tiny_models[key], key)
    image = _photo(*size)
    torch.testing.assert_close(
        image_view(image, loaded.facts).tensor, _timm_eval_tensor(image, loaded), rtol=0, atol=0
    )


def test_the_crop_box_is_the_centre_of_a_panorama(tiny_models):
    facts = _loaded(tiny_models["vit"], "vit").facts  # 64×64 input
    facts = facts.__class__(**{**facts.__dict__, "crop_pct": 1.0})
    view = image_view(_photo(800, 200), facts)
    assert view.box == pytest.approx((300.0, 0.0, 500.0, 200.0))
    assert not view.covers_whole_photo
    assert view.note == "centre crop: the model sees 25% of the photo"
    assert view.pixels.shape == (64, 64, 3)


def test_the_crop_box_shows_what_crop_pct_cuts_away(tiny_models):
    facts = _loaded(tiny_models["vit"], "vit").facts
    facts = facts.__class__(**{**facts.__dict__, "crop_pct": 0.875})
    view = image_view(_photo(400, 400), facts)
    # shorter side to floor(64 / 0.875) = 73 px, then the central 64 px: 64/73 of each side
    side = 400 * 64 / 73
    assert view.box == pytest.approx(
        ((400 - side) / 2, (400 - side) / 2, (400 + side) / 2, (400 + side) / 2), abs=3.0
    )


def test_the_whole_view_says_when_the_aspect_ratio_changes(tiny_models):
    facts = _loaded(tiny_models["vit"], "vit").facts
    panorama = image_view(_photo(800, 200), facts, "whole")
    assert panorama.covers_whole_photo
    assert panorama.note == "the whole photo (800×200) is resized to 64×64: its aspect ratio changed"
    assert image_view(_photo(128, 128), facts, "whole").note == ""
    with pytest.raises(ValueError, match="unknown view"):
        image_view(_photo(10, 10), facts, "squash")


def test_a_views_tensor_is_its_pixels_normalised_with_the_models_mean_and_std(tiny_models):
    loaded = _loaded(tiny_models["vit"], "vit")
    view = image_view(_photo(300, 200), loaded.facts)
    expected = (
        torch.tensor(view.pixels).permute(2, 0, 1).float() / 255
        - torch.tensor(loaded.facts.mean)[:, None, None]
    ) / torch.tensor(loaded.facts.std)[:, None, None]
    torch.testing.assert_close(view.tensor[0], expected)
    np.testing.assert_array_equal(image_view(_photo(300, 200), loaded.facts).pixels, view.pixels)


@pytest.mark.parametrize("view", ["crop", "whole"])
def test_one_forward_gives_the_maps_and_the_predictions_of_the_same_view(tiny_models, view):
    loaded = _loaded(tiny_models["vit"], "vit")
    image = _photo(451, 300, seed=3)
    record = record_attention(loaded, image_view(image, loaded.facts, view))
    assert record.view is not None and record.view.mode == view
    predictions = predict(loaded, [image_view(image, loaded.facts, view)], topk=3)[0]
    probabilities = torch.tensor(record.logits).softmax(-1)
    assert [p.index for p in predictions] == probabilities.topk(3).indices.tolist()
    assert predictions[0].probability == pytest.approx(float(probabilities.max()), rel=1e-4)


def test_a_model_without_a_head_records_no_logits(tiny_models):
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1, num_classes=0
    ).eval()
    loaded = _loaded(model, "vit_tiny_patch16_224")
    record = record_attention(loaded, image_view(_photo(100, 80), loaded.facts))
    assert record.logits is None
