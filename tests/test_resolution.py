"""Running a ViT at another input size (vitviz.forward.resolution): a resized copy, the shared model untouched."""

import numpy as np
import pytest
import timm
import torch
from scipy.stats import spearmanr

from tests.support.tiny_models import TRANSFORMER_KEYS, state_copy, tiny_loaded
from vitviz.forward.resolution import (
    check_input_size,
    compare_resolutions,
    interpolate_position_embedding,
    position_embedding_grid,
    resize_model,
    resolution_choices,
)
from vitviz.models import ModelError, model_facts
from vitviz.preprocess import image_view
from vitviz.weights import fit_position_embedding


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_resized_copy_has_the_new_grid_and_the_shared_model_is_unchanged(tiny_models, key):
    loaded = tiny_loaded(tiny_models, key)
    facts = loaded.facts
    before = state_copy(loaded.model)
    pos_shape = tuple(loaded.model.pos_embed.shape)
    rows, cols = facts.grid_size
    size = (2 * rows * facts.stride_px[0], 2 * cols * facts.stride_px[1])

    resized = resize_model(loaded, size)

    assert resized.model is not loaded.model
    assert resized.facts.input_size == size
    assert resized.facts.grid_size == (2 * rows, 2 * cols)
    assert resized.facts.num_tokens == 4 * rows * cols + facts.num_prefix_tokens
    with torch.inference_mode():
        tokens = resized.model.forward_features(torch.zeros(1, 3, *size))
    assert tokens.shape[1] == resized.facts.num_tokens
    assert tuple(loaded.model.pos_embed.shape) == pos_shape
    assert loaded.model.patch_embed.grid_size == (rows, cols)
    after = loaded.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model_facts(facts.name, loaded.model) == facts


def test_interpolating_to_the_same_grid_is_the_identity():
    embedding = torch.randn(1, 1 + 5 * 7, 12)
    same = interpolate_position_embedding(embedding, (5, 7), (5, 7), embedded_prefix=1)
    assert torch.equal(same, embedding)  # exact: the same grid is returned as it is, no resampling


def test_resizing_to_the_own_size_returns_the_model_itself(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")
    assert resize_model(loaded, loaded.facts.input_size) is loaded


def test_resized_position_embedding_equals_the_load_path_resampling(tiny_models):
    loaded = tiny_loaded(tiny_models, "vit")  # 64 px, 4×4 grid
    resized = resize_model(loaded, (112, 112))  # 7×7 grid
    built = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112, depth=2)
    expected = fit_position_embedding({"pos_embed": loaded.model.pos_embed.detach()}, built)["pos_embed"]
    torch.testing.assert_close(resized.model.pos_embed.detach(), expected, rtol=0, atol=0)
    # Prefix (class) row is carried over untouched.
    torch.testing.assert_close(resized.model.pos_embed[:, 0], loaded.model.pos_embed[:, 0], rtol=0, atol=0)
    assert position_embedding_grid(resized.model).shape == (7, 7, loaded.facts.embed_dim)


def test_register_model_keeps_prefix_tokens_out_of_the_position_grid(tiny_models):
    loaded = tiny_loaded(tiny_models, "registers")  # no_embed_class: pos_embed holds patches only
    assert position_embedding_grid(loaded.model).shape == (4, 4, loaded.facts.embed_dim)
    resized = resize_model(loaded, (84, 84))
    assert resized.model.pos_embed.shape[1] == 36
    assert resized.facts.num_tokens == 36 + 5


def test_sizes_that_do_not_fit_are_refused_with_a_reason(tiny_models):
    facts = tiny_loaded(tiny_models, "vit").facts
    with pytest.raises(ModelError, match="not a multiple of the 16×16 px token stride"):
        check_input_size(facts, (100, 100))
    with pytest.raises(ModelError, match="stops at 1024"):
        check_input_size(facts, (16 * 40, 16 * 40))
    with pytest.raises(ModelError, match="is a CNN"):
        check_input_size(tiny_loaded(tiny_models, "cnn").facts, (224, 224))


def test_resolution_choices_keep_the_aspect_ratio_and_include_the_own_size(tiny_models):
    facts = tiny_loaded(tiny_models, "vit_rectangular").facts  # 48×64 px, 3×4 grid
    choices = resolution_choices(facts)
    assert facts.input_size in choices
    assert choices[0] == (32, 48) and choices[-1] == (16 * 12, 16 * 16)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in choices)


def test_compare_resolutions_gives_maps_of_both_grids(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "deit_distilled")
    before, after = compare_resolutions(loaded, image_view(cat, loaded.facts), (96, 96))
    assert before.class_attention.shape == before.rollout.shape == (4, 4)
    assert after.class_attention.shape == after.rollout.shape == (6, 6)
    assert before.position_rgb.shape == (4, 4, 3) and after.position_rgb.shape == (6, 6, 3)
    assert after.pixels.shape == (96, 96, 3)
    assert before.predictions is not None and len(after.predictions) == 5


@pytest.mark.slow
def test_dinov2_at_448_px_sees_the_cat_where_it_did_at_224(dinov2, cat):
    state = state_copy(dinov2.model)
    before, after = compare_resolutions(dinov2, image_view(cat, dinov2.facts), (448, 448))
    assert before.facts.grid_size == (16, 16) and after.facts.grid_size == (32, 32)
    assert after.facts.num_tokens == 1025
    upsampled_rollout = np.kron(before.rollout, np.ones((2, 2)))
    upsampled_attention = np.kron(before.class_attention, np.ones((2, 2)))
    # Measured on the 8 built-in photos: rank correlation of rollout 0.48–0.89 (cat 0.48) with sinks
    # found by query independence (0.45–0.93, cat 0.65, with the earlier median rule, which left
    # other tokens out at 448 px); Pearson of the last layer's class attention 0.58–0.75 (cat 0.66).
    # Rollout's Pearson is low because a few peak tokens, at different places at each size, dominate
    # its raw values.
    assert spearmanr(upsampled_rollout.ravel(), after.rollout.ravel()).statistic > 0.4
    assert np.corrcoef(upsampled_attention.ravel(), after.class_attention.ravel())[0, 1] > 0.5
    assert all(torch.equal(state[name], tensor) for name, tensor in dinov2.model.state_dict().items())
    assert dinov2.model.pos_embed.shape == (1, 257, 384)
