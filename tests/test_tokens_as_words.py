"""Patches as words (vitviz.maths.tokens_as_words, vitviz.forward.tokens_as_words): every step from pixels to the encoder's input."""

import numpy as np
import pytest
import torch

from tests.support.tiny_models import tiny_loaded
from vitviz.forward.tokens_as_words import linear_patch_embedding, trace_tokens
from vitviz.maths.tokens_as_words import cut_into_patches
from vitviz.models import ModelError
from vitviz.preprocess import image_view


@pytest.mark.parametrize("family", ["vit", "registers", "vit_rectangular"])
def test_flattened_patches_times_one_matrix_are_the_patch_tokens(tiny_models, photos, family):
    loaded = tiny_loaded(tiny_models, family)
    pixels = image_view(photos[0], loaded.facts).tensor
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
    loaded = tiny_loaded(tiny_models, family)
    trace = trace_tokens(loaded, image_view(photos[1], loaded.facts))
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
    trace = trace_tokens(dinov2, image_view(photos[0], dinov2.facts))
    shapes = {step.name: step.shape for step in trace.steps}
    assert shapes["patches"] == (256, 588) and shapes["patch tokens"] == (256, 384)
    assert shapes["+ prefix tokens"] == (257, 384)
    assert "16×16 = 256 patches of 14×14 px" in trace.steps[1].explanation
    # The class token's row of the encoder input is the class token plus its position embedding.
    expected = (dinov2.model.cls_token + dinov2.model.pos_embed[:, 0]).reshape(-1).numpy()
    np.testing.assert_allclose(trace.encoder_input[0], expected, rtol=1e-5, atol=1e-6)


def test_a_cnn_has_no_tokens(tiny_models, photos):
    with pytest.raises(ModelError, match="CNN"):
        cnn = tiny_loaded(tiny_models, "cnn")
        trace_tokens(cnn, image_view(photos[0], cnn.facts))


def test_a_vit_built_with_dynamic_image_size_is_traced_to_the_same_encoder_input(photos):
    """timm's `dynamic_img_size` ViTs (as test_vit runs are built) take their patches as a grid."""
    import timm

    from tests.support.methods_helpers import frozen_loaded

    torch.manual_seed(0)
    fixed = timm.create_model("test_vit", num_classes=2, img_size=32)
    dynamic = timm.create_model("test_vit", num_classes=2, img_size=32, dynamic_img_size=True)
    dynamic.load_state_dict(fixed.state_dict())
    traces = [
        trace_tokens(loaded, image_view(photos[1], loaded.facts))
        for loaded in (frozen_loaded(fixed, "test_vit"), frozen_loaded(dynamic, "test_vit"))
    ]
    assert [step.shape for step in traces[0].steps] == [step.shape for step in traces[1].steps]
    # One model's weights on one input through two layouts of the same sum: float32 rounding apart.
    torch.testing.assert_close(traces[1].encoder_input, traces[0].encoder_input, rtol=1e-5, atol=1e-6)
