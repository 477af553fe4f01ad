"""Exact tests of attention rollout on synthetic attention."""

import pytest
import torch

from vitviz.maths.rollout import attention_rollout, discard_lowest, exclude_tokens, fuse_heads, rollout_map


def _random_attention(batch: int, heads: int, tokens: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, tokens, tokens, generator=generator, dtype=torch.float64).softmax(-1)


def test_identity_attention_gives_identity_rollout():
    identity = torch.eye(5, dtype=torch.float64).expand(2, 3, 5, 5)
    rollout = attention_rollout([identity] * 4)
    torch.testing.assert_close(rollout, torch.eye(5, dtype=torch.float64).expand(2, 5, 5))


def test_rollout_rows_sum_to_one_for_every_fusion_and_discard():
    layers = [_random_attention(2, 4, 10, seed) for seed in range(6)]
    for fusion in ("mean", "max", "min"):
        for ratio in (0.0, 0.5, 0.9):
            rollout = attention_rollout(layers, head_fusion=fusion, discard_ratio=ratio)
            torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 10, dtype=torch.float64))


def test_single_layer_rollout_is_half_identity_plus_half_attention():
    attention = _random_attention(1, 1, 4)
    rollout = attention_rollout([attention])
    expected = 0.5 * torch.eye(4, dtype=torch.float64) + 0.5 * attention[:, 0]
    torch.testing.assert_close(rollout, expected)


def test_two_layer_rollout_multiplies_later_layer_on_the_left():
    first, second = _random_attention(1, 1, 3, 1), _random_attention(1, 1, 3, 2)
    eye = torch.eye(3, dtype=torch.float64)
    mixed_first = 0.5 * eye + 0.5 * first[0, 0]
    mixed_second = 0.5 * eye + 0.5 * second[0, 0]
    rollout = attention_rollout([first, second])
    torch.testing.assert_close(rollout[0], mixed_second @ mixed_first)


def test_start_layer_skips_earlier_layers():
    layers = [_random_attention(1, 2, 5, seed) for seed in range(3)]
    torch.testing.assert_close(attention_rollout(layers, start_layer=2), attention_rollout(layers[2:]))


def test_head_fusion_mean_max_min():
    attention = torch.tensor([[[[0.2, 0.8], [0.6, 0.4]], [[0.4, 0.6], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    torch.testing.assert_close(fuse_heads(attention, "mean"), torch.tensor([[[0.3, 0.7], [0.3, 0.7]]]))
    torch.testing.assert_close(fuse_heads(attention, "max"), torch.tensor([[[0.4, 0.8], [0.6, 1.0]]]))
    torch.testing.assert_close(fuse_heads(attention, "min"), torch.tensor([[[0.2, 0.6], [0.0, 0.4]]]))
    with pytest.raises(ValueError, match="head fusion"):
        fuse_heads(attention, "median")


def test_discard_never_drops_prefix_tokens():
    # Prefix columns 0 and 1 hold the smallest weights of the row; only patch columns may go.
    row = torch.tensor([0.01, 0.02, 0.30, 0.10, 0.40, 0.17], dtype=torch.float64)
    attention = row.expand(1, 6, 6)
    kept = discard_lowest(attention, ratio=0.5, num_prefix_tokens=2)
    # Four patch columns, half discarded: 0.10 and 0.17 go; prefix weights stay.
    expected = torch.tensor([0.01, 0.02, 0.30, 0.0, 0.40, 0.0], dtype=torch.float64)
    torch.testing.assert_close(kept[0, 0], expected)
    torch.testing.assert_close(attention[0, 0], row, msg="input must not be modified")


def test_discard_ratio_out_of_range_is_refused():
    with pytest.raises(ValueError, match="discard ratio"):
        attention_rollout([_random_attention(1, 1, 3)], discard_ratio=1.0)


def test_rollout_is_computed_per_image_in_a_batch():
    batch = [_random_attention(3, 2, 6, seed) for seed in range(4)]
    together = attention_rollout(batch, discard_ratio=0.3)
    for index in range(3):
        alone = attention_rollout([layer[index : index + 1] for layer in batch], discard_ratio=0.3)
        torch.testing.assert_close(together[index : index + 1], alone)


def test_rollout_map_reads_class_row_after_prefix_tokens():
    tokens = 2 + 6  # two prefix tokens and a 2x3 grid
    rollout = torch.arange(tokens * tokens, dtype=torch.float64).reshape(1, tokens, tokens)
    token_map = rollout_map(rollout, num_prefix_tokens=2, grid_size=(2, 3), pooling="token")
    torch.testing.assert_close(token_map[0], torch.tensor([[2.0, 3, 4], [5, 6, 7]], dtype=torch.float64))


def test_rollout_map_averages_patch_rows_for_average_pooled_models():
    rollout = torch.arange(25, dtype=torch.float64).reshape(1, 5, 5)  # one prefix token, 2x2 grid
    avg_map = rollout_map(rollout, num_prefix_tokens=1, grid_size=(2, 2), pooling="avg")
    expected = rollout[0, 1:, 1:].mean(0).reshape(2, 2)
    torch.testing.assert_close(avg_map[0], expected)


def test_rollout_map_refuses_a_grid_that_does_not_fit():
    with pytest.raises(AssertionError, match="does not hold"):
        rollout_map(torch.eye(5).unsqueeze(0), num_prefix_tokens=1, grid_size=(3, 3))


def test_excluded_tokens_lose_their_column_and_rows_sum_to_one_again():
    attention = _random_attention(2, 1, 5)[:, 0]  # (2, 5, 5)
    kept = exclude_tokens(attention, [1, 3])
    assert torch.all(kept[:, :, [1, 3]] == 0)
    torch.testing.assert_close(kept.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    # What is left keeps its proportions.
    others = attention[:, :, [0, 2, 4]]
    torch.testing.assert_close(kept[:, :, [0, 2, 4]], others / others.sum(-1, keepdim=True))
    torch.testing.assert_close(exclude_tokens(attention, []), attention)


def test_a_row_that_attended_only_to_excluded_tokens_stays_empty_and_rollout_keeps_the_token():
    attention = torch.eye(3, dtype=torch.float64)[[1, 1, 2]].unsqueeze(0)  # rows 0 and 1 attend to token 1
    kept = exclude_tokens(attention, [1])
    torch.testing.assert_close(kept[0, 0], torch.zeros(3, dtype=torch.float64))
    assert not torch.isnan(kept).any()
    rollout = attention_rollout([attention.unsqueeze(1)], excluded_tokens={0: [1]})
    torch.testing.assert_close(rollout[0, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(rollout.sum(-1), torch.ones(1, 3, dtype=torch.float64))


def test_tokens_are_excluded_only_in_the_layers_named():
    layers = [_random_attention(1, 2, 6, seed) for seed in range(3)]
    rollout = attention_rollout(layers, excluded_tokens={1: [4]})
    eye = torch.eye(6, dtype=torch.float64)
    mixed = []
    for index, layer in enumerate(layers):
        fused = layer.mean(1)
        if index == 1:
            fused = exclude_tokens(fused, [4])
        mixed.append(0.5 * eye + 0.5 * fused[0])
    torch.testing.assert_close(rollout[0], mixed[2] @ mixed[1] @ mixed[0])
    # Naming a layer before the start changes nothing.
    torch.testing.assert_close(
        attention_rollout(layers, start_layer=2, excluded_tokens={0: [4], 1: [4]}),
        attention_rollout(layers, start_layer=2),
    )
