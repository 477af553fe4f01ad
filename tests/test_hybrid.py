"""A hybrid's CNN stem (vitviz.forward.hybrid): its feature map is the token grid."""

import pytest

from tests.support.tiny_models import tiny_loaded
from vitviz.forward.hybrid import hybrid_stem
from vitviz.models import ModelError
from vitviz.preprocess import image_view


def test_hybrid_stem_feature_map_matches_the_token_grid(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "hybrid")  # 96 px; stem ÷4 → 24×24 cells; 8×8-cell patches → 3×3
    stem = hybrid_stem(loaded, image_view(cat, loaded.facts), num_channels=4)
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
        loaded = tiny_loaded(tiny_models, key)
        hybrid_stem(loaded, image_view(cat, loaded.facts))
