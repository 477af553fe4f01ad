"""Raw attention of MaxViT's windows and grids and MobileViT's unfolded patches, each put back where its tokens lie."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import timm
import torch
from timm.models import maxxvit

from tests.support.architectures import build_architecture, textured_input
from vitviz.capture import PartitionedAttention, partitioned_attention_layers
from vitviz.maths.partitions import (
    fold_dilated_grids,
    fold_unfolded_patches,
    fold_windows,
    received_attention,
)
from vitviz.methods import METHODS
from vitviz.methods.attention_methods import partitioned_attention_map
from vitviz.models import LoadedModel, model_facts


@functools.cache
def _loaded(key: str) -> LoadedModel:
    """The architecture suite's tiny random builds, and a MaxViT whose attention keeps NCHW tensors."""
    if key == "maxvit_nchw":  # timm ships no such config: PartitionAttention2d is only reached this way
        config = maxxvit.model_cfgs["maxvit_rmlp_pico_rw"]
        config = dataclasses.replace(
            config, transformer_cfg=dataclasses.replace(config.transformer_cfg, use_nchw_attn=True)
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = maxxvit.MaxxVit(config, img_size=64).eval().requires_grad_(False)
        return LoadedModel(model, model_facts("maxvit_nchw", model), "random", torch.device("cpu"), None)
    if key == "mobilevitv2":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = timm.create_model(
                "mobilevitv2_050", pretrained_cfg_overlay={"input_size": (3, 128, 128)}
            ).eval()
        model.requires_grad_(False)
        return LoadedModel(model, model_facts("mobilevitv2_050", model), "random", torch.device("cpu"), None)
    return build_architecture(key)


def _two_images(loaded: LoadedModel) -> torch.Tensor:
    """(2, 3, H, W): two different textured images, so that a fold mixing up images would show."""
    height, width = loaded.facts.input_size
    return torch.cat([textured_input(height, width, seed=1), textured_input(height, width, seed=2)])


def _feature_map_sizes(
    loaded: LoadedModel, layers: list[PartitionedAttention], pixels: torch.Tensor
) -> list[tuple[int, int]]:
    """The (H, W) of the map entering each layer's owner, read in one forward by hooks of the test's own."""
    sizes: dict[int, tuple[int, int]] = {}

    def keeper(index: int, layer: PartitionedAttention):
        def keep(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            shape = inputs[0].shape
            sizes[index] = tuple(shape[1:3] if layer.channels_last else shape[2:4])

        return keep

    handles = [layer.owner.register_forward_pre_hook(keeper(i, layer)) for i, layer in enumerate(layers)]
    try:
        with torch.inference_mode():
            loaded.model(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return [sizes[index] for index in range(len(layers))]


# --- The folds, on planted values, against positions worked out by hand ------------------------


def test_a_window_value_lands_at_its_window_and_its_place_inside_it():
    # An 8×12 map in 4×3 windows: 2 rows of 4 windows. Image 1, window (1, 3), token (2, 1) of it.
    received = torch.zeros(2 * 8, 12)
    received[8 + 1 * 4 + 3, 2 * 3 + 1] = 1.0
    folded = fold_windows(received, 2, (8, 12), (4, 3))
    assert folded.shape == (2, 8, 12)
    assert folded[1, 1 * 4 + 2, 3 * 3 + 1] == 1.0 and folded.sum() == 1.0


def test_a_padded_window_map_drops_the_padding():
    # A 5×5 map in 3×3 windows is padded to 6×6: the last row and column of windows hang over.
    received = torch.arange(4 * 9, dtype=torch.float32).reshape(4, 9)
    folded = fold_windows(received, 1, (5, 5), (3, 3))
    assert folded.shape == (1, 5, 5)
    assert folded[0, 4, 4] == received[3, 1 * 3 + 1]  # window (1, 1), its token (1, 1)


def test_a_dilated_grid_value_lands_at_its_offset_plus_its_grid_place_times_the_spacing():
    # An 8×12 map in 2×3 grids: tokens 4 rows and 4 columns apart, 4×4 offsets. Image 1,
    # offset (3, 1), the grid's token (1, 2): row 1·4 + 3, column 2·4 + 1.
    received = torch.zeros(2 * 16, 6)
    received[16 + 3 * 4 + 1, 1 * 3 + 2] = 1.0
    folded = fold_dilated_grids(received, 2, (8, 12), (2, 3))
    assert folded[1, 7, 9] == 1.0 and folded.sum() == 1.0
    with pytest.raises(ValueError, match="does not tile"):
        fold_dilated_grids(received, 2, (8, 13), (2, 3))


def test_an_unfolded_value_lands_at_its_patch_and_its_pixel_inside_the_patch():
    # 4×5 patches of 2×3 pixels. Image 1, pixel (1, 2) of a patch, patch (3, 1): row 3·2 + 1, column 1·3 + 2.
    received = torch.zeros(2, 6, 20)
    received[1, 1 * 3 + 2, 3 * 5 + 1] = 1.0
    folded = fold_unfolded_patches(received, (2, 3), (4, 5))
    assert folded.shape == (2, 8, 15)
    assert folded[1, 7, 5] == 1.0 and folded.sum() == 1.0


def test_the_window_and_grid_folds_undo_timms_own_partitions():
    generator = torch.Generator().manual_seed(0)
    feature = torch.rand(2, 8, 12, 1, generator=generator)  # (B, H, W, C=1), channels last
    windows = maxxvit.window_partition(feature, [4, 3])  # (B · windows, 4, 3, 1)
    torch.testing.assert_close(
        fold_windows(windows.reshape(len(windows), -1), 2, (8, 12), (4, 3)), feature[..., 0]
    )
    grids = maxxvit.grid_partition(feature, [2, 3])  # (B · offsets, 2, 3, 1)
    torch.testing.assert_close(
        fold_dilated_grids(grids.reshape(len(grids), -1), 2, (8, 12), (2, 3)), feature[..., 0]
    )


def test_received_attention_averages_heads_and_queries():
    attention = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]])  # (1, 2 heads, 2, 2)
    torch.testing.assert_close(received_attention(attention), torch.tensor([[0.75, 0.25]]))


# --- Through the models: every layer on its own map, and a planted attention where it belongs ---

PARTITIONED = ["maxvit", "maxvit_nchw", "mobilevit", "mobilevitv2"]


@pytest.mark.parametrize("key", PARTITIONED)
def test_every_attention_layer_maps_onto_its_own_feature_map_with_each_partition_summing_to_one(key):
    loaded = _loaded(key)
    layers = partitioned_attention_layers(loaded.model)
    assert len(layers) == loaded.facts.partitioned_layers > 0
    if key.startswith("maxvit"):
        assert [layer.kind for layer in layers[:2]] == ["window", "grid"]
    pixels = _two_images(loaded)
    sizes = _feature_map_sizes(loaded, layers, pixels)
    # One layer of each kind on each map size: later layers of a stage fold the same way.
    firsts = {
        (layer.kind, size): index
        for index, (layer, size) in reversed(list(enumerate(zip(layers, sizes, strict=True))))
    }
    assert len(firsts) >= 3
    for index in sorted(firsts.values()):
        layer, (height, width) = layers[index], sizes[index]
        maps, source = partitioned_attention_map(loaded, pixels, index)
        assert maps.shape == (2, height, width), (layer.name, source)
        assert f"its {height}×{width} grid" in source and layer.name in source
        values = maps.numpy()
        assert np.isfinite(values).all()
        assert np.ptp(values[0]) > 1e-3 * np.abs(values[0]).max(), f"{layer.name} is flat"
        assert not np.allclose(values[0], values[1]), "both images gave one map"
        # Each window, grid or pixel position's cells share out one unit of attention.
        rows, cols = layer.size
        partitions = rows * cols if layer.kind == "unfolded" else height * width // (rows * cols)
        np.testing.assert_allclose(values.sum(axis=(1, 2)), partitions, rtol=1e-4)


def _planted(layer: PartitionedAttention, group: int, key: int) -> torch.utils.hooks.RemovableHandle:
    """Makes the layer's attention all zero but for one group's every query (and head) on one key."""

    def plant(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        attention = torch.zeros_like(inputs[0])  # (groups, heads, queries, keys)
        attention[group, ..., key] = 1.0
        return (attention, *inputs[1:])

    return layer.attention.attn_drop.register_forward_pre_hook(plant)


def _dominant(loaded: LoadedModel, index: int, group: int, key: int) -> tuple[int, int, int]:
    """(image, row, column) of the one cell the planted attention lights up."""
    layer = partitioned_attention_layers(loaded.model)[index]
    handle = _planted(layer, group, key)
    try:
        maps, _ = partitioned_attention_map(loaded, _two_images(loaded), index)
    finally:
        handle.remove()
    values = maps.numpy()
    assert values.max() == pytest.approx(1.0) and values.sum() == pytest.approx(1.0)
    image, row, column = np.unravel_index(values.argmax(), values.shape)
    return int(image), int(row), int(column)


@pytest.mark.parametrize("key", ["maxvit", "maxvit_nchw"])
def test_a_planted_window_or_grid_attention_lands_where_its_token_lies_on_the_map(key):
    loaded = _loaded(key)
    pixels = _two_images(loaded)
    layers = partitioned_attention_layers(loaded.model)
    sizes = _feature_map_sizes(loaded, layers, pixels)
    for index in (0, 1):  # the first block's window attention, then its grid attention
        layer, (height, width) = layers[index], sizes[index]
        rows, cols = layer.size
        assert rows == cols >= 2 and height // rows >= 2  # so that a swapped order lands elsewhere
        if layer.kind == "window":  # image 1, window (1, 0) of the map, its token (rows - 1, 1)
            across = width // cols
            group = (height // rows) * across + 1 * across + 0
            expected = (1, 1 * rows + rows - 1, 0 * cols + 1)
        else:  # image 1, offset (1, 0), the grid's token (rows - 1, 1): spaced H / rows apart
            step_h, step_w = height // rows, width // cols
            group = step_h * step_w + 1 * step_w + 0
            expected = (1, (rows - 1) * step_h + 1, 1 * step_w + 0)
        assert _dominant(loaded, index, group, (rows - 1) * cols + 1) == expected, layer.kind


@pytest.mark.parametrize("key", ["mobilevit", "mobilevitv2"])
def test_a_planted_unfolded_attention_lands_at_its_patch_and_pixel_position(key):
    loaded = _loaded(key)
    pixels = _two_images(loaded)
    layers = partitioned_attention_layers(loaded.model)
    layer, (height, width) = layers[0], _feature_map_sizes(loaded, layers, pixels)[0]
    patch_h, patch_w = layer.size
    rows, cols = height // patch_h, width // patch_w
    assert rows >= 2 and cols >= 2 and patch_h * patch_w >= 2
    # Image 1, pixel position (1, 0) inside a patch, patch (rows - 1, 1): row (rows - 1)·p_h + 1, column p_w.
    position, patch = 1 * patch_w + 0, (rows - 1) * cols + 1
    if key == "mobilevit":  # softmax attention: one group per (image, position), (B · positions, heads, N, N)
        group = patch_h * patch_w + position
        found = _dominant(loaded, 0, group, patch)
    else:  # linear attention, (B, 1, positions, patches): plant image 1's row of that position
        handle = layer.attention.attn_drop.register_forward_pre_hook(
            lambda _module, inputs: (_one_hot_row(inputs[0], position, patch),)
        )
        try:
            maps, _ = partitioned_attention_map(loaded, pixels, 0)
        finally:
            handle.remove()
        values = maps.numpy()
        found = tuple(int(i) for i in np.unravel_index(values.argmax(), values.shape))
        assert values.sum() == pytest.approx(1.0)
    assert found == (1, (rows - 1) * patch_h + 1, 1 * patch_w + 0)


def _one_hot_row(attention: torch.Tensor, position: int, patch: int) -> torch.Tensor:
    planted = torch.zeros_like(attention)  # (B, 1, positions, patches)
    planted[1, 0, position, patch] = 1.0
    return planted


def test_raw_attention_is_offered_for_maxvit_and_mobilevit_and_reads_the_finest_layer_by_default():
    for key in ("maxvit", "mobilevit"):
        loaded = _loaded(key)
        assert METHODS["attention"].unavailable_reason(loaded.facts) is None
        result = METHODS["attention"](loaded).explain(textured_input(*loaded.facts.input_size))[0]
        assert result.grid_size == loaded.facts.stage_grids[1 if key == "maxvit" else 2]
        assert result.source.startswith("attention layer 0 (")
        last = METHODS["attention"](loaded, layer=-1).explain(textured_input(*loaded.facts.input_size))[0]
        assert last.grid_size == loaded.facts.stage_grids[-1]
        with pytest.raises(ValueError, match=rf"outside -{loaded.facts.partitioned_layers}\.\."):
            METHODS["attention"](loaded, layer=loaded.facts.partitioned_layers).explain(
                textured_input(*loaded.facts.input_size)
            )


def test_one_heads_map_is_its_share_of_the_mean_of_heads_and_a_head_beyond_them_is_refused():
    loaded = _loaded("maxvit")
    pixels = _two_images(loaded)
    heads = partitioned_attention_layers(loaded.model)[1].attention.num_heads
    mean, source = partitioned_attention_map(loaded, pixels, 1)
    per_head = [partitioned_attention_map(loaded, pixels, 1, head)[0] for head in range(heads)]
    torch.testing.assert_close(torch.stack(per_head).mean(dim=0), mean, atol=1e-6, rtol=1e-5)
    assert source.endswith("mean of queries and heads")
    assert partitioned_attention_map(loaded, pixels, 1, 0)[1].endswith("mean of queries, head 0")
    with pytest.raises(ValueError, match=f"head {heads} outside 0..{heads - 1}"):
        partitioned_attention_map(loaded, pixels, 1, heads)


def test_a_maxxvit_v2_without_window_attention_is_told_as_grid_attention_only():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("maxxvitv2_nano_rw_256", img_size=64).eval()
    facts = model_facts("maxxvitv2_nano_rw_256", model)
    assert facts.attention == "dilated-grid"
    assert "across a dilated grid, without local windows" in METHODS["rollout"].unavailable_reason(facts)
    assert {layer.kind for layer in partitioned_attention_layers(model)} == {"grid"}
    assert METHODS["attention"].unavailable_reason(facts) is None


def test_reading_a_layer_leaves_the_shared_model_as_it_was():
    loaded = _loaded("mobilevit")
    layer = partitioned_attention_layers(loaded.model)[0]
    fused = layer.attention.fused_attn
    pixels = textured_input(*loaded.facts.input_size)
    with torch.inference_mode():
        before = loaded.model(pixels)
    partitioned_attention_map(loaded, pixels, 0)
    assert layer.attention.fused_attn == fused
    assert not layer.attention.attn_drop._forward_hooks and not layer.owner._forward_hooks
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(pixels), before, atol=1e-5, rtol=1e-5)
