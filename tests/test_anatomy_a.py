"""Anatomy views 1–4 in the library and the CLI: tokens, filters, position similarity, attention distance."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vitviz.capture import attention_modules
from vitviz.images import BUILTIN_PHOTOS, builtin_photo
from vitviz.maths.attention import record_attention
from vitviz.maths.distance import (
    attention_distances_over_images,
    mean_attention_distance,
    patch_distances,
    uniform_attention_distance,
)
from vitviz.maths.filters import (
    FiltersNotApplicableError,
    component_tiles,
    filter_components,
    patch_embedding_filters,
    tile_mosaic,
)
from vitviz.maths.posembed import (
    NoPositionEmbeddingError,
    grid_position_embedding,
    local_fraction,
    mosaic_step,
    position_similarity,
    similarity_mosaic,
)
from vitviz.maths.tokens_as_words import cut_into_patches, linear_patch_embedding, trace_tokens
from vitviz.models import LoadedModel, ModelError, load_model, model_facts, untrained_twin
from vitviz.preprocess import explanation_tensor

CAT, COFFEE = str(BUILTIN_PHOTOS["cat (chelsea)"]), str(BUILTIN_PHOTOS["coffee"])


def as_loaded(model: torch.nn.Module, name: str) -> LoadedModel:
    return LoadedModel(model, model_facts(name, model), "random", torch.device("cpu"), None)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [builtin_photo(name) for name in ("cat (chelsea)", "coffee", "astronaut")]


@pytest.fixture(scope="module")
def dinov2() -> LoadedModel:
    return load_model("vit_small_patch14_dinov2", "bundled", "cpu")


@pytest.fixture(scope="module")
def dinov2_twin(dinov2) -> LoadedModel:
    return untrained_twin(dinov2)


# Mean attention distance over a set of images -----------------------------------------------


def test_uniform_reference_is_the_mean_of_all_patch_distances():
    # 2x2 grid of 10-px patches: from any corner 0, 10, 10 and 10·√2.
    assert uniform_attention_distance((2, 2), (10, 10)) == pytest.approx((20 + 10 * np.sqrt(2)) / 4)
    # A 1x3 row of 16-px patches: distances 0,16,32 / 16,0,16 / 32,16,0 → 128 / 9.
    assert uniform_attention_distance((1, 3), (16, 16)) == pytest.approx(128 / 9)


@pytest.mark.parametrize("family", ["vit", "deit_distilled", "registers", "hybrid", "vit_rectangular"])
def test_image_set_distances_match_one_image_at_a_time(tiny_models, photos, family):
    from tests.conftest import TINY_MODELS

    loaded = as_loaded(tiny_models[family], TINY_MODELS[family][0])
    facts = loaded.facts
    result = attention_distances_over_images(loaded, photos, batch_size=2)
    assert result.per_image.shape == (3, facts.num_layers, facts.num_heads)
    for index, photo in enumerate(photos):
        record = record_attention(loaded, photo)
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
    from tests.conftest import TINY_MODELS

    loaded = as_loaded(tiny_models["hybrid"], TINY_MODELS["hybrid"][0])
    assert loaded.facts.stride_px == (32, 32)  # 96 px input, 3x3 grid
    result = attention_distances_over_images(loaded, photos[:1])
    # Random heads attend almost evenly: close to the uniform 3x3 value in 32-px steps.
    assert result.uniform_reference == pytest.approx(uniform_attention_distance((3, 3), (32, 32)))
    assert np.all(np.abs(result.mean - result.uniform_reference) < 0.35 * result.uniform_reference)


def test_progress_counts_every_layer_of_every_batch(tiny_models, photos):
    from tests.conftest import TINY_MODELS

    loaded = as_loaded(tiny_models["vit"], TINY_MODELS["vit"][0])  # 2 layers
    calls: list[tuple[int, int]] = []
    attention_distances_over_images(loaded, photos, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(done, 4) for done in range(1, 5)]  # 2 batches × 2 layers
    calls.clear()
    attention_distances_over_images(loaded, photos, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]  # all three images in one forward pass


def test_distance_capture_leaves_the_model_as_it_found_it(tiny_models, photos):
    from tests.conftest import TINY_MODELS

    model = tiny_models["registers"]
    loaded = as_loaded(model, TINY_MODELS["registers"][0])
    flags = [module.fused_attn for module in attention_modules(model)]
    attention_distances_over_images(loaded, photos[:1])
    assert [module.fused_attn for module in attention_modules(model)] == flags
    assert all(not module.attn_drop._forward_hooks for module in attention_modules(model))


def test_distances_refuse_a_cnn_and_an_empty_set(tiny_models, photos):
    with pytest.raises(ModelError, match="CNN"):
        attention_distances_over_images(as_loaded(tiny_models["cnn"], "resnet18"), photos)
    from tests.conftest import TINY_MODELS

    with pytest.raises(ValueError, match="at least one image"):
        attention_distances_over_images(as_loaded(tiny_models["vit"], TINY_MODELS["vit"][0]), [])


# Position-embedding similarity --------------------------------------------------------------


def test_one_hot_embeddings_are_similar_only_to_themselves():
    np.testing.assert_allclose(position_similarity(np.eye(9)), np.eye(9))


def test_angles_on_a_circle_give_their_cosines():
    # Four positions at 0°, 90°, 180° and 270°, different lengths: similarity is cos(θi − θj).
    angles = np.array([0, 90, 180, 270]) * np.pi / 180
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [2], [3], [0.5]])
    expected = np.array([[1, 0, -1, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, -1, 0, 1]], float)
    np.testing.assert_allclose(position_similarity(embeddings), expected, atol=1e-12)


def sinusoidal_embeddings(rows: int, cols: int, frequency: float) -> np.ndarray:
    """(rows·cols, 4): cos and sin of row and column angles; cosine similarity is known in closed form."""
    row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    row, col = row.ravel() * frequency, col.ravel() * frequency
    return np.stack([np.cos(row), np.sin(row), np.cos(col), np.sin(col)], axis=1)


def test_sinusoidal_embeddings_give_the_mean_cosine_of_row_and_column_offsets():
    rows, cols, frequency = 4, 5, 0.4
    similarity = position_similarity(sinusoidal_embeddings(rows, cols, frequency))
    row, col = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    row, col = row.ravel(), col.ravel()
    expected = (
        np.cos(frequency * (row[:, None] - row[None, :])) + np.cos(frequency * (col[:, None] - col[None, :]))
    ) / 2  # each half of the vector has norm 1, the whole √2
    np.testing.assert_allclose(similarity, expected, atol=1e-12)
    assert local_fraction(similarity, (rows, cols)) == 1.0


def test_local_fraction_counts_king_steps():
    # On a 3x3 grid, 0, 4 and 8 are most like a diagonal neighbour (1 step: 0→4, 4→0, 8→4);
    # 1↔7, 2↔6 and 3↔5 are most like a position 2 steps away.
    rows = cols = 3
    similarity = np.eye(9)
    for a, b in [(0, 4), (1, 7), (2, 6), (3, 5), (8, 4)]:
        similarity[a, b] = similarity[b, a] = 0.5
    assert local_fraction(similarity, (rows, cols), radius=1) == pytest.approx(3 / 9)
    assert local_fraction(similarity, (rows, cols), radius=2) == 1.0


def test_mosaic_places_each_position_small_map_in_its_slot():
    rows, cols = 2, 3
    similarity = np.arange(36, dtype=float).reshape(6, 6)
    mosaic = similarity_mosaic(similarity, (rows, cols), gap=1)
    assert mosaic.shape == (2 * 3 - 1, 3 * 4 - 1)
    # Slot (1, 2) starts at row 1·(2+1) = 3, column 2·(3+1) = 8 and holds position 5's row.
    np.testing.assert_array_equal(mosaic[3:5, 8:11], similarity[5].reshape(rows, cols))
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[:, 3]).all()


def test_large_grids_show_every_kth_position():
    assert mosaic_step((16, 16)) == 1 and mosaic_step((37, 37)) == 3
    similarity = np.random.default_rng(0).random((37 * 37, 37 * 37))
    mosaic = similarity_mosaic(similarity, (37, 37), gap=1, step=3)
    assert mosaic.shape == (13 * 38 - 1, 13 * 38 - 1)
    # Slot (1, 2) holds position (3, 6).
    np.testing.assert_allclose(mosaic[38:75, 76:113], similarity[3 * 37 + 6].reshape(37, 37))


def test_prefix_rows_are_dropped_unless_the_model_has_none():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1)
    table = model.pos_embed.detach()[0].numpy()  # (1 + 16, D)
    np.testing.assert_array_equal(grid_position_embedding(model, model_facts("vit_tiny", model)), table[1:])
    registers = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, depth=1)
    assert registers.pos_embed.shape[1] == 16  # no_embed_class: patch rows only
    np.testing.assert_array_equal(
        grid_position_embedding(registers, model_facts("reg4", registers)),
        registers.pos_embed.detach()[0].numpy(),
    )


def test_models_without_a_position_table_say_so(tiny_models):
    with pytest.raises(NoPositionEmbeddingError, match="CNN"):
        grid_position_embedding(tiny_models["cnn"], model_facts("resnet18", tiny_models["cnn"]))
    rotary = timm.create_model("vit_medium_patch16_rope_reg1_gap_256", pretrained=False, depth=1)
    with pytest.raises(NoPositionEmbeddingError, match="no absolute position embedding"):
        grid_position_embedding(rotary, model_facts("rope", rotary))


# Patch-embedding filters --------------------------------------------------------------------


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


# Patches as words ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["vit", "registers", "vit_rectangular"])
def test_flattened_patches_times_one_matrix_are_the_patch_tokens(tiny_models, photos, family):
    from tests.conftest import TINY_MODELS

    loaded = as_loaded(tiny_models[family], TINY_MODELS[family][0])
    pixels = explanation_tensor(photos[0], loaded.facts)
    with torch.inference_mode():
        expected = loaded.model.patch_embed(pixels)[0]  # (rows·cols, D) from the strided convolution
    torch.testing.assert_close(linear_patch_embedding(loaded, pixels[0]), expected, rtol=1e-4, atol=1e-4)


def test_cells_are_cut_in_reading_order():
    pixels = np.arange(4 * 6 * 3).reshape(4, 6, 3)
    cells = cut_into_patches(pixels, (2, 3), (2, 2))
    assert cells.shape == (2, 3, 2, 2, 3)
    np.testing.assert_array_equal(cells[1, 2], pixels[2:4, 4:6])


@pytest.mark.parametrize(
    ("family", "steps"),
    [
        ("vit", [(3, 64, 64), (16, 768), (16, 192), (17, 192), (17, 192), (17, 192)]),
        ("deit_distilled", [(3, 64, 64), (16, 768), (16, 192), (18, 192), (18, 192), (18, 192)]),
        ("registers", [(3, 56, 56), (16, 588), (16, 384), (21, 384), (21, 384), (21, 384)]),
        ("hybrid", [(3, 96, 96), (64, 24, 24), (9, 4096), (9, 192), (10, 192), (10, 192), (10, 192)]),
    ],
)
def test_trace_records_the_real_shape_of_every_step(tiny_models, photos, family, steps):
    from tests.conftest import TINY_MODELS

    loaded = as_loaded(tiny_models[family], TINY_MODELS[family][0])
    trace = trace_tokens(loaded, photos[1])
    assert [step.shape for step in trace.steps] == steps
    assert trace.encoder_input.shape == steps[-1]
    names = {
        "vit": ("class",),
        "deit_distilled": ("class", "distillation"),
        "registers": ("class", "register 1", "register 2", "register 3", "register 4"),
        "hybrid": ("class",),
    }
    assert trace.prefix_names == names[family]


def test_trace_of_bundled_dinov2_names_the_paper_numbers(dinov2, photos):
    trace = trace_tokens(dinov2, photos[0])
    shapes = {step.name: step.shape for step in trace.steps}
    assert shapes["patches"] == (256, 588) and shapes["patch tokens"] == (256, 384)
    assert shapes["+ prefix tokens"] == (257, 384)
    assert "16×16 = 256 patches of 14×14 px" in trace.steps[1].explanation
    # The class token's row of the encoder input is the class token plus its position embedding.
    expected = (dinov2.model.cls_token + dinov2.model.pos_embed[:, 0]).reshape(-1).numpy()
    np.testing.assert_allclose(trace.encoder_input[0], expected, rtol=1e-5, atol=1e-6)


def test_a_cnn_has_no_tokens(tiny_models, photos):
    with pytest.raises(ModelError, match="CNN"):
        trace_tokens(as_loaded(tiny_models["cnn"], "resnet18"), photos[0])


# Untrained twins ----------------------------------------------------------------------------


def test_twin_keeps_size_and_classes_and_is_seeded(dinov2, dinov2_twin):
    assert dinov2_twin.facts == dinov2.facts and not dinov2_twin.trained
    state = torch.random.get_rng_state()
    again = untrained_twin(dinov2)
    assert torch.equal(torch.random.get_rng_state(), state), "the global random state moved"
    torch.testing.assert_close(again.model.pos_embed, dinov2_twin.model.pos_embed)
    assert not torch.equal(dinov2_twin.model.pos_embed, dinov2.model.pos_embed)


# Real weights: bundled DINOv2 ---------------------------------------------------------------


def test_dinov2_position_embeddings_are_local(dinov2, dinov2_twin):
    grid = dinov2.facts.grid_size
    similarity = position_similarity(grid_position_embedding(dinov2.model, dinov2.facts))
    # Measured: the most similar other position is a direct neighbour for 51% of positions and
    # within two steps for 100% (chance: 3% and 9%). The 37×37 table resampled to 16×16 puts some
    # nearest matches two cells away.
    assert local_fraction(similarity, grid, radius=2) >= 0.95
    assert local_fraction(similarity, grid, radius=1) >= 0.4
    # Similarity falls with distance: mean over pairs 1, 4 and 12 cells apart (0.76, 0.45, 0.22).
    distances = patch_distances(grid, (1, 1))
    by_distance = [similarity[np.isclose(distances, step)].mean() for step in (1, 4, 12)]
    assert by_distance[0] > by_distance[1] + 0.2 > by_distance[2] + 0.2
    untrained = position_similarity(grid_position_embedding(dinov2_twin.model, dinov2_twin.facts))
    assert local_fraction(untrained, grid, radius=2) < 0.3


def test_dinov2_early_layers_hold_both_local_and_global_heads(dinov2, dinov2_twin, photos):
    result = attention_distances_over_images(dinov2, photos)
    uniform = result.uniform_reference  # 116.6 px on the 16×16 grid of 14-px patches
    early = result.mean[:4]  # layers 0–3
    # Measured over these three photos: layers 0–3 reach from about 20 px to about 100 px.
    assert early.min() < 0.25 * uniform, early
    assert early.max() > 0.75 * uniform, early
    # Untrained heads attend almost evenly: every head sits near the uniform value.
    untrained = attention_distances_over_images(dinov2_twin, photos[:1]).mean
    assert np.all(np.abs(untrained - uniform) < 0.1 * uniform)


# The command line ---------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vitviz", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_posembed_saves_the_grid_similarity(tmp_path, dinov2):
    out = tmp_path / "sim.npy"
    result = run_cli("posembed", "--out", str(out))
    assert result.returncode == 0, result.stderr
    similarity = np.load(out)
    assert similarity.shape == (256, 256) and similarity.dtype == np.float32
    expected = position_similarity(grid_position_embedding(dinov2.model, dinov2.facts))
    np.testing.assert_allclose(similarity, expected, atol=1e-6)
    assert "16×16 grid" in result.stdout


@pytest.mark.slow
def test_cli_attention_distance_writes_one_row_per_layer_and_head(tmp_path, dinov2):
    out = tmp_path / "d.csv"
    result = run_cli("attention-distance", CAT, COFFEE, "--batch-size", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["layer", "head", "mean_distance_px"]
    assert [(int(row["layer"]), int(row["head"])) for row in rows] == [
        (layer, head) for layer in range(12) for head in range(6)
    ]
    values = np.array([float(row["mean_distance_px"]) for row in rows]).reshape(12, 6)
    expected = attention_distances_over_images(
        dinov2, [builtin_photo("cat (chelsea)"), builtin_photo("coffee")]
    )
    np.testing.assert_allclose(values, expected.mean, atol=1e-3)
    progress = [line for line in result.stderr.splitlines() if line.startswith("attention distance:")]
    assert len(progress) == 24 and progress[-1] == "attention distance: 24/24 layer passes (100%)"


@pytest.mark.slow
def test_cli_filters_writes_the_tile_picture(tmp_path):
    out = tmp_path / "pcs.png"
    result = run_cli("filters", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        assert picture.size == (7 * 58 + 2, 4 * 58 + 2)  # 4 rows of 7 tiles, 14 px × 4, 2-px gaps
    assert "28 principal components of 384 14×14 filters" in result.stdout


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
    assert_one_line_error(
        run_cli("posembed", "--model", "tf_efficientnet_lite0", "--out", str(tmp_path / "s.npy"))
    )
    assert_one_line_error(
        run_cli(
            "filters",
            "--model",
            "vit_tiny_r_s16_p8_224",
            "--weights",
            "random",
            "--out",
            str(tmp_path / "f.png"),
        )
    )
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not a photo")
    assert_one_line_error(run_cli("attention-distance", str(bad), "--out", str(tmp_path / "d.csv")))
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "d.csv").exists()
