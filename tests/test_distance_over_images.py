"""Mean attention distance over a set of images (vitviz.forward.distance), on tiny models and DINOv2."""

import numpy as np
import pytest

from tests.support.tiny_models import TRANSFORMER_KEYS, tiny_loaded
from vitviz.capture import attention_modules
from vitviz.forward.attention import record_attention
from vitviz.forward.distance import attention_distances_over_images
from vitviz.maths.distance import mean_attention_distance, patch_distances, uniform_attention_distance
from vitviz.models import ModelError
from vitviz.preprocess import image_view


def test_uniform_reference_is_the_mean_of_all_patch_distances():
    # 2x2 grid of 10-px patches: from any corner 0, 10, 10 and 10·√2.
    assert uniform_attention_distance((2, 2), (10, 10)) == pytest.approx((20 + 10 * np.sqrt(2)) / 4)
    # A 1x3 row of 16-px patches: distances 0,16,32 / 16,0,16 / 32,16,0 → 128 / 9.
    assert uniform_attention_distance((1, 3), (16, 16)) == pytest.approx(128 / 9)


@pytest.mark.parametrize("family", TRANSFORMER_KEYS)
def test_image_set_distances_match_one_image_at_a_time(tiny_models, photos, family):
    loaded = tiny_loaded(tiny_models, family)
    facts = loaded.facts
    result = attention_distances_over_images(
        loaded, [image_view(image, loaded.facts) for image in photos], batch_size=2
    )
    assert result.per_image.shape == (3, facts.num_layers, facts.num_heads)
    for index, photo in enumerate(photos):
        record = record_attention(loaded, image_view(photo, loaded.facts))
        expected = mean_attention_distance(
            record.attentions, facts.grid_size, facts.stride_px, facts.num_prefix_tokens
        )
        np.testing.assert_allclose(result.per_image[index], expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(result.mean, result.per_image.mean(axis=0))
    assert result.uniform_reference == pytest.approx(patch_distances(facts.grid_size, facts.stride_px).mean())
    # No head can look further on average than the farthest pair of patches.
    assert np.all(result.per_image >= 0) and np.all(
        result.per_image <= patch_distances(facts.grid_size, facts.stride_px).max()
    )


def test_hybrid_distances_are_in_input_pixels_not_feature_cells(tiny_models, photos):
    loaded = tiny_loaded(tiny_models, "hybrid")
    assert loaded.facts.stride_px == (32, 32)  # 96 px input, 3x3 grid
    result = attention_distances_over_images(
        loaded, [image_view(image, loaded.facts) for image in photos[:1]]
    )
    # Random heads attend almost evenly: close to the uniform 3x3 value in 32-px steps.
    assert result.uniform_reference == pytest.approx(uniform_attention_distance((3, 3), (32, 32)))
    assert np.all(np.abs(result.mean - result.uniform_reference) < 0.35 * result.uniform_reference)


def test_progress_counts_every_layer_of_every_batch(tiny_models, photos):
    loaded = tiny_loaded(tiny_models, "vit")  # 2 layers
    calls: list[tuple[int, int]] = []
    attention_distances_over_images(
        loaded,
        [image_view(image, loaded.facts) for image in photos],
        batch_size=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(done, 4) for done in range(1, 5)]  # 2 batches × 2 layers
    calls.clear()
    attention_distances_over_images(
        loaded,
        [image_view(image, loaded.facts) for image in photos],
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 2), (2, 2)]  # all three images in one forward pass


def test_distance_capture_leaves_the_model_as_it_found_it(tiny_models, photos):
    model = tiny_models["registers"]
    loaded = tiny_loaded(tiny_models, "registers")
    flags = [module.fused_attn for module in attention_modules(model)]
    attention_distances_over_images(loaded, [image_view(image, loaded.facts) for image in photos[:1]])
    assert [module.fused_attn for module in attention_modules(model)] == flags
    assert all(not module.attn_drop._forward_hooks for module in attention_modules(model))


def test_distances_refuse_a_cnn_and_an_empty_set(tiny_models, photos):
    with pytest.raises(ModelError, match="CNN"):
        cnn = tiny_loaded(tiny_models, "cnn")
        attention_distances_over_images(cnn, [image_view(photo, cnn.facts) for photo in photos])
    with pytest.raises(ValueError, match="at least one image"):
        attention_distances_over_images(tiny_loaded(tiny_models, "vit"), [])


def test_dinov2_early_layers_hold_both_local_and_global_heads(dinov2, dinov2_twin, photos):
    result = attention_distances_over_images(dinov2, [image_view(image, dinov2.facts) for image in photos])
    uniform = result.uniform_reference  # 116.6 px on the 16×16 grid of 14-px patches
    early = result.mean[:4]  # layers 0–3
    # Measured over these three photos: layers 0–3 reach from about 20 px to about 100 px.
    assert early.min() < 0.25 * uniform, early
    assert early.max() > 0.75 * uniform, early
    # Untrained heads attend almost evenly: every head sits near the uniform value.
    untrained = attention_distances_over_images(
        dinov2_twin, [image_view(image, dinov2_twin.facts) for image in photos[:1]]
    ).mean
    assert np.all(np.abs(untrained - uniform) < 0.1 * uniform)
