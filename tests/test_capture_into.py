"""Attention copied into one preallocated array as it is made: the same numbers as kept and stacked."""

import numpy as np
import pytest
import torch

from tests.support.tiny_models import TRANSFORMER_KEYS, tiny_loaded
from vitviz.capture import AttentionCapture, capture_attention
from vitviz.maths.attention import record_attention
from vitviz.preprocess import image_view, view_tensor


def _buffer(attentions: list[torch.Tensor]) -> torch.Tensor:
    return torch.full((len(attentions), *attentions[0].shape), float("nan"))


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_attention_copied_as_made_equals_attention_kept(tiny_models, key):
    model = tiny_models[key]
    height, width = model.patch_embed.img_size
    pixels = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    output, kept = capture_attention(model, pixels)
    into = _buffer(kept)
    copied_output, copied = capture_attention(model, pixels, into=into)
    assert torch.equal(copied_output, output)
    assert len(copied) == len(kept)
    for layer, (mine, theirs) in enumerate(zip(copied, kept, strict=True)):
        assert torch.equal(mine, theirs)
        assert mine.data_ptr() == into[layer].data_ptr()  # a slice of the buffer, not a copy of it
    assert not torch.isnan(into).any()


@pytest.mark.parametrize("key", ["registers", "vit_rectangular"])
def test_record_holds_every_layer_of_the_forward_on_its_view(tiny_models, cat, key):
    loaded = tiny_loaded(tiny_models, key)
    record = record_attention(loaded, cat)
    _, kept = capture_attention(
        loaded.model, view_tensor(image_view(cat, loaded.facts, "crop"), loaded.facts)
    )
    expected = torch.stack([attention[0] for attention in kept]).numpy()
    np.testing.assert_array_equal(record.attentions, expected)
    assert not record.attentions.flags.writeable


def test_copying_needs_one_slice_per_layer_and_detached_attention(tiny_models):
    model = tiny_models["vit"]
    layers = len(model.blocks)
    with pytest.raises(ValueError, match="one slice per layer"):
        AttentionCapture(model, into=torch.empty(layers + 1, 1, 3, 5, 5))
    with pytest.raises(ValueError, match="detach=True"):
        AttentionCapture(model, detach=False, into=torch.empty(layers, 1, 3, 5, 5))
