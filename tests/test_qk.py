"""Queries and keys of one head (vitviz.maths.qk, vitviz.forward.qk): captured, reproducing the attention, projected to 2-D."""

import numpy as np
import pytest
import torch

from tests.support.tiny_models import TRANSFORMER_KEYS, state_copy, tiny_loaded
from vitviz.capture import QueryKeyCapture, attention_modules
from vitviz.figures.anatomy import (
    position_colours,
    query_key_figure,
)
from vitviz.forward.attention import record_attention
from vitviz.forward.qk import query_keys
from vitviz.maths import qk
from vitviz.preprocess import image_view


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_captured_queries_and_keys_reproduce_the_captured_attention(tiny_models, cat, key):
    loaded = tiny_loaded(tiny_models, key)
    layer, head = loaded.facts.num_layers - 1, loaded.facts.num_heads - 1
    source = query_keys(loaded, image_view(cat, loaded.facts), layer, head)
    recomputed = qk.attention_from_queries_keys(source.queries, source.keys, source.scale)
    np.testing.assert_allclose(recomputed, source.attention, atol=1e-5)
    assert source.reproduction_error() < 1e-5
    assert source.queries.shape == (loaded.facts.num_tokens, loaded.facts.embed_dim // loaded.facts.num_heads)
    # The attention is the model's own, as vitviz.capture records it.
    record = record_attention(loaded, image_view(cat, loaded.facts))
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
    loaded = tiny_loaded(tiny_models, "registers")
    fused = [module.fused_attn for module in attention_modules(loaded.model)]
    before = state_copy(loaded.model)
    query_keys(loaded, image_view(cat, loaded.facts), 0, 0)
    assert [module.fused_attn for module in attention_modules(loaded.model)] == fused
    assert all(torch.equal(before[name], tensor) for name, tensor in loaded.model.state_dict().items())
    assert not any(module._forward_hooks for module in loaded.model.modules())


def test_aligning_queries_and_keys_leaves_the_attention_unchanged(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "vit")
    source = query_keys(loaded, image_view(cat, loaded.facts), 1, 2)
    queries, keys = qk.align_queries_keys(source.queries, source.keys)
    np.testing.assert_allclose(
        qk.attention_from_queries_keys(queries, keys, source.scale), source.attention, atol=1e-5
    )
    np.testing.assert_allclose(
        np.linalg.norm(queries, axis=1).mean(), np.linalg.norm(keys, axis=1).mean(), rtol=1e-9
    )


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_places_every_query_and_key(tiny_models, cat, method):
    loaded = tiny_loaded(tiny_models, "registers")
    source = query_keys(loaded, image_view(cat, loaded.facts), 1, 0)
    projection = qk.project_queries_keys(source, method=method)
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


@pytest.mark.slow
def test_dinov2_queries_and_keys_reproduce_its_attention(dinov2, cat):
    source = query_keys(dinov2, image_view(cat, dinov2.facts), 11, 3)
    assert source.queries.shape == (257, 64)
    assert source.reproduction_error() < 1e-5
