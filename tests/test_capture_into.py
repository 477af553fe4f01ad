"""Attention written into one preallocated record as it is made: the same numbers as kept and stacked.

Writing into the record runs its own matmuls (`baddbmm` per image into a scratch) where keeping runs
timm's batched ones, and the two round differently on some CPUs: they are compared within float32
rounding. What must hold exactly is that each layer's attention *is* its slice of the record
(the same memory, checked by `data_ptr`), which no CPU changes.
"""

import pytest
import timm
import torch

from tests.support.floats import assert_same_up_to_float32_rounding
from tests.support.tiny_models import TRANSFORMER_KEYS, tiny_loaded
from vitviz.capture import AttentionCapture, attention_modules, capture_attention
from vitviz.forward.attention import record_attention
from vitviz.preprocess import image_view


def _buffer(attentions: list[torch.Tensor]) -> torch.Tensor:
    return torch.full((len(attentions), *attentions[0].shape), float("nan"))


def _input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    height, width = model.patch_embed.img_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def _assert_slices_equal_kept(
    into: torch.Tensor, written: list[torch.Tensor], kept: list[torch.Tensor]
) -> None:
    assert len(written) == len(kept)
    for layer, (mine, theirs) in enumerate(zip(written, kept, strict=True)):
        assert_same_up_to_float32_rounding(mine, theirs)
        assert mine.data_ptr() == into[layer].data_ptr()  # a slice of the buffer, not a copy of it
    assert not torch.isnan(into).any()


def _assert_written_equals_kept(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Captures kept and written into a NaN-filled record: the same numbers; returns the output."""
    output, kept = capture_attention(model, pixels)
    into = _buffer(kept)
    written_output, written = capture_attention(model, pixels, into=into)
    assert_same_up_to_float32_rounding(written_output, output)
    _assert_slices_equal_kept(into, written, kept)
    return written_output


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_attention_written_into_the_record_equals_attention_kept(tiny_models, key):
    model = tiny_models[key]
    pixels = _input(model)
    written_output = _assert_written_equals_kept(model, pixels)
    with torch.inference_mode():
        fused_output = model(pixels)
    torch.testing.assert_close(written_output, fused_output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", TRANSFORMER_KEYS)
def test_attention_copied_into_the_record_when_autograd_records_equals_attention_kept(tiny_models, key):
    """With autograd on, timm's own forward runs and each layer is copied into its slice instead."""
    model = tiny_models[key]
    pixels = _input(model)
    output, kept = capture_attention(model, pixels)
    into = _buffer(kept)
    with AttentionCapture(model, into=into) as capture:
        copied_output = model(pixels)
    assert_same_up_to_float32_rounding(copied_output, output)
    _assert_slices_equal_kept(into, capture.attentions, kept)


def test_a_record_laid_out_otherwise_is_copied_into_with_the_same_numbers(tiny_models):
    model = tiny_models["hybrid"]
    pixels = _input(model)
    output, kept = capture_attention(model, pixels)
    into = _buffer(kept).transpose(-1, -2)  # each slice a transposed view: not written in place
    copied_output, copied = capture_attention(model, pixels, into=into)
    assert_same_up_to_float32_rounding(copied_output, output)
    _assert_slices_equal_kept(into, copied, kept)


def test_attention_with_a_scale_that_is_not_a_power_of_two_is_written_as_timm_makes_it():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, embed_dim=96, num_heads=2).eval()
    assert attention_modules(model)[0].scale == 48**-0.5
    _assert_written_equals_kept(model, _input(model, batch=3))


@pytest.mark.parametrize("fits", [True, False])
def test_writing_into_the_record_puts_timm_forward_back(tiny_models, fits):
    """Also when the record does not fit the forward: timm's forward runs and the copy into it raises."""
    model = tiny_models["registers"]
    modules = attention_modules(model)
    _, kept = capture_attention(model, _input(model))
    pixels = _input(model) if fits else torch.zeros(2, 3, 42, 42)  # 3×3 patches instead of 4×4
    if fits:
        capture_attention(model, pixels, into=_buffer(kept))
    else:
        with pytest.raises(RuntimeError):
            capture_attention(model, pixels, into=_buffer(kept))
    assert all("forward" not in vars(module) for module in modules)
    assert all(module.forward.__func__ is type(module).forward for module in modules)


@pytest.mark.parametrize("key", ["registers", "vit_rectangular"])
def test_record_holds_every_layer_of_the_forward_on_its_view(tiny_models, cat, key):
    loaded = tiny_loaded(tiny_models, key)
    record = record_attention(loaded, image_view(cat, loaded.facts))
    _, kept = capture_attention(loaded.model, image_view(cat, loaded.facts, "crop").tensor)
    expected = torch.stack([attention[0] for attention in kept]).numpy()
    assert_same_up_to_float32_rounding(record.attentions, expected)
    assert not record.attentions.flags.writeable


def test_copying_needs_one_slice_per_layer_and_detached_attention(tiny_models):
    model = tiny_models["vit"]
    layers = len(model.blocks)
    with pytest.raises(ValueError, match="one slice per layer"):
        AttentionCapture(model, into=torch.empty(layers + 1, 1, 3, 5, 5))
    with pytest.raises(ValueError, match="detach=True"):
        AttentionCapture(model, detach=False, into=torch.empty(layers, 1, 3, 5, 5))


def test_bundled_dinov2_record_written_in_place_equals_attention_kept(dinov2, cat):
    pixels = image_view(cat, dinov2.facts, "crop").tensor
    written_output = _assert_written_equals_kept(dinov2.model, pixels)
    with torch.inference_mode():
        fused_output = dinov2.model(pixels)
    torch.testing.assert_close(written_output, fused_output, atol=1e-5, rtol=1e-5)
