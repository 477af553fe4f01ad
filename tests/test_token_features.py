"""Output-token norms and principal colours of patch features (vitviz.maths.token_features, vitviz.forward.token_features)."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tests.support.tiny_models import TRANSFORMER_KEYS, tiny_loaded
from vitviz.forward.token_features import output_tokens
from vitviz.maths.token_features import (
    TokenNorms,
    high_norm_patches,
    patch_feature_colours,
    principal_components_rgb,
    token_norms,
)
from vitviz.preprocess import image_view


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_token_norms_cover_the_grid_and_name_every_prefix_token(tiny_models, cat, key):
    loaded = tiny_loaded(tiny_models, key)
    tokens = output_tokens(loaded, image_view(cat, loaded.facts))
    with torch.inference_mode():
        features = loaded.model.forward_features(image_view(cat, loaded.facts).tensor)[0].numpy()
    np.testing.assert_allclose(tokens.after_norm, features, rtol=0, atol=0)
    with torch.inference_mode():
        renormed = loaded.model.norm(torch.from_numpy(tokens.before_norm)).numpy()
    np.testing.assert_allclose(renormed, tokens.after_norm, atol=1e-5)
    norms = token_norms(tokens, "before_norm")
    assert norms.patch_norms.shape == loaded.facts.grid_size
    assert len(norms.prefix_norms) == len(norms.prefix_names) == loaded.facts.num_prefix_tokens
    expected = np.linalg.norm(tokens.before_norm[loaded.facts.num_prefix_tokens :], axis=-1)
    np.testing.assert_allclose(norms.patch_norms.ravel(), expected, rtol=1e-6)


def test_prefix_tokens_are_named_in_sequence_order(tiny_models, cat):
    distilled = tiny_loaded(tiny_models, "deit_distilled")
    assert output_tokens(distilled, image_view(cat, distilled.facts)).prefix_names == (
        "class",
        "distillation",
    )
    registers = tiny_loaded(tiny_models, "registers")
    names = output_tokens(registers, image_view(cat, registers.facts)).prefix_names
    assert names == ("class", "register 1", "register 2", "register 3", "register 4")


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_patch_feature_colours_are_an_rgb_image_in_the_unit_range(tiny_models, cat, key):
    loaded = tiny_loaded(tiny_models, key)
    colours = patch_feature_colours(output_tokens(loaded, image_view(cat, loaded.facts)))
    assert colours.rgb.shape == (*loaded.facts.grid_size, 3)
    assert colours.rgb.min() >= 0.0 and colours.rgb.max() <= 1.0
    ratios = colours.explained_variance_ratio
    assert len(ratios) == 3 and np.all(np.diff(ratios) <= 0) and ratios.sum() <= 1.0 + 1e-9


def test_first_principal_colour_follows_the_direction_of_largest_spread():
    rng = np.random.default_rng(0)
    position = np.linspace(-5, 5, 50)
    vectors = np.outer(position, np.eye(8)[2]) + 0.01 * rng.standard_normal((50, 8))
    colours = principal_components_rgb(vectors)
    assert abs(spearmanr(colours.rgb[:, 0], position).statistic) > 0.99
    assert colours.explained_variance_ratio[0] > 0.99


def test_principal_colours_fitted_on_some_rows_apply_to_the_others():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((40, 6))
    alone = principal_components_rgb(vectors[:30])
    together = principal_components_rgb(vectors, fit_rows=30)
    np.testing.assert_allclose(together.rgb[:30], alone.rgb)
    assert together.rgb.shape == (40, 3)


def test_high_norm_patches_are_those_above_the_factor_times_the_median():
    patch_norms = np.full((4, 5), 10.0)
    patch_norms[1, 3] = 45.0
    patch_norms[2, 0] = 25.0
    norms = TokenNorms(patch_norms, np.array([30.0]), ("class",), "before_norm")
    assert high_norm_patches(norms, factor=2.0) == [(1, 3, 45.0), (2, 0, 25.0)]
    assert high_norm_patches(norms, factor=3.0) == [(1, 3, 45.0)]


@pytest.mark.slow
def test_dinov2_small_has_no_high_norm_artefact_tokens(dinov2, cat):
    # Darcet et al. find high-norm tokens in large ViTs (ViT-L and up); in the bundled ViT-S every
    # patch norm stayed within 0.77–1.38× the median on the built-in photos (before the final norm).
    norms = token_norms(output_tokens(dinov2, image_view(cat, dinov2.facts)), "before_norm")
    median = float(np.median(norms.patch_norms))
    assert norms.patch_norms.max() < 1.5 * median
    assert norms.patch_norms.min() > 0.6 * median
    assert high_norm_patches(norms, factor=1.5) == []
    assert norms.prefix_names == ("class",)
