"""Principal components of the patch-embedding filters (vitviz.maths.filters), the paper's Fig. 7 left."""

import numpy as np
import pytest

from vitviz.maths.filters import (
    FiltersNotApplicableError,
    component_tiles,
    filter_components,
    patch_embedding_filters,
    tile_mosaic,
)
from vitviz.models import model_facts


def assert_orthonormal(components: np.ndarray) -> None:
    flat = components.reshape(components.shape[0], -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(flat.shape[0]), atol=1e-8)


def test_filters_made_of_two_patterns_have_two_components():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(2, 3 * 4 * 4))
    weights = rng.normal(size=(64, 2)) * [3.0, 1.0]
    filters = (weights @ np.stack([first, second]) + 1e-3 * rng.normal(size=(64, 48))).reshape(64, 3, 4, 4)
    result = filter_components(filters, num_components=5)
    assert result.components.shape == (5, 3, 4, 4) and result.num_filters == 64
    assert result.explained_variance_ratio[:2].sum() > 0.999
    assert result.explained_variance_ratio[0] > result.explained_variance_ratio[1]
    assert_orthonormal(result.components)
    # The two components span the two patterns.
    basis = result.components[:2].reshape(2, -1)
    for pattern in (first, second):
        projected = basis.T @ (basis @ pattern)
        np.testing.assert_allclose(projected, pattern, rtol=1e-3, atol=1e-3)


def test_bundled_dinov2_filter_components_are_orthonormal_and_explain_at_most_all(dinov2):
    filters = patch_embedding_filters(dinov2.model, dinov2.facts)
    assert filters.shape == (384, 3, 14, 14)
    result = filter_components(filters)
    assert result.components.shape == (28, 3, 14, 14)
    ratios = result.explained_variance_ratio
    assert 0 < ratios.sum() <= 1 and np.all(np.diff(ratios) <= 1e-12)
    assert_orthonormal(result.components)
    tiles = component_tiles(result.components)
    assert tiles.shape == (28, 14, 14, 3) and tiles.min() == 0.0 and tiles.max() == 1.0
    assert tile_mosaic(tiles, columns=7, scale=4, gap=2).shape == (4 * 58 + 2, 7 * 58 + 2, 3)


def test_trained_filters_concentrate_more_variance_than_untrained_ones(dinov2, dinov2_twin):
    trained = filter_components(patch_embedding_filters(dinov2.model, dinov2.facts))
    untrained = filter_components(patch_embedding_filters(dinov2_twin.model, dinov2_twin.facts))
    # Measured: 31.7% against 20.2% in the first 28 components; 2.8% against 0.8% in the first.
    assert trained.explained_variance_ratio.sum() > untrained.explained_variance_ratio.sum() + 0.08
    assert trained.explained_variance_ratio[0] > 2.5 * untrained.explained_variance_ratio[0]


def test_hybrids_and_cnns_have_no_rgb_filters(tiny_models):
    with pytest.raises(FiltersNotApplicableError, match=r"hybrid.*8×8 over the 64 channels"):
        patch_embedding_filters(tiny_models["hybrid"], model_facts("hybrid", tiny_models["hybrid"]))
    with pytest.raises(FiltersNotApplicableError, match="CNN"):
        patch_embedding_filters(tiny_models["cnn"], model_facts("resnet18", tiny_models["cnn"]))
