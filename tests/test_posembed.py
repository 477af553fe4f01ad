"""Position-embedding similarity (vitviz.maths.posembed): exact on synthetic tables, local in DINOv2."""

import numpy as np
import pytest
import timm

from vitviz.maths import posembed
from vitviz.maths.distance import patch_distances
from vitviz.models import model_facts


def test_one_hot_embeddings_are_similar_only_to_themselves():
    np.testing.assert_allclose(posembed.position_similarity(np.eye(9)), np.eye(9))


def test_angles_on_a_circle_give_their_cosines():
    # Four positions at 0°, 90°, 180° and 270°, different lengths: similarity is cos(θi − θj).
    angles = np.array([0, 90, 180, 270]) * np.pi / 180
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [2], [3], [0.5]])
    expected = np.array([[1, 0, -1, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, -1, 0, 1]], float)
    np.testing.assert_allclose(posembed.position_similarity(embeddings), expected, atol=1e-12)


def sinusoidal_embeddings(rows: int, cols: int, frequency: float) -> np.ndarray:
    """(rows·cols, 4): cos and sin of row and column angles; cosine similarity is known in closed form."""
    row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    row, col = row.ravel() * frequency, col.ravel() * frequency
    return np.stack([np.cos(row), np.sin(row), np.cos(col), np.sin(col)], axis=1)


def test_sinusoidal_embeddings_give_the_mean_cosine_of_row_and_column_offsets():
    rows, cols, frequency = 4, 5, 0.4
    similarity = posembed.position_similarity(sinusoidal_embeddings(rows, cols, frequency))
    row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    row, col = row.ravel(), col.ravel()
    expected = (
        np.cos(frequency * (row[:, None] - row[None, :])) + np.cos(frequency * (col[:, None] - col[None, :]))
    ) / 2  # each half of the vector has norm 1, the whole √2
    np.testing.assert_allclose(similarity, expected, atol=1e-12)
    assert posembed.local_fraction(similarity, (rows, cols)) == 1.0


def test_local_fraction_counts_king_steps():
    # On a 3x3 grid, 0, 4 and 8 are most like a diagonal neighbour (1 step: 0→4, 4→0, 8→4);
    # 1↔7, 2↔6 and 3↔5 are most like a position 2 steps away.
    rows = cols = 3
    similarity = np.eye(9)
    for a, b in [(0, 4), (1, 7), (2, 6), (3, 5), (8, 4)]:
        similarity[a, b] = similarity[b, a] = 0.5
    assert posembed.local_fraction(similarity, (rows, cols), radius=1) == pytest.approx(3 / 9)
    assert posembed.local_fraction(similarity, (rows, cols), radius=2) == 1.0


def test_mosaic_places_each_position_small_map_in_its_slot():
    rows, cols = 2, 3
    similarity = np.arange(36, dtype=float).reshape(6, 6)
    mosaic = posembed.similarity_mosaic(similarity, (rows, cols), gap=1)
    assert mosaic.shape == (2 * 3 - 1, 3 * 4 - 1)
    # Slot (1, 2) starts at row 1·(2+1) = 3, column 2·(3+1) = 8 and holds position 5's row.
    np.testing.assert_array_equal(
        mosaic[3:5, 8:11], similarity[5].reshape(rows, cols)
    )  # exact: placed, not computed
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[:, 3]).all()


def test_large_grids_show_every_kth_position():
    assert posembed.mosaic_step((16, 16)) == 1 and posembed.mosaic_step((37, 37)) == 3
    similarity = np.random.default_rng(0).random((37 * 37, 37 * 37))
    mosaic = posembed.similarity_mosaic(similarity, (37, 37), gap=1, step=3)
    assert mosaic.shape == (13 * 38 - 1, 13 * 38 - 1)
    # Slot (1, 2) holds position (3, 6).
    np.testing.assert_allclose(mosaic[38:75, 76:113], similarity[3 * 37 + 6].reshape(37, 37))


def test_prefix_rows_are_dropped_unless_the_model_has_none():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1)
    table = model.pos_embed.detach()[0].numpy()  # (1 + 16, D)
    # Exact: the grid's rows are read out of the model's table, not computed.
    np.testing.assert_array_equal(
        posembed.grid_position_embedding(model, model_facts("vit_tiny", model)), table[1:]
    )
    registers = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, depth=1)
    assert registers.pos_embed.shape[1] == 16  # no_embed_class: patch rows only
    np.testing.assert_array_equal(
        posembed.grid_position_embedding(registers, model_facts("reg4", registers)),
        registers.pos_embed.detach()[0].numpy(),
    )


def test_models_without_a_position_table_say_so(tiny_models):
    with pytest.raises(posembed.NoPositionEmbeddingError, match="CNN"):
        posembed.grid_position_embedding(tiny_models["cnn"], model_facts("resnet18", tiny_models["cnn"]))
    rotary = timm.create_model("vit_medium_patch16_rope_reg1_gap_256", pretrained=False, depth=1)
    with pytest.raises(posembed.NoPositionEmbeddingError, match="no absolute position embedding"):
        posembed.grid_position_embedding(rotary, model_facts("rope", rotary))


def test_dinov2_position_embeddings_are_local(dinov2, dinov2_twin):
    grid = dinov2.facts.grid_size
    similarity = posembed.position_similarity(posembed.grid_position_embedding(dinov2.model, dinov2.facts))
    # Measured: the most similar other position is a direct neighbour for 51% of positions and
    # within two steps for 100% (chance: 3% and 9%). The 37×37 table resampled to 16×16 puts some
    # nearest matches two cells away.
    assert posembed.local_fraction(similarity, grid, radius=2) >= 0.95
    assert posembed.local_fraction(similarity, grid, radius=1) >= 0.4
    # Similarity falls with distance: mean over pairs 1, 4 and 12 cells apart (0.76, 0.45, 0.22).
    distances = patch_distances(grid, (1, 1))
    by_distance = [similarity[np.isclose(distances, step)].mean() for step in (1, 4, 12)]
    assert by_distance[0] > by_distance[1] + 0.2 > by_distance[2] + 0.2
    untrained = posembed.position_similarity(
        posembed.grid_position_embedding(dinov2_twin.model, dinov2_twin.facts)
    )
    assert posembed.local_fraction(untrained, grid, radius=2) < 0.3
