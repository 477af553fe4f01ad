"""The Anatomy tabs' library functions compute on the view they are given: "whole" sees exactly the whole view's pixels."""

import numpy as np
import pytest
from PIL import Image

from tests.support.tiny_models import tiny_loaded
from vitviz.forward.distance import attention_distances_over_images
from vitviz.forward.hybrid import hybrid_stem
from vitviz.forward.qk import query_keys
from vitviz.forward.resolution import compare_resolutions
from vitviz.forward.token_features import output_tokens
from vitviz.forward.tokens_as_words import trace_tokens
from vitviz.preprocess import image_view

# Each function, reduced to one array that depends on every input pixel.
READINGS = {
    "output_tokens": lambda loaded, image, view: (
        output_tokens(loaded, image_view(image, loaded.facts, view)).after_norm
    ),
    "trace_tokens": lambda loaded, image, view: (
        trace_tokens(loaded, image_view(image, loaded.facts, view)).encoder_input
    ),
    "query_keys": lambda loaded, image, view: (
        query_keys(loaded, image_view(image, loaded.facts, view), 1, 0).queries
    ),
    "attention_distances": lambda loaded, image, view: (
        attention_distances_over_images(loaded, [image_view(image, loaded.facts, view)]).per_image
    ),
    "compare_resolutions": lambda loaded, image, view: (
        compare_resolutions(loaded, image_view(image, loaded.facts, view), loaded.facts.input_size)[
            0
        ].class_attention
    ),
}


def _wide_photo(cat: Image.Image) -> Image.Image:
    """The cat stretched to 6:1 (902×150), so the crop and whole views differ clearly."""
    return cat.resize((cat.width * 2, cat.height // 2))


@pytest.mark.parametrize("reading", list(READINGS))
def test_whole_view_sees_exactly_the_whole_view_pixels_and_differs_from_the_crop(tiny_models, cat, reading):
    loaded = tiny_loaded(tiny_models, "vit")
    photo = _wide_photo(cat)
    read = READINGS[reading]
    whole = read(loaded, photo, "whole")
    # The whole view's own pixels are already at the input size: seen whole again, they are unchanged.
    already_seen = Image.fromarray(image_view(photo, loaded.facts, "whole").pixels)
    np.testing.assert_allclose(read(loaded, already_seen, "whole"), whole, rtol=1e-5, atol=1e-5)
    assert not np.allclose(read(loaded, photo, "crop"), whole, atol=1e-4)


def test_hybrid_stem_computes_on_the_view(tiny_models, cat):
    loaded = tiny_loaded(tiny_models, "hybrid")
    photo = _wide_photo(cat)
    whole = hybrid_stem(loaded, image_view(photo, loaded.facts, "whole")).mean_map
    already_seen = Image.fromarray(image_view(photo, loaded.facts, "whole").pixels)
    np.testing.assert_allclose(
        hybrid_stem(loaded, image_view(already_seen, loaded.facts, "whole")).mean_map, whole, atol=1e-5
    )
    assert not np.allclose(
        hybrid_stem(loaded, image_view(photo, loaded.facts, "crop")).mean_map, whole, atol=1e-4
    )
