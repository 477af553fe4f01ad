"""Exact tests of mean attention distance on synthetic attention over known grids."""

import numpy as np

from vitviz.maths.distance import mean_attention_distance, patch_distances


def test_identity_attention_has_zero_distance():
    attention = np.eye(1 + 9)[None, None]  # one prefix token, 3x3 grid
    np.testing.assert_allclose(mean_attention_distance(attention, (3, 3), (16, 16), 1), [[0.0]])


def test_uniform_attention_over_a_row_of_two_patches():
    # Two patches 16 px apart, each attending half to itself and half to the other: 8 px.
    attention = np.full((1, 1, 2, 2), 0.5)
    np.testing.assert_allclose(mean_attention_distance(attention, (1, 2), (16, 16), 0), [[8.0]])


def test_uniform_attention_over_a_2x2_grid_is_known():
    # From any corner of a 2x2 grid of 10-px patches: 0, 10, 10 and 10·√2, each weighted 1/4.
    attention = np.full((1, 1, 4, 4), 0.25)
    expected = (0 + 10 + 10 + 10 * np.sqrt(2)) / 4
    np.testing.assert_allclose(mean_attention_distance(attention, (2, 2), (10, 10), 0), [[expected]])


def test_prefix_weights_are_dropped_not_renormalised():
    # Each patch puts half its weight on the class token and half on the other patch.
    attention = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])[None, None]
    # Patch rows [0.0, 0.5] and [0.5, 0.0] over distances 16: 0.5 * 16 = 8 px each.
    np.testing.assert_allclose(mean_attention_distance(attention, (1, 2), (16, 16), 1), [[8.0]])


def test_rectangular_strides_measure_in_pixels():
    distances = patch_distances((2, 2), (8, 6))
    np.testing.assert_allclose(distances[0], [0.0, 6.0, 8.0, 10.0])


def test_shape_follows_leading_dimensions():
    attention = np.random.default_rng(0).dirichlet(np.ones(5), size=(4, 3, 5))  # (layers, heads, N, N)
    assert mean_attention_distance(attention, (2, 2), (16, 16), 1).shape == (4, 3)
