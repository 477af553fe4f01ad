"""Anatomy views 5–9 as a library: resolution, hybrid stem, token norms, all heads, queries and keys."""

import numpy as np
import pytest
import timm
import torch
from scipy.stats import spearmanr

from tests.conftest import TINY_MODELS
from vitviz.capture import QueryKeyCapture, attention_modules
from vitviz.figures.anatomy import (
    HEAD_CENTRES_NAME,
    model_view_figure,
    position_colours,
    query_key_figure,
    selected_head,
)
from vitviz.images import builtin_photo
from vitviz.maths.attention import class_attention_map, patch_token, query_attention_map, record_attention
from vitviz.maths.hybrid import hybrid_stem
from vitviz.maths.model_view import model_view_maps
from vitviz.maths.qk import (
    align_queries_keys,
    attention_from_queries_keys,
    project_queries_keys,
    query_keys,
)
from vitviz.maths.resolution import (
    check_input_size,
    compare_resolutions,
    interpolate_position_embedding,
    position_embedding_grid,
    resize_model,
    resolution_choices,
)
from vitviz.maths.token_features import (
    TokenNorms,
    high_norm_patches,
    output_tokens,
    patch_feature_colours,
    principal_components_rgb,
    token_norms,
)
from vitviz.models import LoadedModel, ModelError, load_model, model_facts
from vitviz.preprocess import explanation_tensor
from vitviz.weights import fit_position_embedding

TRANSFORMERS = ("vit", "deit_distilled", "registers", "hybrid", "vit_rectangular")


@pytest.fixture(scope="module")
def cat():
    return builtin_photo("cat (chelsea)")


def _loaded(tiny_models, key: str) -> LoadedModel:
    name = TINY_MODELS[key][0]
    model = tiny_models[key]
    return LoadedModel(model, model_facts(name, model), "random", torch.device("cpu"), None)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# 5. Resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", TRANSFORMERS)
def test_resized_copy_has_the_new_grid_and_the_shared_model_is_unchanged(tiny_models, key):
    loaded = _loaded(tiny_models, key)
    facts = loaded.facts
    before = _state(loaded.model)
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
    assert torch.equal(same, embedding)


def test_resizing_to_the_own_size_returns_the_model_itself(tiny_models):
    loaded = _loaded(tiny_models, "vit")
    assert resize_model(loaded, loaded.facts.input_size) is loaded


def test_resized_position_embedding_equals_the_load_path_resampling(tiny_models):
    loaded = _loaded(tiny_models, "vit")  # 64 px, 4×4 grid
    resized = resize_model(loaded, (112, 112))  # 7×7 grid
    built = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112, depth=2)
    expected = fit_position_embedding({"pos_embed": loaded.model.pos_embed.detach()}, built)["pos_embed"]
    torch.testing.assert_close(resized.model.pos_embed.detach(), expected, rtol=0, atol=0)
    # Prefix (class) row is carried over untouched.
    torch.testing.assert_close(resized.model.pos_embed[:, 0], loaded.model.pos_embed[:, 0], rtol=0, atol=0)
    assert position_embedding_grid(resized.model).shape == (7, 7, loaded.facts.embed_dim)


def test_register_model_keeps_prefix_tokens_out_of_the_position_grid(tiny_models):
    loaded = _loaded(tiny_models, "registers")  # no_embed_class: pos_embed holds patches only
    assert position_embedding_grid(loaded.model).shape == (4, 4, loaded.facts.embed_dim)
    resized = resize_model(loaded, (84, 84))
    assert resized.model.pos_embed.shape[1] == 36
    assert resized.facts.num_tokens == 36 + 5


def test_sizes_that_do_not_fit_are_refused_with_a_reason(tiny_models):
    facts = _loaded(tiny_models, "vit").facts
    with pytest.raises(ModelError, match="not a multiple of the 16×16 px token stride"):
        check_input_size(facts, (100, 100))
    with pytest.raises(ModelError, match="stops at 1024"):
        check_input_size(facts, (16 * 40, 16 * 40))
    with pytest.raises(ModelError, match="is a CNN"):
        check_input_size(_loaded(tiny_models, "cnn").facts, (224, 224))


def test_resolution_choices_keep_the_aspect_ratio_and_include_the_own_size(tiny_models):
    facts = _loaded(tiny_models, "vit_rectangular").facts  # 48×64 px, 3×4 grid
    choices = resolution_choices(facts)
    assert facts.input_size in choices
    assert choices[0] == (32, 48) and choices[-1] == (16 * 12, 16 * 16)
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in choices)


def test_compare_resolutions_gives_maps_of_both_grids(tiny_models, cat):
    loaded = _loaded(tiny_models, "deit_distilled")
    before, after = compare_resolutions(loaded, cat, (96, 96))
    assert before.class_attention.shape == before.rollout.shape == (4, 4)
    assert after.class_attention.shape == after.rollout.shape == (6, 6)
    assert before.position_rgb.shape == (4, 4, 3) and after.position_rgb.shape == (6, 6, 3)
    assert after.pixels.shape == (96, 96, 3)
    assert before.predictions is not None and len(after.predictions) == 5


# 6. Hybrid stem ------------------------------------------------------------------------------


def test_hybrid_stem_feature_map_matches_the_token_grid(tiny_models, cat):
    loaded = _loaded(tiny_models, "hybrid")  # 96 px; stem ÷4 → 24×24 cells; 8×8-cell patches → 3×3
    stem = hybrid_stem(loaded, cat, num_channels=4)
    channels, height, width = stem.feature_shape
    assert (height // stem.patch_size[0], width // stem.patch_size[1]) == loaded.facts.grid_size == (3, 3)
    assert stem.feature_ratio == (4, 4) and stem.patch_size == (8, 8)
    assert stem.stride_px == loaded.facts.stride_px == (32, 32)
    assert stem.channel_maps.shape == (4, height, width) and stem.mean_map.shape == (height, width)
    assert stem.projection == f"Conv2d({channels} → 192, kernel 8×8, stride 8×8)"
    spread = [stem.channel_maps[index].std() for index in range(4)]
    assert spread == sorted(spread, reverse=True)


@pytest.mark.parametrize("key", ["vit", "cnn"])
def test_models_without_a_cnn_stem_say_so(tiny_models, cat, key):
    with pytest.raises(ModelError, match="no CNN stem"):
        hybrid_stem(_loaded(tiny_models, key), cat)


# 7. Token norms and features -----------------------------------------------------------------


@pytest.mark.parametrize("key", TRANSFORMERS)
def test_token_norms_cover_the_grid_and_name_every_prefix_token(tiny_models, cat, key):
    loaded = _loaded(tiny_models, key)
    tokens = output_tokens(loaded, cat)
    with torch.inference_mode():
        features = loaded.model.forward_features(explanation_tensor(cat, loaded.facts))[0].numpy()
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
    assert output_tokens(_loaded(tiny_models, "deit_distilled"), cat).prefix_names == (
        "class",
        "distillation",
    )
    names = output_tokens(_loaded(tiny_models, "registers"), cat).prefix_names
    assert names == ("class", "register 1", "register 2", "register 3", "register 4")


@pytest.mark.parametrize("key", TRANSFORMERS)
def test_patch_feature_colours_are_an_rgb_image_in_the_unit_range(tiny_models, cat, key):
    loaded = _loaded(tiny_models, key)
    colours = patch_feature_colours(output_tokens(loaded, cat))
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


# 8. All heads at once ------------------------------------------------------------------------


@pytest.mark.parametrize("key", TRANSFORMERS)
def test_model_view_equals_the_class_attention_map_of_every_layer_and_head(tiny_models, cat, key):
    record = record_attention(_loaded(tiny_models, key), cat)
    maps = model_view_maps(record)
    assert maps.shape == (record.num_layers, record.num_heads, *record.grid_size)
    for layer in range(record.num_layers):
        for head in range(record.num_heads):
            np.testing.assert_array_equal(maps[layer, head], class_attention_map(record, layer, head))


def test_model_view_of_a_patch_equals_its_query_attention(tiny_models, cat):
    record = record_attention(_loaded(tiny_models, "vit_rectangular"), cat)
    maps = model_view_maps(record, (2, 1))
    query = patch_token(record, 2, 1)
    for layer in range(record.num_layers):
        for head in range(record.num_heads):
            np.testing.assert_array_equal(maps[layer, head], query_attention_map(record, layer, head, query))


def test_model_view_figure_is_one_mosaic_with_a_clickable_centre_per_head():
    maps = np.random.default_rng(0).random((12, 12, 14, 14))
    figure = model_view_figure(maps, "all heads", selected=(3, 7))
    heatmaps = [trace for trace in figure.data if trace.type == "heatmap"]
    (centres,) = [trace for trace in figure.data if trace.name == HEAD_CENTRES_NAME]
    assert len(heatmaps) == 1
    mosaic = np.asarray(heatmaps[0].z, dtype=float)
    assert mosaic.shape == (12 * 15 - 1, 12 * 15 - 1)
    assert np.isnan(mosaic[14, :]).all()  # the gap between layers 0 and 1
    assert len(centres.x) == 144
    index = 3 * 12 + 7
    assert tuple(centres.customdata[index][:2]) == (3, 7)
    # The centre of head (3, 7) lies in the middle of its map in the mosaic.
    assert (centres.x[index], centres.y[index]) == (7 * 15 + 6.5, 3 * 15 + 6.5)
    np.testing.assert_allclose(mosaic[3 * 15 : 3 * 15 + 14, 7 * 15 : 7 * 15 + 14].max(), 1.0)


def test_selected_head_reads_clicks_in_both_customdata_shapes():
    as_list = {"selection": {"points": [{"customdata": [4, 2, 0.5]}]}}
    as_dict = {"selection": {"points": [{"customdata": {"0": 4, "1": 2, "2": 0.5}}]}}
    assert selected_head(as_list, 12, 6) == (4, 2)
    assert selected_head(as_dict, 12, 6) == (4, 2)
    assert selected_head({"selection": {"points": [{"customdata": [12, 0]}]}}, 12, 6) is None
    assert selected_head(None, 12, 6) is None


# 9. Queries and keys -------------------------------------------------------------------------


@pytest.mark.parametrize("key", TRANSFORMERS)
def test_captured_queries_and_keys_reproduce_the_captured_attention(tiny_models, cat, key):
    loaded = _loaded(tiny_models, key)
    layer, head = loaded.facts.num_layers - 1, loaded.facts.num_heads - 1
    source = query_keys(loaded, cat, layer, head)
    recomputed = attention_from_queries_keys(source.queries, source.keys, source.scale)
    np.testing.assert_allclose(recomputed, source.attention, atol=1e-5)
    assert source.reproduction_error() < 1e-5
    assert source.queries.shape == (loaded.facts.num_tokens, loaded.facts.embed_dim // loaded.facts.num_heads)
    # The attention is the model's own, as vitviz.capture records it.
    record = record_attention(loaded, cat)
    np.testing.assert_allclose(source.attention, record.attentions[layer, head], atol=1e-6)


def test_query_key_hooks_are_removed_afterwards_even_when_the_forward_raises(tiny_models):
    model = tiny_models["vit"]
    module = attention_modules(model)[1]
    with QueryKeyCapture(model, 1) as capture:
        model(torch.zeros(1, 3, 64, 64))
    assert capture.queries.shape == capture.keys.shape == (1, 3, 17, 64)
    assert not module.q_norm._forward_hooks and not module.k_norm._forward_hooks
    with pytest.raises(AssertionError), QueryKeyCapture(model, 1):  # timm refuses a wrong input size
        model(torch.zeros(1, 3, 80, 80))
    assert not module.q_norm._forward_hooks and not module.k_norm._forward_hooks


def test_query_keys_leave_the_model_as_it_was(tiny_models, cat):
    loaded = _loaded(tiny_models, "registers")
    fused = [module.fused_attn for module in attention_modules(loaded.model)]
    before = _state(loaded.model)
    query_keys(loaded, cat, 0, 0)
    assert [module.fused_attn for module in attention_modules(loaded.model)] == fused
    assert all(torch.equal(before[name], tensor) for name, tensor in loaded.model.state_dict().items())
    assert not any(module._forward_hooks for module in loaded.model.modules())


def test_aligning_queries_and_keys_leaves_the_attention_unchanged(tiny_models, cat):
    source = query_keys(_loaded(tiny_models, "vit"), cat, 1, 2)
    queries, keys = align_queries_keys(source.queries, source.keys)
    np.testing.assert_allclose(
        attention_from_queries_keys(queries, keys, source.scale), source.attention, atol=1e-5
    )
    np.testing.assert_allclose(
        np.linalg.norm(queries, axis=1).mean(), np.linalg.norm(keys, axis=1).mean(), rtol=1e-9
    )


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_places_every_query_and_key(tiny_models, cat, method):
    source = query_keys(_loaded(tiny_models, "registers"), cat, 1, 0)
    projection = project_queries_keys(source, method=method)
    tokens = len(source.queries)
    assert projection.queries.shape == projection.keys.shape == (tokens, 2)
    assert np.isfinite(projection.queries).all() and np.isfinite(projection.keys).all()
    if method == "pca":
        assert projection.explained_variance_ratio.shape == (2,)
    figure = query_key_figure(projection, source, "q & k")
    assert [trace.name for trace in figure.data] == [
        "queries of patches (●)",
        "keys of patches (✕)",
        "prefix-token queries",
        "prefix-token keys",
    ]
    assert list(figure.data[2].text) == [f"{name} q" for name in source.prefix_names]


def test_position_colours_differ_for_every_patch():
    colours = position_colours((6, 9)).reshape(-1, 3)
    assert colours.min() >= 0.0 and colours.max() <= 1.0
    assert len({tuple(np.round(colour, 4)) for colour in colours}) == 54


# Real weights: bundled DINOv2 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dinov2():
    return load_model("vit_small_patch14_dinov2", "bundled", "cpu")


@pytest.mark.slow
def test_dinov2_at_448_px_sees_the_cat_where_it_did_at_224(dinov2, cat):
    state = _state(dinov2.model)
    before, after = compare_resolutions(dinov2, cat, (448, 448))
    assert before.facts.grid_size == (16, 16) and after.facts.grid_size == (32, 32)
    assert after.facts.num_tokens == 1025
    upsampled_rollout = np.kron(before.rollout, np.ones((2, 2)))
    upsampled_attention = np.kron(before.class_attention, np.ones((2, 2)))
    # Measured on the 8 built-in photos: rank correlation of rollout 0.45–0.93 (cat 0.65); Pearson of
    # the last layer's class attention 0.58–0.75 (cat 0.66). Rollout's Pearson is low (cat 0.01)
    # because a few peak tokens, at different places at each size, dominate its raw values.
    assert spearmanr(upsampled_rollout.ravel(), after.rollout.ravel()).statistic > 0.5
    assert np.corrcoef(upsampled_attention.ravel(), after.class_attention.ravel())[0, 1] > 0.5
    assert all(torch.equal(state[name], tensor) for name, tensor in dinov2.model.state_dict().items())
    assert dinov2.model.pos_embed.shape == (1, 257, 384)


@pytest.mark.slow
def test_dinov2_small_has_no_high_norm_artefact_tokens(dinov2, cat):
    # Darcet et al. find high-norm tokens in large ViTs (ViT-L and up); in the bundled ViT-S every
    # patch norm stayed within 0.77–1.38× the median on the built-in photos (before the final norm).
    norms = token_norms(output_tokens(dinov2, cat), "before_norm")
    median = float(np.median(norms.patch_norms))
    assert norms.patch_norms.max() < 1.5 * median
    assert norms.patch_norms.min() > 0.6 * median
    assert high_norm_patches(norms, factor=1.5) == []
    assert norms.prefix_names == ("class",)


@pytest.mark.slow
def test_dinov2_queries_and_keys_reproduce_its_attention(dinov2, cat):
    source = query_keys(dinov2, cat, 11, 3)
    assert source.queries.shape == (257, 64)
    assert source.reproduction_error() < 1e-5
