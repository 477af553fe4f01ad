"""Attention rollout (Abnar & Zuidema, 2020): how much each token draws on each input token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch

__all__ = [
    "HeadFusion",
    "attention_rollout",
    "discard_lowest",
    "embed_class_attention",
    "exclude_tokens",
    "fuse_heads",
    "rollout_map",
]

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(attention: torch.Tensor, fusion: HeadFusion) -> torch.Tensor:
    """Fuses the heads of one layer's attention.

    Args:
        attention: (B, heads, N, N) attention probabilities.
        fusion: how to combine the heads.

    Returns:
        (B, N, N) fused attention.
    """
    assert attention.ndim == 4, f"expected (B, heads, N, N), got {tuple(attention.shape)}"
    if fusion == "mean":
        return attention.mean(dim=1)
    if fusion == "max":
        return attention.amax(dim=1)
    if fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"unknown head fusion {fusion!r}: use mean, max or min")


def discard_lowest(attention: torch.Tensor, ratio: float, num_prefix_tokens: int) -> torch.Tensor:
    """Zeroes the lowest `ratio` of each row's weights, never a weight on a prefix token.

    Args:
        attention: (B, N, N) fused attention.
        ratio: fraction in [0, 1) of each row's patch-token weights to set to zero.
        num_prefix_tokens: leading tokens (class, distillation, registers) that are always kept.

    Returns:
        (B, N, N) attention with the discarded weights set to zero (not renormalised).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"discard ratio must lie in [0, 1), got {ratio}")
    if ratio == 0.0:
        return attention
    patch_weights = attention[:, :, num_prefix_tokens:]  # (B, N, N - prefix)
    num_discarded = int(patch_weights.shape[-1] * ratio)
    if num_discarded == 0:
        return attention
    lowest = patch_weights.topk(num_discarded, dim=-1, largest=False).indices
    kept = torch.ones_like(patch_weights).scatter_(-1, lowest, 0.0)
    result = attention.clone()
    result[:, :, num_prefix_tokens:] = patch_weights * kept
    return result


def exclude_tokens(attention: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """Leaves tokens out of one layer's attention: their columns become zero and each row is renormalised.

    Used for attention sinks: a token that draws most of a layer's attention carries little of the
    image, and multiplying its column through the layers would paint it as the most relevant patch.

    Args:
        attention: (B, N, N) fused attention, rows summing to 1.
        tokens: sequence indices whose columns are set to zero.

    Returns:
        (B, N, N) attention whose rows sum to 1 again; a row that attended only to the left-out tokens
        stays all zero (the residual identity then keeps that token as it was).
    """
    if not tokens:
        return attention
    kept = attention.clone()
    kept[:, :, list(tokens)] = 0.0
    row_sums = kept.sum(dim=-1, keepdim=True)
    return torch.where(row_sums > 0, kept / row_sums.clamp_min(torch.finfo(kept.dtype).tiny), kept)


def embed_class_attention(
    self_attentions: Sequence[torch.Tensor], class_attentions: Sequence[torch.Tensor], num_prefix_tokens: int
) -> list[torch.Tensor]:
    """CaiT's layers as (B, heads, N, N) over the output's tokens, so rollout and relevance run unchanged.

    CaiT's self-attention layers mix the patches alone, (B, heads, P, P); its class-attention layers
    then let the class token alone attend over [class, patches], (B, heads, 1, N), N = prefix + P.
    Each layer is placed in an N×N matrix whose other rows are zero: with the residual identity,
    a token that does not attend in a layer keeps what it had (the class token before it is added,
    the patches during class attention).

    Args:
        self_attentions: one (B, heads, P, P) tensor per self-attention layer, first first.
        class_attentions: one (B, heads, 1, N) tensor per class-attention layer, first first.
        num_prefix_tokens: class tokens before the patches in the class-attention layers.

    Returns:
        One (B, heads, N, N) tensor per layer, the self-attention layers first.
    """
    if not class_attentions:
        raise ValueError("class-attention rollout needs at least one class-attention layer")
    tokens = class_attentions[0].shape[-1]
    embedded = []
    for attention in self_attentions:
        full = attention.new_zeros(*attention.shape[:2], tokens, tokens)
        full[:, :, num_prefix_tokens:, num_prefix_tokens:] = attention
        embedded.append(full)
    for attention in class_attentions:
        full = attention.new_zeros(*attention.shape[:2], tokens, tokens)
        full[:, :, :1, :] = attention
        embedded.append(full)
    return embedded


def attention_rollout(
    attentions: Sequence[torch.Tensor],
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    num_prefix_tokens: int = 1,
    residual_weight: float = 0.5,
    excluded_tokens: Mapping[int, Sequence[int]] | None = None,
) -> torch.Tensor:
    """Multiplies residual-corrected attention from `start_layer` up to the last layer.

    Each layer's fused attention A becomes `residual_weight * I + (1 - residual_weight) * A`
    (the skip connection), its rows are renormalised to sum to 1, and the layers are
    multiplied in order so that the result maps output tokens to input tokens.

    Args:
        attentions: one (B, heads, N, N) tensor per layer, first layer first.
        head_fusion: how each layer's heads are combined.
        discard_ratio: fraction of the lowest patch weights per row dropped before the residual.
        start_layer: first layer (numbered from 0) that takes part.
        num_prefix_tokens: class / distillation / register tokens at the start of the sequence.
        residual_weight: weight of the identity; 0.5 is the original method.
        excluded_tokens: layer (numbered from 0) → sequence indices left out of that layer's fused
            attention (`exclude_tokens`) before the discard and the residual; layers not named keep
            every token.

    Returns:
        (B, N, N) rollout matrix; every row sums to 1.
    """
    if not attentions:
        raise ValueError("rollout needs at least one layer of attention")
    if not 0 <= start_layer < len(attentions):
        raise ValueError(f"start layer {start_layer} outside 0..{len(attentions) - 1}")
    first = attentions[start_layer]
    batch, _, tokens, _ = first.shape
    # float32 is exact enough for products of row-stochastic matrices; float64 input stays float64.
    dtype = torch.promote_types(first.dtype, torch.float32)
    identity = torch.eye(tokens, dtype=dtype, device=first.device)
    rollout = identity.expand(batch, tokens, tokens).clone()  # (B, N, N)
    excluded_tokens = excluded_tokens or {}
    for layer in range(start_layer, len(attentions)):
        fused = fuse_heads(attentions[layer].to(dtype), head_fusion)  # (B, N, N)
        fused = exclude_tokens(fused, excluded_tokens.get(layer, ()))
        fused = discard_lowest(fused, discard_ratio, num_prefix_tokens)
        mixed = residual_weight * identity + (1.0 - residual_weight) * fused
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout.to(first.dtype)


def rollout_map(
    rollout: torch.Tensor,
    num_prefix_tokens: int,
    grid_size: tuple[int, int],
    pooling: Literal["token", "avg"] = "token",
) -> torch.Tensor:
    """Reads the input-patch relevance out of a rollout matrix as a map over the token grid.

    Args:
        rollout: (B, N, N) rollout matrix.
        num_prefix_tokens: leading non-patch tokens.
        grid_size: (rows, cols) of the patch grid; rows * cols == N - num_prefix_tokens.
        pooling: "token" reads the first (class) token's row; "avg" averages the patch rows,
            for models whose head pools the patch tokens.

    Returns:
        (B, rows, cols) relevance of every input patch.
    """
    rows, cols = grid_size
    patch_count = rollout.shape[-1] - num_prefix_tokens
    assert rows * cols == patch_count, f"grid {rows}x{cols} does not hold {patch_count} patches"
    if pooling == "token":
        assert num_prefix_tokens > 0, "token pooling needs a prefix token"
        relevance = rollout[:, 0, num_prefix_tokens:]  # (B, patches)
    elif pooling == "avg":
        relevance = rollout[:, num_prefix_tokens:, num_prefix_tokens:].mean(dim=1)
    else:
        raise ValueError(f"unknown pooling {pooling!r}: use token or avg")
    return relevance.reshape(-1, rows, cols)
