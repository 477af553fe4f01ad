"""All heads at once (vitviz.maths.model_view) and its clickable mosaic figure."""

import numpy as np
import pytest

from tests.support.tiny_models import TRANSFORMER_KEYS, tiny_loaded
from vitviz.figures.anatomy import (
    HEAD_CENTRES_NAME,
    model_view_figure,
    selected_head,
)
from vitviz.forward.attention import record_attention
from vitviz.maths.attention import class_attention_map, patch_token, query_attention_map
from vitviz.maths.model_view import model_view_maps
from vitviz.preprocess import image_view


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_model_view_equals_the_class_attention_map_of_every_layer_and_head(tiny_models, cat, key):
    loaded = tiny_loaded(tiny_models, key)
    record = record_attention(loaded, image_view(cat, loaded.facts))
    maps = model_view_maps(record)
    assert maps.shape == (record.num_layers, record.num_heads, *record.grid_size)
    for layer in range(record.num_layers):
        for head in range(record.num_heads):
            # Exact: both are slices of the same record, no arithmetic between them.
            np.testing.assert_array_equal(maps[layer, head], class_attention_map(record, layer, head))


def test_model_view_of_a_patch_equals_its_query_attention(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "vit_rectangular")
    record = record_attention(loaded, image_view(cat, loaded.facts))
    maps = model_view_maps(record, (2, 1))
    query = patch_token(record, 2, 1)
    for layer in range(record.num_layers):
        for head in range(record.num_heads):
            # Exact: both are slices of the same record.
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
